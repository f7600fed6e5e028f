// RunStats: per-rank steps in, merged StepResults out. A step is final when every rank of
// worldSize has sent all its chunks, when stepTimeoutMs has passed since its first data, or when a
// later step finalises (ranks send steps in order, so a rank that reported a later step is
// definitively missing from this one). Data for a finalised step is counted as late, not merged.
import type { MetricRecord, PairName, RankSummary, SliceName, StepData, StepResult, WindowRecord } from '../types.ts';
import { PAIRS } from '../types.ts';
import { histAdd, histQuantile } from './hist.ts';
import { BufPool } from './pool.ts';
import { RankStep, SliceState, checkShape, ingestChunk } from './rankstep.ts';
import type { IngestPool, IngestResult } from './ingest-pool.ts';
import { unpackRank } from './packed.ts';
import type { Band } from './kernel.ts';
import { S_N, S_NONFINITE, metricsFromSums, mergeSums } from './sums.ts';
import { BUILTIN, RunWindows } from './run-windows.ts';
import { StepQuantiles } from './step-quantiles.ts';
import { WindowState } from './window.ts';
import { StatsError } from './errors.ts';
import { TOPK_DEFAULT, mergeTopTokens } from './topk.ts';
import type { SketchStepData } from '../types.ts';

export interface RunStatsOptions {
  /** Ranks per step. */
  worldSize: number;
  /** Rolling window W in steps (default 20). */
  window?: number;
  /** Finalise a step this long after its first data even if ranks are missing (default 30000). */
  stepTimeoutMs?: number;
  /** K: the fixed baseline is the first K tumbling windows (default 3). */
  fixedBaselineWindows?: number;
  /** EWMA weight of the newest window CDF in the drift-aware baseline (default 0.3). */
  ewmaAlpha?: number;
  /** Keep at most this many values per pending step for exact quantiles, else histogram quantiles (default 2^26). */
  exactMaxValues?: number;
  /** Run id echoed in StepResult. */
  runId?: string;
  /** Forensics: top-k tokens by |ℓ| per pair × slice × step (stats/topk.ts; default 8, 0 = off). */
  topK?: number;
}

const DEFAULTS = { window: 20, stepTimeoutMs: 30_000, fixedBaselineWindows: 3, ewmaAlpha: 0.3, exactMaxValues: 1 << 26, runId: '', topK: TOPK_DEFAULT };
class PendingStep {
  ranks = new Map<number, RankStep>();
  /** Sketch mode: rank 0's message stands for every rank; per-rank summaries only when the shim sent them. */
  sketch = false;
  sketchPerRank: RankSummary[] = [];
  keep = true;
  kept = 0;
  /** Per pair: bins around the previous step's quantiles, fixed for the step (every rank collects the same). */
  bands = new Map<PairName, Band>();
  constructor(readonly step: number, readonly firstAt: number) {}
}

function normalize(o: RunStatsOptions): Required<RunStatsOptions> {
  const r = { ...DEFAULTS, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) } as Required<RunStatsOptions>;
  const int = (k: keyof RunStatsOptions, min: number) => {
    const v = r[k] as number;
    if (!Number.isInteger(v) || v < min) throw new TypeError(`RunStats option ${k} must be an integer >= ${min}, got ${v}`);
  };
  int('worldSize', 1); int('window', 1); int('fixedBaselineWindows', 1); int('topK', 0);
  if (!(r.stepTimeoutMs >= 0)) throw new TypeError(`RunStats option stepTimeoutMs must be >= 0, got ${r.stepTimeoutMs}`);
  if (!(r.ewmaAlpha > 0 && r.ewmaAlpha <= 1)) throw new TypeError(`RunStats option ewmaAlpha must be in (0, 1], got ${r.ewmaAlpha}`);
  return r;
}

export class RunStats {
  readonly opts: Required<RunStatsOptions>;
  private pending = new Map<number, PendingStep>();
  private windows: RunWindows;
  private pool = new BufPool();
  /** Exact per-step quantiles: the band each step's kernel collects, and the selection (step-quantiles.ts). */
  private readonly quantiles = new StepQuantiles();
  /** Recycled SliceStates (each ~200 KB): a step allocates none once the run is warm. */
  private free: SliceState[] = [];
  private readonly alloc = (): SliceState => this.free.pop()?.reset() ?? new SliceState();
  /** Last finalised step (-1 before any). */
  lastFinal = -1;
  /** Chunks that arrived for an already finalised step (counted, never merged). */
  late = { count: 0, steps: [] as number[] };
  duplicates = 0;
  /** How per-step quantiles were computed, per pair × slice (diagnostics, benchmark). */
  get quantilePaths(): { band: number; scan: number; hist: number } {
    return this.quantiles.paths;
  }
  /** Bands of steps handed to ingest workers before their PendingStep exists (every rank gets the same). */
  private dispatched = new Map<number, Map<PairName, Band>>();

  constructor(opts: RunStatsOptions) {
    this.opts = normalize(opts);
    this.windows = new RunWindows(this.opts);
  }

  /** Returns the rank step's mask counts (the engine echoes them in `received.slices`), or null if not ingested (late/duplicate). */
  addRankStep(data: StepData): RankStep['maskCounts'] | null {
    return this.addRankChunk(data, 0, 1);
  }

  addRankChunk(data: StepData, chunkIndex: number, chunkCount: number): RankStep['maskCounts'] | null {
    const { step, rank } = data;
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.opts.worldSize) {
      throw new StatsError('E_RANK', `rank ${rank} outside world size ${this.opts.worldSize}`);
    }
    if (this.isLate(step)) return null;
    const ps = this.pendingFor(data);
    let rs = ps.ranks.get(rank);
    if (!rs) {
      ps.ranks.set(rank, (rs = new RankStep(rank, this.alloc)));
      rs.topK = this.opts.topK;
    }
    rs.chunkCount = Math.max(1, chunkCount | 0);
    if (rs.complete) {
      this.duplicates++;
      return null;
    }
    const T = data.completionMask.length;
    const nPairs = PAIRS.filter((p) => data.pairs[p] || data.implicit?.includes(p)).length;
    if (ps.keep && ps.kept + T * nPairs > this.opts.exactMaxValues) this.dropKept(ps);
    ps.kept += T * nPairs;
    ingestChunk(rs, data, this.pool, ps.keep, ps.bands);
    if (rs.complete) rs.finish();
    return rs.maskCounts;
  }

  private pendingFor(data: StepData): PendingStep {
    let ps = this.pending.get(data.step);
    if (!ps) {
      ps = new PendingStep(data.step, Number.isFinite(data.receivedAt) ? data.receivedAt : Date.now());
      this.pending.set(data.step, ps);
      const b = this.dispatched.get(data.step);
      if (b) (ps.bands = b), this.dispatched.delete(data.step);
      else this.quantiles.bands(ps.bands);
    }
    return ps;
  }

  /**
   * Worker ingest (stats/ingest-pool.ts): checks now (E_RANK, shapes), then the rank step's statistics
   * on a worker with the step's bands; addRankResult merges the result, called in arrival order.
   */
  startRankStep(data: StepData, pool: IngestPool): Promise<IngestResult> {
    if (!Number.isInteger(data.rank) || data.rank < 0 || data.rank >= this.opts.worldSize) {
      throw new StatsError('E_RANK', `rank ${data.rank} outside world size ${this.opts.worldSize}`);
    }
    checkShape(data);
    let bands = this.pending.get(data.step)?.bands ?? this.dispatched.get(data.step);
    if (!bands) {
      const ps = new PendingStep(data.step, 0);
      this.quantiles.bands(ps.bands);
      this.dispatched.set(data.step, (bands = ps.bands));
    }
    return pool.run(data, bands, this.opts.topK);
  }

  /** The worker's rank step into its pending step: what addRankStep does after the kernel pass. */
  addRankResult(data: StepData, res: IngestResult, release: (sab: SharedArrayBuffer) => void): RankStep['maskCounts'] | null {
    const rs = unpackRank(res.packed, data, res.sab, this.alloc, () => release(res.sab));
    if (this.isLate(data.step)) return this.discard(rs), null;
    const ps = this.pendingFor(data);
    if (ps.ranks.get(data.rank)?.complete) return this.duplicates++, this.discard(rs), null;
    const prev = ps.ranks.get(data.rank);
    if (prev) this.discard(prev); // a partial in-thread rank step is replaced by the whole one
    const T = data.completionMask.length;
    const nPairs = rs.pairs.size;
    if (ps.keep && ps.kept + T * nPairs > this.opts.exactMaxValues) this.dropKept(ps);
    ps.kept += T * nPairs;
    if (!ps.keep) this.releaseKept(rs);
    ps.ranks.set(data.rank, rs);
    return rs.maskCounts;
  }

  private discard(rs: RankStep): void {
    this.releaseKept(rs);
    for (const s of rs.slices.values()) this.free.push(s);
  }

  /**
   * Sketch mode (docs/sketch.md): one message holds every rank's step, already merged by the shim.
   * The slices become rank 0's accumulators; the step is complete for all ranks at once.
   */
  addSketchStep(d: SketchStepData): void {
    if (d.step <= this.lastFinal || this.pending.has(d.step)) {
      if (this.pending.has(d.step)) this.duplicates++;
      else this.late.count++;
      return;
    }
    const ps = new PendingStep(d.step, Number.isFinite(d.receivedAt) ? d.receivedAt : Date.now());
    ps.sketch = true;
    ps.sketchPerRank = d.perRank ?? [];
    ps.keep = false; // histogram quantiles: the values never reach the engine
    const rs = new RankStep(0, this.alloc);
    rs.chunksSeen = 1;
    Object.assign(rs, { tokens: d.tokens, nSeqs: d.nSeqs, knobs: d.knobs, logs: d.logs, receivedAt: ps.firstAt });
    Object.assign(rs.maskCounts, d.sliceCounts);
    d.pairs.forEach((p) => rs.pairs.add(p));
    d.implicit.forEach((p) => rs.implicit.add(p));
    for (const [key, sk] of d.slices) {
      const st = rs.slice(key);
      st.hist.set(sk.hist);
      st.sums.set(sk.sums);
    }
    ps.ranks.set(0, rs);
    for (let r = 1; r < this.opts.worldSize; r++) ps.ranks.set(r, Object.assign(new RankStep(r), { chunksSeen: 1 }));
    this.pending.set(d.step, ps);
  }

  private isLate(step: number): boolean {
    if (step > this.lastFinal || this.pending.has(step)) return false;
    this.late.count++;
    if (this.late.steps.at(-1) !== step) this.late.steps.push(step);
    if (this.late.steps.length > 100) this.late.steps.shift();
    return true;
  }

  private dropKept(ps: PendingStep): void {
    ps.keep = false;
    for (const rs of ps.ranks.values()) this.releaseKept(rs);
  }

  /** Steps that are final now, in step order. */
  finalizeReady(nowMs: number): StepResult[] {
    let upTo = -1;
    for (const ps of this.pending.values()) {
      const all = ps.sketch || ps.ranks.size === this.opts.worldSize && [...ps.ranks.values()].every((r) => r.complete);
      if (all || nowMs - ps.firstAt >= this.opts.stepTimeoutMs) upTo = Math.max(upTo, ps.step);
    }
    if (upTo < 0) return [];
    const steps = [...this.pending.keys()].filter((s) => s <= upTo).sort((a, b) => a - b);
    for (const s of this.dispatched.keys()) if (s <= upTo) this.dispatched.delete(s);
    const out: StepResult[] = [];
    for (const s of steps) {
      const ps = this.pending.get(s)!;
      this.pending.delete(s);
      out.push(this.finalize(ps));
      this.lastFinal = Math.max(this.lastFinal, s);
    }
    return out;
  }

  /** Back to the pool: every kept buffer once (pair chunks own their values; the runs entry its runs). */
  private releaseKept(rs: RankStep): void {
    for (const k of rs.kept) if (k.pooled) this.pool.release(k.vals);
    rs.kept.length = 0;
    rs.release?.();
    rs.release = null;
    for (const s of rs.slices.values()) s.srcs.length = 0;
  }

  /** Number of steps waiting for ranks. */
  get pendingSteps(): number {
    return this.pending.size;
  }

  private finalize(ps: PendingStep): StepResult {
    const ranks = [...ps.ranks.values()].sort((a, b) => a.rank - b.rank);
    for (const rs of ranks) if (!rs.complete) rs.finish(); // partial data of a timed-out rank still counts
    const present = ps.sketch ? [...Array(this.opts.worldSize).keys()] : ranks.filter((r) => r.complete).map((r) => r.rank);
    const missing: number[] = [];
    for (let r = 0; r < this.opts.worldSize; r++) if (!present.includes(r)) missing.push(r);
    // Merge ranks per pair × slice (exact: sums and histograms). One rank: its states are the merge.
    const merged = new Map<string, SliceState>();
    const owned: SliceState[] = [];
    const pairs = new Set<PairName>();
    const implicit = new Set<PairName>();
    const single = ranks.filter((r) => r.slices.size > 0).length <= 1;
    for (const rs of ranks) {
      rs.pairs.forEach((p) => pairs.add(p));
      rs.implicit.forEach((p) => implicit.add(p));
      for (const [key, s] of rs.slices) {
        if (single) {
          merged.set(key, s);
          continue;
        }
        let m = merged.get(key);
        if (!m) (merged.set(key, (m = this.alloc())), owned.push(m));
        histAdd(m.hist, s.hist);
        mergeSums(m.sums, s.sums, true);
      }
    }
    const empty = this.alloc();
    owned.push(empty);
    const records: MetricRecord[] = [];
    const windows: WindowRecord[] = [];
    for (const pair of PAIRS) {
      if (!pairs.has(pair)) continue;
      const nPre = merged.get(`${pair}/pre_tool`)?.sums[S_N] ?? 0;
      const nPost = merged.get(`${pair}/post_tool`)?.sums[S_N] ?? 0;
      const alpha = nPre + nPost > 0 ? nPost / (nPre + nPost) : NaN;
      const user = [...merged.keys()].filter((k) => k.startsWith(`${pair}/user:`)).map((k) => k.slice(pair.length + 1)).sort();
      const slices = [...BUILTIN, ...user] as SliceName[];
      const quants = this.quantiles.ofPair(ps.keep ? ps.bands.get(pair) : undefined, ps.keep, ranks, pair, slices, merged, empty);
      for (const slice of slices) {
        const key = `${pair}/${slice}`;
        const m = merged.get(key) ?? empty;
        if (slice === 'tool_output' && m.sums[S_N] + m.sums[S_NONFINITE] === 0) continue;
        const sm = metricsFromSums(m.sums);
        const q = quants.get(slice)!;
        const rec: MetricRecord = {
          step: ps.step, pair, slice, ...sm,
          abs_q50: q[0], abs_q90: q[1], abs_q95: q[2], abs_q99: q[3], abs_q999: q[4], alpha,
        };
        if (implicit.has(pair)) rec.implicit = true;
        records.push(rec);
      }
      this.windows.update(ps.step, pair, merged, user, windows, empty);
    }
    const perRank = ps.sketch ? ps.sketchPerRank : ranks.map((rs) => this.rankSummary(rs));
    const top = ps.sketch || !this.opts.topK ? null : mergeTopTokens(ranks, this.opts.topK);
    for (const rs of ranks) {
      this.releaseKept(rs);
      for (const s of rs.slices.values()) this.free.push(s);
    }
    for (const s of owned) this.free.push(s);
    if (this.free.length > 128) this.free.length = 128; // at most ~25 MB retained
    const first = ranks.find((r) => r.rank === 0) ?? ranks[0];
    return {
      runId: this.opts.runId, step: ps.step, worldSize: this.opts.worldSize, ranksPresent: present, ranksMissing: missing,
      tokens: ranks.reduce((a, r) => a + r.tokens, 0), records, windows, perRank,
      knobs: first?.knobs ?? {}, logs: first?.logs ?? {},
      ...(top && { topTokens: top.merged, rankTopTokens: top.byRank }),
    };
  }

  private rankSummary(rs: RankStep): RankSummary {
    const pairs: RankSummary['pairs'] = {};
    for (const pair of rs.pairs) {
      const o: Record<string, { n: number; abs_q99: number; abs_mean: number; ess: number }> = {};
      for (const [key, s] of rs.slices) {
        if (!key.startsWith(`${pair}/`)) continue;
        const sm = metricsFromSums(s.sums);
        if (sm.n + sm.nonfinite === 0 && key.endsWith('/tool_output')) continue;
        o[key.slice(pair.length + 1)] = { n: sm.n, abs_q99: histQuantile(s.hist, 0.99, sm.abs_max), abs_mean: sm.abs_mean, ess: sm.ess };
      }
      pairs[pair] = o;
    }
    return { rank: rs.rank, tokens: rs.tokens, pairs };
  }

  /** JSON-serialisable state (windows, baselines). Pending, not yet final steps are not included. */
  snapshot(): unknown {
    const windows: Record<string, unknown> = {};
    for (const [k, w] of this.windows.map) windows[k] = w.toJSON();
    return {
      version: 1, window: this.opts.window, fixedBaselineWindows: this.opts.fixedBaselineWindows, ewmaAlpha: this.opts.ewmaAlpha,
      lastFinal: this.lastFinal, late: this.late, windows,
    };
  }

  /** JSON.stringify(this.snapshot()), built from each window's cached text (WindowState.toJSONText). */
  snapshotText(): string {
    const head = JSON.stringify({
      version: 1, window: this.opts.window, fixedBaselineWindows: this.opts.fixedBaselineWindows, ewmaAlpha: this.opts.ewmaAlpha,
      lastFinal: this.lastFinal, late: this.late,
    });
    const ws: string[] = [];
    for (const [k, w] of this.windows.map) ws.push(`${JSON.stringify(k)}:${w.toJSONText()}`);
    return `${head.slice(0, -1)},"windows":{${ws.join(',')}}}`;
  }

  static restore(snap: unknown, opts: RunStatsOptions): RunStats {
    const s = snap as any;
    if (!s || s.version !== 1) throw new StatsError('E_SNAPSHOT', 'unknown RunStats snapshot version');
    const rs = new RunStats({ ...opts, window: s.window, fixedBaselineWindows: s.fixedBaselineWindows, ewmaAlpha: s.ewmaAlpha });
    rs.lastFinal = s.lastFinal;
    rs.late = { count: s.late?.count ?? 0, steps: [...(s.late?.steps ?? [])] };
    for (const [k, w] of Object.entries(s.windows ?? {})) rs.windows.map.set(k, WindowState.fromJSON(w, rs.opts));
    return rs;
  }
}
