// Anchored sequential evidence for one scalar per step (a contrast such as log q99_post − log q99_pre).
// Reference: mean and noise of the first `anchor_steps` readings (the run's own early, healthy
// steps), then adapting only while the evidence is quiet and far slower (`adapt_rate` per step) than
// any growth we must catch, so a slow climb cannot drag the reference along with it.
// Evidence: a one-sided CUSUM S = max(0, S + min(z, z_cap) − k) of the standardised reading
// z = (x − m) / (sd·√v), where v is the reading's relative variance (1/n terms), so a slice whose
// token count moves (α ramps, sequence-length changes) keeps its false-alarm rate. A growth keeps S
// rising, so a finding built on S never clears while its evidence still grows.
import { median } from './series.ts';

export interface CusumOptions {
  /** Readings that fix the reference (mean and noise). */
  anchor_steps: number;
  /** CUSUM allowance k, in noise sd: drifts below it are absorbed. */
  k: number;
  /** One step adds at most this (in sd): a single wild step cannot fire on its own. */
  z_cap: number;
  /** The anchored noise sd is multiplied by this (a 12-step estimate is itself uncertain). */
  sd_inflate: number;
  /** Noise sd floor in the reading's units (quantiles tied at 0 would give sd 0). */
  sd_floor: number;
  /** Per-step weight of a new reading in the reference while S < k·2 (0 = never adapt). */
  adapt_rate: number;
}

export interface CusumState {
  anchor: number[];
  anchorV: number[];
  mean: number | null;
  /** Noise sd for v = 1 (per unit of relative variance). */
  sdUnit: number | null;
  s: number;
  /** Largest S since the last time it was 0 (for the report). */
  peak: number;
  z: number;
  lastStep: number | null;
}

export function newCusum(): CusumState {
  return { anchor: [], anchorV: [], mean: null, sdUnit: null, s: 0, peak: 0, z: 0, lastStep: null };
}

export interface CusumReading {
  ready: boolean;
  s: number;
  z: number;
  mean: number;
  sd: number;
  x: number;
}

/** Feed one reading `x` with relative variance `v` (> 0). Mutates `st`. */
export function updateCusum(st: CusumState, step: number, x: number, v: number, o: CusumOptions): CusumReading {
  if (!Number.isFinite(x) || !(v > 0) || (st.lastStep !== null && step <= st.lastStep)) {
    return { ready: st.mean !== null, s: st.s, z: st.z, mean: st.mean ?? NaN, sd: NaN, x };
  }
  st.lastStep = step;
  if (st.mean === null) {
    st.anchor.push(x);
    st.anchorV.push(v);
    if (st.anchor.length < o.anchor_steps) return { ready: false, s: 0, z: 0, mean: NaN, sd: NaN, x };
    // Median for the centre (robust to one odd early step); RMS residual per unit variance for the noise.
    const m = median(st.anchor);
    let ss = 0;
    for (let i = 0; i < st.anchor.length; i++) ss += (st.anchor[i] - m) ** 2 / st.anchorV[i];
    st.mean = m;
    st.sdUnit = Math.sqrt(ss / Math.max(1, st.anchor.length - 1));
    return { ready: false, s: 0, z: 0, mean: m, sd: st.sdUnit * Math.sqrt(v), x };
  }
  const sd = Math.max(st.sdUnit! * Math.sqrt(v) * o.sd_inflate, o.sd_floor);
  const z = (x - st.mean) / sd;
  st.z = z;
  st.s = Math.max(0, st.s + Math.min(z, o.z_cap) - o.k);
  st.peak = st.s === 0 ? 0 : Math.max(st.peak, st.s);
  if (o.adapt_rate > 0 && st.s < 2 * o.k) {
    // Clipped to ±2 sd, so the reference follows a slow wander but not a jump.
    st.mean += o.adapt_rate * Math.max(-2 * sd, Math.min(2 * sd, x - st.mean));
  }
  return { ready: true, s: st.s, z, mean: st.mean, sd, x };
}

/** After a rollback: the evidence described a trajectory that is gone; the reference stays. */
export function resetEvidence(st: CusumState): void {
  st.s = 0;
  st.peak = 0;
  st.z = 0;
  st.lastStep = null;
}
