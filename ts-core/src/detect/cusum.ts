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
  /** Readings before the first judgement (the reference's first estimate). */
  anchor_steps: number;
  /** The reference keeps learning from readings up to this many (robustly: median/MAD, clipped at
   *  ±3 sd; once judging, only readings that follow quiet evidence), then is frozen but for `adapt_rate`. */
  anchor_max: number;
  /** CUSUM allowance k, in noise sd: drifts below it are absorbed. The reference's own uncertainty
   *  (its sd relative to the reading's) is added to it. */
  k: number;
  /** One step adds at most this (in sd): a single wild step cannot fire on its own. */
  z_cap: number;
  /** The estimated noise sd is multiplied by this (an estimate from tens of steps is itself uncertain). */
  sd_inflate: number;
  /** Noise sd floor in the reading's units (quantiles tied at 0 would give sd 0). */
  sd_floor: number;
  /** Per-step weight of a new reading in the frozen reference while S < 2k (0 = never adapt). */
  adapt_rate: number;
}

export interface CusumState {
  anchor: number[];
  anchorV: number[];
  mean: number | null;
  /** Noise sd for v = 1 (per unit of relative variance). */
  sdUnit: number | null;
  s: number;
  z: number;
  lastStep: number | null;
}

export function newCusum(): CusumState {
  return { anchor: [], anchorV: [], mean: null, sdUnit: null, s: 0, z: 0, lastStep: null };
}

export interface CusumReading {
  ready: boolean;
  s: number;
  z: number;
  mean: number;
  sd: number;
  x: number;
}

/** Robust reference of the anchor readings: centre and noise per unit variance. */
function reference(xs: number[], vs: number[]): { mean: number; sdUnit: number } {
  const u = xs.map((x, i) => x / Math.sqrt(vs[i]));
  const m = median(xs);
  const mad = median(xs.map((x, i) => Math.abs(x - m) / Math.sqrt(vs[i])));
  const s0 = 1.4826 * mad || Math.sqrt(u.reduce((a, b) => a + b * b, 0) / u.length) || 0;
  let sum = 0;
  let ss = 0;
  const clip = (x: number, i: number) => {
    const lim = 3 * s0 * Math.sqrt(vs[i]);
    return Math.max(m - lim, Math.min(m + lim, x));
  };
  for (let i = 0; i < xs.length; i++) sum += clip(xs[i], i);
  const mean = sum / xs.length;
  for (let i = 0; i < xs.length; i++) ss += (clip(xs[i], i) - mean) ** 2 / vs[i];
  return { mean, sdUnit: Math.sqrt(ss / Math.max(1, xs.length - 1)) };
}

/** Feed one reading `x` with relative variance `v` (> 0). Mutates `st`. */
export function updateCusum(st: CusumState, step: number, x: number, v: number, o: CusumOptions): CusumReading {
  if (!Number.isFinite(x) || !(v > 0) || (st.lastStep !== null && step <= st.lastStep)) {
    return { ready: st.anchor.length >= o.anchor_steps, s: st.s, z: st.z, mean: st.mean ?? NaN, sd: NaN, x };
  }
  st.lastStep = step;
  const n = st.anchor.length;
  const quiet = st.s < 2 * o.k; // judged on the evidence before this reading, so the choice is unbiased
  let out: CusumReading = { ready: false, s: 0, z: 0, mean: st.mean ?? NaN, sd: NaN, x };
  if (n >= o.anchor_steps && st.mean !== null && st.sdUnit !== null) {
    // Judge against the reference as it stood before this reading.
    // The reference's own error (variance v̄/N per unit) does not shrink when this slice's n grows
    // (α ramp): it widens the noise and, as one sd of it, the allowance k.
    const refVar = st.anchorV.reduce((a, b) => a + b, 0) / (n * n);
    const sd = Math.max(st.sdUnit * Math.sqrt(v + refVar) * o.sd_inflate, o.sd_floor);
    const z = (x - st.mean) / sd;
    st.z = z;
    st.s = Math.max(0, st.s + Math.min(z, o.z_cap) - (o.k + Math.sqrt(refVar / (v + refVar))));
    out = { ready: true, s: st.s, z, mean: st.mean, sd, x };
    if (n >= o.anchor_max) {
      // Frozen: follow a slow wander (clipped to ±2 sd) only while quiet, never a climb.
      if (o.adapt_rate > 0 && quiet) st.mean += o.adapt_rate * Math.max(-2 * sd, Math.min(2 * sd, x - st.mean));
      return out;
    }
    if (!quiet) return out; // evidence accumulating: do not learn the change into the reference
  }
  st.anchor.push(x);
  st.anchorV.push(v);
  if (st.anchor.length >= Math.min(o.anchor_steps, o.anchor_max)) Object.assign(st, reference(st.anchor, st.anchorV));
  return out;
}

/** After a rollback: the evidence described a trajectory that is gone; the reference stays. */
export function resetEvidence(st: CusumState): void {
  st.s = 0;
  st.z = 0;
  st.lastStep = null;
}
