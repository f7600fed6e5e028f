// The hook points where statistics, detection/policy and the run store plug into a run.
// Every hook is optional: with none, the engine validates, assembles and answers no-ops.
//
// Wiring (one place, `buildPipeline` below, is what serve uses):
//   stats/   RunStats.addRankStep(data)        -> Pipeline.addRankStep
//            sketch steps (issue 9)            -> Pipeline.addSketchStep
//            RunStats.finalizeReady(now)       -> Pipeline.finalizeReady (also called every second by the server tick)
//   detect/+policy/ Controller.onStepResult(r) -> Pipeline.onStepResult (return the directive, or null)
//            Controller.onAck(ack)             -> Pipeline.onAck
//   store/   RunStore.appendMetrics/appendWindows/appendDirective/... -> Pipeline.onFinalized,
//            RunStore.loadState()              -> Pipeline.resumeStep (welcome.resume)
//   close    flush files on shutdown           -> Pipeline.close
import type { Logger } from 'pino';
import type { AckHeader, HelloHeader } from '../protocol/messages.ts';
import type { Directive, PipelineContext, StepData, StepResult } from '../types.ts';
export type { PipelineContext } from '../types.ts';
import type { SketchStepData } from '../types.ts';
import type { MaskCounts } from './received.ts';
import { controlHooks } from '../policy/hooks.ts';
import type { ControllerSnapshot } from '../policy/controller.ts';
import { openStoreHooks } from '../store/hooks.ts';
import { RawJson } from '../store/index.ts';
import { RunStats } from '../stats/index.ts';
import { IngestPool, type IngestResult } from '../stats/ingest-pool.ts';
import { attachTopTokens, runDecoder } from './forensics.ts';

export interface Pipeline {
  /** A run's first hello (and every later one: a rank (re)joined). */
  onHello?(h: HelloHeader): void;
  /**
   * One rank's assembled step. The typed arrays are only valid during this call: copy what you keep.
   * May return the step's mask counts (RunStats does), which the reply's `received.slices` then echoes
   * instead of the engine counting the masks a second time.
   */
  addRankStep?(data: StepData, started?: unknown): MaskCounts | null | void;
  /**
   * Ingest workers (`--ingest-workers`): start one rank step's statistics off the main thread; the arrays
   * are copied before it returns. Its result comes back as addRankStep's `started`, in arrival order.
   */
  startRankStep?(data: StepData): Promise<unknown>;
  /** Sketch mode: every rank's step at once, reduced by the shim (docs/sketch.md) → RunStats.addSketchStep. */
  addSketchStep?(data: SketchStepData): void;
  /** Steps that are final now (all ranks in, or timed out), in step order. */
  finalizeReady?(nowMs: number): StepResult[];
  /**
   * Detect + decide for one final step; a non-null, non-noop directive is sent to every rank.
   * `minApplyAt`: the earliest `apply_at_step` every rank can meet (engine/outbox.ts); a lower one is raised.
   */
  onStepResult?(r: StepResult, o?: { minApplyAt?: number }): Directive | null;
  /** After onStepResult: `findings/n`, and `findings/severity` (info 0 … critical 3) when there are any, of that step, for the reply's metrics. */
  findingMetrics?(): Record<string, number>;
  /** After onStepResult: persist metrics, windows and the directive. */
  onFinalized?(r: StepResult, directive: Directive | null): void;
  /** A checkpoint the shim saved (step header `checkpoint`), for certification. */
  onCheckpoint?(step: number, path: string): void;
  /** The reply when there is nothing to apply (carries the certified checkpoints to protect). */
  noop?(step: number): Directive;
  /** A client ack (applied or refused). */
  onAck?(ack: AckHeader): void;
  /** The highest complete step known for this run (e.g. from the run store), for welcome.resume. */
  resumeStep?(): number | null;
  /** The highest step durably in the run store (reply `recorded_through`); absent: nothing is recorded. */
  recordedThrough?(): number | null;
  /** A store failure since the run opened (the run's replies become E_STORE until it is reopened). */
  storeFault?(): Error | null;
  /** A rank said bye: make what is stored durable, state included (a promise: once it settles). */
  onBye?(rank: number): void | Promise<void>;
  /** Flush and release (shutdown). */
  close?(): void | Promise<void>;
}

export type PipelineFactory = (ctx: PipelineContext) => Pipeline;

/** The pipeline `tailguard serve` uses. Hook edits for stats/detect/policy/store go here. */
export const buildPipeline: PipelineFactory = (ctx) => {
  // detect/ + policy/: audit lines go to `control.sink` (set it to RunStore.appendDirective with the store).
  // store/: open <runDir>/<runId> first; its state.json (if any) restores stats and controller (resume).
  const store = openStoreHooks(ctx);
  const decoder = runDecoder(ctx.config, (msg) => ctx.log.warn(msg));
  const control = controlHooks({
    policyFile: ctx.options.policy as string | undefined, snapshot: (store.state?.controller ?? null) as ControllerSnapshot | null, sink: store.audit,
    evidence: (findings, r) => attachTopTokens(findings, r, decoder),
  });
  // stats/: per-rank steps in, final StepResults out (window/timeout from the serve options).
  const statsOpts = {
    worldSize: ctx.worldSize, runId: ctx.runId,
    window: ctx.options.window === undefined ? undefined : Number(ctx.options.window),
    stepTimeoutMs: ctx.options.stepTimeout === undefined ? undefined : Number(ctx.options.stepTimeout),
  };
  // --ingest-workers: serve's pool, shared by every run (stats/ingest-pool.ts). A run of one rank stays
  // in-thread: it has no ranks to run side by side, and a worker would only add its copy.
  const ingest = ctx.options.ingestPool instanceof IngestPool && ctx.worldSize > 1 ? ctx.options.ingestPool : null;
  const release = (sab: SharedArrayBuffer) => ingest?.shared.release(sab);
  const stats = store.state?.stats ? RunStats.restore(store.state.stats, statsOpts) : new RunStats(statsOpts);
  // state.json can be older than steps.jsonl (saved every K steps): steps already stored count as late, never twice.
  stats.lastFinal = Math.max(stats.lastFinal, store.resumeStep() ?? -1);
  // stats: pre-serialised with the window rings' text cached, so a save re-serialises only new slots.
  Object.assign(store.snapshots, { stats: () => new RawJson(stats.snapshotText()), controller: () => control.snapshot(), certified: () => control.controller.certifiedCheckpoints() });
  return {
    onFinalized: (r, d) => store.onFinalized(r, d),
    resumeStep: () => store.resumeStep(),
    recordedThrough: () => store.recordedThrough(),
    storeFault: () => store.fault(),
    onBye: () => store.flush(),
    close: () => store.close(),
    // With ingest workers the echoed mask counts are the worker's, late steps included (the arrays are not read again).
    addRankStep: (d, started) => (started ? (stats.addRankResult(d, started as IngestResult, release), (started as IngestResult).packed.maskCounts) : stats.addRankStep(d)),
    ...(ingest && { startRankStep: (d: StepData) => stats.startRankStep(d, ingest) }),
    addSketchStep: (d) => stats.addSketchStep(d),
    finalizeReady: (now) => stats.finalizeReady(now),
    onStepResult: (r, o) => control.onStepResult(r, o),
    findingMetrics: () => control.findingMetrics(),
    onAck: (a) => control.onAck(a),
    onCheckpoint: (step, path) => control.onCheckpoint(step, path),
    noop: (step) => control.noop(step),
  };
};
