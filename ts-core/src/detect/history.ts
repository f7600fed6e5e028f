// Per-step series the detectors read (trends need the recent past), plus the latest window
// shape per pair×slice. Bounded, JSON-serialisable, and reset when steps go back (rollback).
import type { MetricRecord, StepResult, WindowRecord } from '../types.ts';
import type { Point } from './series.ts';
import { newCusum, resetEvidence, type CusumState } from './cusum.ts';

export const TRACKED = ['n', 'alpha', 'abs_mean', 'abs_q50', 'abs_q95', 'abs_q99', 'ess', 'ess_seq', 'kl_k3', 'exceed_1_5', 'exceed_2', 'exceed_3'] as const;
export type Tracked = (typeof TRACKED)[number] | 'win_abs_q95' | 'win_abs_q99';

const MAX_POINTS = 256;
const ALPHA_KEY = '*/all/alpha';
const EARLY_POINTS = 32;

/** What a detector needs of a window: its span, α and its shape against the baselines. */
export type WindowView = Pick<WindowRecord, 'step' | 'first_step' | 'pair' | 'slice' | 'n' | 'alpha' | 'abs_q99' | 'shape'>;

export interface HistoryState {
  lastStep: number | null;
  series: Record<string, Point[]>;
  early: Record<string, number[]>;
  windows: Record<string, WindowView>;
  /** Sequential evidence per detector key (cusum.ts); absent in snapshots from older versions. */
  cusum?: Record<string, CusumState>;
}

export class History {
  s: HistoryState = { lastStep: null, series: {}, early: {}, windows: {} };

  static key(pair: string, slice: string, metric?: string): string {
    return metric ? `${pair}/${slice}/${metric}` : `${pair}/${slice}`;
  }

  push(r: StepResult): void {
    if (this.s.lastStep !== null && r.step <= this.s.lastStep) this.reset(); // rolled back: old trajectory is gone
    this.s.lastStep = r.step;
    for (const rec of r.records) if (rec && typeof rec === 'object') this.pushRecord(r.step, rec);
    // α is a property of the masks, not of a pair: keep one series even if every pair is implicit.
    const all = r.records.find((x) => x?.slice === 'all' && x.n > 0);
    if (all && Number.isFinite(all.alpha)) {
      const arr = (this.s.series[ALPHA_KEY] ??= []);
      arr.push({ step: r.step, value: all.alpha });
      if (arr.length > MAX_POINTS) arr.shift();
    }
    for (const w of r.windows ?? []) {
      if (!w || typeof w !== 'object') continue;
      const { step, first_step, pair, slice, n, alpha, abs_q99, shape } = w;
      this.s.windows[History.key(pair, slice)] = { step, first_step, pair, slice, n, alpha, abs_q99, shape };
      // Window quantiles pool W steps of tokens: a far steadier trend than per-step quantiles.
      for (const m of ['abs_q95', 'abs_q99'] as const) {
        if (!Number.isFinite(w[m])) continue;
        const arr = (this.s.series[History.key(pair, slice, `win_${m}`)] ??= []);
        if (arr.length && arr[arr.length - 1].step === step) arr.pop();
        arr.push({ step, value: w[m] });
        if (arr.length > MAX_POINTS) arr.shift();
      }
    }
  }

  private pushRecord(step: number, rec: MetricRecord): void {
    if (rec.implicit) return;
    for (const m of TRACKED) {
      const v = rec[m];
      if (typeof v !== 'number') continue;
      const k = History.key(rec.pair, rec.slice, m);
      const arr = (this.s.series[k] ??= []);
      arr.push({ step, value: v });
      if (arr.length > MAX_POINTS) arr.shift();
      const early = (this.s.early[k] ??= []);
      if (early.length < EARLY_POINTS && Number.isFinite(v) && rec.n > 0) early.push(v);
    }
  }

  /** Clears trends, windows and accumulated evidence; keeps the early (fixed) baselines and anchors. */
  reset(): void {
    for (const c of Object.values(this.s.cusum ?? {})) resetEvidence(c);
    this.s.series = {};
    this.s.windows = {};
    this.s.lastStep = null;
  }

  series(pair: string, slice: string, metric: Tracked): Point[] {
    return this.s.series[History.key(pair, slice, metric)] ?? [];
  }

  alpha(): Point[] {
    return this.s.series[ALPHA_KEY] ?? [];
  }

  early(pair: string, slice: string, metric: Tracked): number[] {
    return this.s.early[History.key(pair, slice, metric)] ?? [];
  }

  window(pair: string, slice: string): WindowView | undefined {
    return this.s.windows[History.key(pair, slice)];
  }

  /** The CUSUM state of `key` (created empty). */
  cusum(key: string): CusumState {
    return ((this.s.cusum ??= {})[key] ??= newCusum());
  }

  snapshot(): HistoryState {
    return structuredClone(this.s);
  }

  restore(s: HistoryState): void {
    this.s = structuredClone(s);
  }
}

/** The record of one pair×slice in a step, if the step has it with enough tokens. */
export function recordOf(r: StepResult, pair: string, slice: string, minTokens = 1): MetricRecord | undefined {
  return r.records.find((x) => x && x.pair === pair && x.slice === slice && !x.implicit && x.n >= minTokens);
}
