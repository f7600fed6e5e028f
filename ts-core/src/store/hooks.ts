// The run store as engine pipeline hooks (engine/pipeline.ts): open the run directory on the first
// hello, hand the saved state to RunStats.restore / Controller.restore, append every finalised step
// and audit line, fsync once per step. state.json (~0.5-5 MB of JSON) is replaced every `stateEvery`
// steps (`--state-every`, default 10), after every decision (a directive, an ack, a checkpoint) and at
// close. A store failure is logged, never thrown into the engine: training must not stop because a disk filled up.
import type { Directive, PipelineContext, StepResult } from '../types.ts';
import { RunStore, type AuditEntry, type RunState } from './index.ts';

export interface StoreHooks {
  /** null when the directory could not be opened (logged); the run then goes on unrecorded. */
  store: RunStore | null;
  /** state.json as found at open: feed `stats` to RunStats.restore and `controller` to Controller.restore. */
  state: RunState | null;
  /** Where the state comes from at each commit; set by the pipeline after building stats/controller. */
  snapshots: { stats?: () => unknown; controller?: () => unknown; certified?: () => { step: number; path: string }[] };
  /** Audit sink (findings, directives, acks, checkpoints). Acks and checkpoints are made durable at once. */
  audit(line: AuditEntry | { kind: string; step: number; [k: string]: unknown }): void;
  onFinalized(r: StepResult, d: Directive | null): void;
  resumeStep(): number | null;
  close(): void;
}

export const DEFAULT_STATE_EVERY = 10;

export function openStoreHooks(ctx: PipelineContext): StoreHooks {
  // `durable: false` (replay): same files in the same order, without an fsync per step; state.json only at close.
  const durable = ctx.options.durable !== false;
  let store: RunStore | null = null;
  let state: RunState | null = null;
  try {
    store = RunStore.open(ctx.runDir, ctx.runId, { durable });
    for (const r of store.recovery) ctx.log.warn({ file: r.file, torn_bytes: r.torn.bytes, offset: r.torn.offset }, 'run store: torn last line cut off (kept in .torn)');
    state = store.loadState();
    const meta = store.readRunJson();
    store.writeRunJson({
      trainer: ctx.trainer,
      world_size: ctx.worldSize,
      window: Number(ctx.options.window ?? 20),
      config: ctx.config,
      policy: ctx.options.policy ?? null,
      sessions: [...(meta?.sessions ?? []), { started_at: new Date().toISOString(), resumed_from_step: state?.last_step ?? null, pid: process.pid }],
    });
    if (state) ctx.log.info({ dir: store.dir, last_step: state.last_step }, 'run store: resuming');
  } catch (e) {
    ctx.log.error({ err: e, run_dir: ctx.runDir }, 'run store unavailable: this run is not recorded');
    store?.close();
    store = null;
    state = null;
  }

  // steps.jsonl is fsynced every step, state.json only every K: the log knows the true last step.
  let lastStep: number | null = maxStep(state?.last_step ?? null, logged(store));
  // Live runs save state.json every `stateEvery` steps; a replay (not durable) only at close.
  const stateEvery = stateEveryOf(ctx.options.stateEvery);
  let sinceState = 0;
  let failures = 0;
  const guard = (what: string, fn: () => void) => {
    if (!store) return;
    try {
      fn();
    } catch (e) {
      // Log the first few and then every 100th, so a full disk does not flood the log.
      if (failures++ < 5 || failures % 100 === 0) ctx.log.error({ err: e, failures }, `run store: ${what} failed`);
    }
  };

  const hooks: StoreHooks = {
    store,
    state,
    snapshots: {},
    audit(line) {
      guard('audit append', () => {
        store!.appendDirective(line as AuditEntry);
        // Acks and checkpoint decisions happen between steps; make them durable now.
        if (line.kind === 'ack' || line.kind === 'checkpoint') {
          store!.commitStep(currentState());
          sinceState = 0;
        }
      });
    },
    onFinalized(r, d) {
      guard('step append', () => {
        store!.appendStepResult(r);
        lastStep = Math.max(lastStep ?? -Infinity, r.step);
        // A directive changes the controller's budgets and cooldowns: save them with it.
        const due = durable && (++sinceState >= stateEvery || (d !== null && d.action !== 'noop'));
        if (due) sinceState = 0;
        store!.commitStep(due ? currentState() : undefined);
      });
    },
    resumeStep: () => lastStep,
    close() {
      guard('close', () => {
        if (lastStep !== null) store!.saveState(currentState()); // the final state, also when not saved per step
        store!.close();
      });
    },
  };

  function currentState(): Omit<RunState, 'version' | 'saved_at'> {
    return {
      last_step: lastStep,
      stats: hooks.snapshots.stats?.() ?? null,
      controller: hooks.snapshots.controller?.() ?? null,
      certified_checkpoints: hooks.snapshots.certified?.() ?? [],
    };
  }
  return hooks;
}

function logged(store: RunStore | null): number | null {
  try {
    return store?.lastLoggedStep() ?? null;
  } catch {
    return null;
  }
}

const maxStep = (a: number | null, b: number | null): number | null => (a === null ? b : b === null ? a : Math.max(a, b));

function stateEveryOf(v: unknown): number {
  if (v === undefined || v === null) return DEFAULT_STATE_EVERY;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new TypeError(`--state-every must be an integer >= 1, got ${JSON.stringify(v)}`);
  return n;
}
