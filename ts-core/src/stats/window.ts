// Rolling window per pair × slice: a ring of W per-step histograms plus their sum over the window
// (`winHist`, `winN`, `winSumAbs`: added on push, subtracted on eviction), the fixed baseline (the first K tumbling windows, i.e. the first K·W steps), the
// drift-aware baseline (EWMA of window CDFs, updated at each tumbling-window boundary).
import { HIST_BINS, histAdd, histAddSub, histFromSparse, histQuantiles, histToSparse } from './hist.ts';
import { CDF_GRID } from './shape.ts';

export interface WindowOpts { window: number; fixedBaselineWindows: number; ewmaAlpha: number }

export class WindowState {
  readonly ring: Float64Array;
  /** Sum of the ring's W histograms: the current window's histogram. */
  readonly winHist = new Float64Array(HIST_BINS);
  readonly ringN: Float64Array;
  readonly ringSumAbs: Float64Array;
  readonly ringMax: Float64Array;
  readonly ringStep: Float64Array;
  head = 0; // next slot
  filled = 0;
  steps = 0; // steps pushed since the start
  winN = 0;
  winSumAbs = 0;
  // fixed baseline
  fixedHist: Float64Array | null = new Float64Array(HIST_BINS);
  fixedN = 0;
  fixedSumAbs = 0;
  fixedMax = 0;
  fixedQ: Float64Array | null = null;
  // drift-aware baseline
  ewmaQ: Float64Array | null = null;
  /** JSON text of each ring slot's sparse histogram, kept until the slot is overwritten: a slot is
   *  immutable between pushes, so a state.json save re-serialises only the slots pushed since the last one. */
  private readonly slotText: (string | null)[];

  constructor(readonly opts: WindowOpts) {
    const W = opts.window;
    this.ring = new Float64Array(W * HIST_BINS);
    this.ringN = new Float64Array(W);
    this.ringSumAbs = new Float64Array(W);
    this.ringMax = new Float64Array(W);
    this.ringStep = new Float64Array(W);
    this.slotText = new Array<string | null>(W).fill(null);
  }

  get fixedReady(): boolean {
    return this.fixedQ !== null;
  }

  /** Push one finalised step (hist may be all zero when the slice was empty that step). */
  push(step: number, hist: Float64Array, n: number, sumAbs: number, maxAbs: number): void {
    const W = this.opts.window;
    const slot = this.head;
    const o = slot * HIST_BINS;
    const ring = this.ring, winHist = this.winHist;
    if (this.filled === W) {
      histAddSub(winHist, hist, ring, o);
      this.winN -= this.ringN[slot];
      this.winSumAbs -= this.ringSumAbs[slot];
    } else {
      histAdd(winHist, hist);
      this.filled++;
    }
    ring.set(hist, o);
    this.slotText[slot] = null;
    this.ringN[slot] = n;
    this.ringSumAbs[slot] = sumAbs;
    this.ringMax[slot] = maxAbs;
    this.ringStep[slot] = step;
    this.winN += n;
    this.winSumAbs += sumAbs;
    this.head = (slot + 1) % W;
    this.steps++;
    if (this.fixedHist) {
      histAdd(this.fixedHist, hist);
      this.fixedN += n;
      this.fixedSumAbs += sumAbs;
      this.fixedMax = Math.max(this.fixedMax, maxAbs);
      if (this.steps >= W * this.opts.fixedBaselineWindows) {
        this.fixedQ = histQuantiles(this.fixedHist, CDF_GRID, this.fixedMax, new Float64Array(CDF_GRID.length));
        this.fixedHist = null;
      }
    }
  }

  get maxAbs(): number {
    let m = 0;
    for (let i = 0; i < this.filled; i++) m = Math.max(m, this.ringMax[i]);
    return m;
  }

  get firstStep(): number {
    return this.filled < this.opts.window ? this.ringStep[0] : this.ringStep[this.head];
  }

  /** Quantiles of the current window on CDF_GRID. */
  cdf(): Float64Array {
    return histQuantiles(this.winHist, CDF_GRID, this.maxAbs, new Float64Array(CDF_GRID.length));
  }

  /** At a tumbling boundary (every W steps): EWMA update. Call after push. */
  atBoundary(cur: Float64Array): boolean {
    if (this.steps % this.opts.window !== 0) return false;
    if (this.winN > 0) {
      const a = this.opts.ewmaAlpha;
      if (!this.ewmaQ) this.ewmaQ = Float64Array.from(cur);
      else for (let i = 0; i < cur.length; i++) this.ewmaQ[i] = (1 - a) * this.ewmaQ[i] + a * cur[i];
    }
    return true;
  }

  toJSON(): unknown {
    const W = this.opts.window;
    const ring: [number[], number[]][] = [];
    for (let s = 0; s < W; s++) ring.push(histToSparse(this.ring.subarray(s * HIST_BINS, (s + 1) * HIST_BINS)));
    return { ring, ...this.rest() };
  }

  /** JSON.stringify(this.toJSON()), with the ring slots' text cached between saves (the bulk of state.json). */
  toJSONText(): string {
    const W = this.opts.window, parts: string[] = [];
    for (let s = 0; s < W; s++) parts.push((this.slotText[s] ??= JSON.stringify(histToSparse(this.ring.subarray(s * HIST_BINS, (s + 1) * HIST_BINS)))));
    return `{"ring":[${parts.join(',')}],${JSON.stringify(this.rest()).slice(1)}`;
  }

  /** Everything of the snapshot but the ring, in toJSON's key order. */
  private rest(): Record<string, unknown> {
    return {
      head: this.head, filled: this.filled, steps: this.steps, winN: this.winN, winSumAbs: this.winSumAbs,
      ringN: [...this.ringN], ringSumAbs: [...this.ringSumAbs], ringMax: [...this.ringMax], ringStep: [...this.ringStep],
      fixedHist: this.fixedHist ? histToSparse(this.fixedHist) : null,
      fixedN: this.fixedN, fixedSumAbs: this.fixedSumAbs, fixedMax: this.fixedMax,
      fixedQ: this.fixedQ ? [...this.fixedQ] : null, ewmaQ: this.ewmaQ ? [...this.ewmaQ] : null,
    };
  }

  static fromJSON(j: any, opts: WindowOpts): WindowState {
    const w = new WindowState(opts); // a `digest` in snapshots written before 0.2 is ignored
    if (j.ring.length !== opts.window) throw new Error(`snapshot window ${j.ring.length} != ${opts.window}`);
    j.ring.forEach((sp: [number[], number[]], s: number) => histFromSparse(sp, w.ring.subarray(s * HIST_BINS, (s + 1) * HIST_BINS)));
    for (let s = 0; s < opts.window; s++) histAdd(w.winHist, w.ring, s * HIST_BINS);
    Object.assign(w, { head: j.head, filled: j.filled, steps: j.steps, fixedN: j.fixedN, fixedSumAbs: j.fixedSumAbs, fixedMax: j.fixedMax });
    w.ringN.set(j.ringN); w.ringSumAbs.set(j.ringSumAbs); w.ringMax.set(j.ringMax); w.ringStep.set(j.ringStep);
    // window sums as they were (float adds/subtracts), so a restored run continues bit-identically;
    // runN/runSumAbs: their names in snapshots written before the rename
    w.winN = j.winN ?? j.runN;
    w.winSumAbs = j.winSumAbs ?? j.runSumAbs;
    w.fixedHist = j.fixedHist ? histFromSparse(j.fixedHist) : null;
    w.fixedQ = j.fixedQ ? Float64Array.from(j.fixedQ) : null;
    w.ewmaQ = j.ewmaQ ? Float64Array.from(j.ewmaQ) : null;
    return w;
  }
}
