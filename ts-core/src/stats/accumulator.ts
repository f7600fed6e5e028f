// SliceAccumulator: the mergeable summary of one pair × slice — bit-histogram of |ℓ| plus the exact
// sums of docs/sketch.md (same field order). Raw mode fills it from values; sketch mode builds it
// from a payload; both merge with the same rules, so the metrics agree.
import { HIST_BINS, HIST_LAYOUT, histAdd, histQuantiles } from './hist.ts';
import { addSeqParts, foldHist, kernelRuns } from './kernel.ts';
import { StatsError } from './errors.ts';
import { N_SUMS, SUMS_FIELDS, S_N, type SumMetrics, clipBand, emptySums, mergeSums, metricsFromSums } from './sums.ts';

export class SliceAccumulator {
  /** Counts of finite |ℓ| per bin (float64: exact to 2^53). */
  readonly hist = new Float64Array(HIST_BINS);
  /** SUMS_FIELDS in order. */
  readonly sums = emptySums();

  /**
   * Add values (NaN/±Inf counted in `nonfinite` and excluded). `seqOffsets` (optional) splits the
   * values into sequences for ess_seq / ess_seq_norm. Clip band from `knobs` (ε defaults 0.2).
   */
  add(values: Float32Array, knobs?: Record<string, unknown>, seqOffsets?: ArrayLike<number>): this {
    const offs = seqOffsets ?? [0, values.length];
    const nSeq = offs.length - 1;
    const runs = new Int32Array(4 * nSeq);
    for (let s = 0; s < nSeq; s++) runs.set([offs[s], offs[s + 1], 0, s], 4 * s);
    const L = new Float64Array(nSeq), C = new Float64Array(nSeq);
    const sh = new Uint32Array(HIST_BINS);
    const { lo, hi } = clipBand(knobs);
    const bits = new Int32Array(values.buffer, values.byteOffset, values.length);
    kernelRuns(values, bits, { runs, n: nSeq }, 0, sh, this.sums, lo, hi, L, C, 0);
    foldHist(sh, this.hist, this.sums, hi);
    addSeqParts(this.sums, L, C, 0, nSeq);
    return this;
  }

  /** this ← this ⊕ other (exact for counts and sums; LSE parts rescaled to the larger max). */
  merge(other: SliceAccumulator): this {
    histAdd(this.hist, other.hist);
    mergeSums(this.sums, other.sums, true);
    return this;
  }

  get n(): number {
    return this.sums[S_N];
  }

  metrics(): SumMetrics & { abs_q50: number; abs_q90: number; abs_q95: number; abs_q99: number; abs_q999: number } {
    const m = metricsFromSums(this.sums);
    const q = histQuantiles(this.hist, [0.5, 0.9, 0.95, 0.99, 0.999], m.abs_max, new Float64Array(5));
    return { ...m, abs_q50: q[0], abs_q90: q[1], abs_q95: q[2], abs_q99: q[3], abs_q999: q[4] };
  }

  /**
   * Build from a sketch payload (`sketch/<pair>/<slice>/hist` f64[HIST_BINS] and `.../sums` f64[21]).
   * `layout` and `fields` are checked against the engine's; a mismatch is E_SKETCH_LAYOUT.
   */
  static fromSketch(
    hist: ArrayLike<number>, sums: ArrayLike<number>,
    layout: { exp_min: number; exp_max: number; mant_bits: number } = HIST_LAYOUT,
    fields: readonly string[] = SUMS_FIELDS,
  ): SliceAccumulator {
    if (layout.exp_min !== HIST_LAYOUT.exp_min || layout.exp_max !== HIST_LAYOUT.exp_max || layout.mant_bits !== HIST_LAYOUT.mant_bits) {
      throw new StatsError('E_SKETCH_LAYOUT', `histogram layout ${JSON.stringify(layout)} != ${JSON.stringify(HIST_LAYOUT)}`);
    }
    if (fields.length !== N_SUMS || fields.some((f, i) => f !== SUMS_FIELDS[i])) {
      throw new StatsError('E_SKETCH_LAYOUT', `sums_fields must be ${SUMS_FIELDS.join(',')}`);
    }
    if (hist.length !== HIST_BINS || sums.length !== N_SUMS) {
      throw new StatsError('E_SKETCH_LAYOUT', `hist length ${hist.length} (want ${HIST_BINS}), sums length ${sums.length} (want ${N_SUMS})`);
    }
    const a = new SliceAccumulator();
    a.hist.set(hist);
    a.sums.set(sums);
    return a;
  }
}
