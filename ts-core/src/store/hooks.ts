// The run store as engine pipeline hooks (engine/pipeline.ts): open the run directory on the first
// hello, hand the saved state to RunStats.restore / Controller.restore, append every finalised step
// and audit line, fsync once per step. state.json (~0.5-5 MB of JSON) is replaced every `stateEvery`
// steps (`--state-every`, default 10), after every decision (a directive, an ack, a checkpoint), on bye
// and at close. Faults are never silent: an open that fails throws (the hello gets E_STORE), and a failed
// write rolls the logs back to the last commit and sets `fault` (the run's next reply is E_STORE; the
// engine closes the run without saving state, and a new hello reopens it from what is durable).
import * as fs from 'node:fs';
import type { Directive, PipelineContext, StepResult } from '../types.ts';
import { RunStore, type AuditEntry, type RunState } from './index.ts';

export interface StoreHooks {
  store: RunStore;
  /** state.json as found at open: feed `stats` to RunStats.restore and `controller` to Controller.restore. */
  state: RunState | null;
  /** Where the state comes from at each commit; set by the pipeline after building stats/controller. */
  snapshots: { stats?: () => unknown; controller?: () => unknown; certified?: () => { step: number; path: string }[] };
  /** Audit sink (findings, directives, acks, checkpoints). Acks and checkpoints are made durable at once. */
  audit(line: AuditEntry | { kind: string; step: number; [k: string]: unknown }): void;
  onFinalized(r: StepResult, d: Directive | null): void;
  /** The highest step in steps.jsonl (welcome.resume). */
  resumeStep(): number | null;
  /** The highest step durably committed (reply `recorded_through`). */
  recordedThrough(): number | null;
  /** The first store failure since open, or null. */
  fault(): Error | null;
  /** A rank said bye: make everything durable (state included) so the bye ack's recorded_through is final
   *  (with `--commit async`, once the returned promise settles). */
  flush(): void | Promise<void>;
  close(): void | Promise<void>;
}

export const DEFAULT_STATE_EVERY = 10;

export function openStoreHooks(ctx: PipelineContext): StoreHooks {
  // `durable: false` (replay): same files in the same order, without an fsync per step; state.json only at close.
  const durable = ctx.options.durable !== false;
  const stateEvery = stateEveryOf(ctx.options.stateEvery);
  // `--commit async`: fsyncs leave the reply path; recorded_through then trails the replies (it only ever
  // names what is on disk). Default `sync`: the reply waits for the fsync, so it names its own step.
  const asyncCommit = ctx.options.commit === 'async' && durable;
  let chain: Promise<void> = Promise.resolve();
  const store = RunStore.open(ctx.runDir, ctx.runId, { durable }); // throws: the hello gets E_STORE
  let state: RunState | null;
  try {
    const rec = store.recovered;
    for (const r of rec.repairs) ctx.log.warn({ file: r.file, torn_lines: r.repair.torn.length, uncommitted_lines: r.repair.dropped, offsets: r.repair.torn.map((t) => t.offset) }, 'run store: torn or uncommitted lines moved to .torn');
    if (rec.unanswered.length) ctx.log.warn({ steps: rec.unanswered }, 'run store: a step committed after the last state save was never answered; removed, its resend is accepted');
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
    store.close(true);
    throw e;
  }

  // recover.ts made steps.jsonl the truth: its last step is committed (state.json may be older).
  let lastStep: number | null = store.recovered.lastStep;
  let recorded: number | null = lastStep;
  let savedStep: number | null = state?.last_step ?? null;
  let sinceState = 0;
  let fault: Error | null = null;
  const guard = (what: string, fn: () => void) => {
    if (fault) return;
    try {
      fn();
    } catch (e) {
      fault = e as Error;
      store.rollback();
      ctx.log.error({ err: e, dir: store.dir, recorded_through: recorded }, `run store: ${what} failed; the run's next reply is E_STORE`);
    }
  };
  const commit = (withState: boolean) => {
    if (asyncCommit) {
      // The state is serialised now (it must match the logs as written); the disk work runs in order, later.
      const json = withState ? store.stateJson(currentState()) : undefined;
      const step = lastStep;
      if (withState) (savedStep = lastStep), (sinceState = 0);
      chain = chain.then(async () => {
        if (fault) return;
        try {
          if ((await store.commitStepAsync(json, () => fault !== null)) && !fault) recorded = step;
        } catch (e) {
          if (fault) return;
          fault = e as Error;
          ctx.log.error({ err: e, dir: store.dir, recorded_through: recorded }, "run store: commit failed; the run's next reply is E_STORE");
        }
      });
      return;
    }
    store.commitStep(withState ? currentState() : undefined);
    if (withState) (savedStep = lastStep), (sinceState = 0);
    recorded = lastStep;
  };

  const hooks: StoreHooks = {
    store,
    state,
    snapshots: {},
    audit(line) {
      guard('audit append', () => {
        store.appendDirective(line as AuditEntry);
        // Acks and checkpoint decisions happen between steps; make them durable now.
        if (line.kind === 'ack' || line.kind === 'checkpoint') commit(durable);
      });
    },
    onFinalized(r, d) {
      guard('step append', () => {
        store.appendStepResult(r); // steps.jsonl last: the step's commit record
        const prev = lastStep;
        lastStep = Math.max(lastStep ?? -Infinity, r.step);
        // A directive changes the controller's budgets and cooldowns: save them with it.
        const due = durable && (++sinceState >= stateEvery || (d !== null && d.action !== 'noop'));
        try {
          commit(due);
        } catch (e) {
          lastStep = prev;
          throw e;
        }
      });
    },
    resumeStep: () => lastStep,
    recordedThrough: () => recorded,
    fault: () => fault,
    flush() {
      guard('flush', () => {
        if (durable && lastStep !== null && savedStep !== lastStep) commit(true);
      });
      if (asyncCommit) return chain;
    },
    close() {
      // Synchronous when nothing can be in flight: the files are released before a reopen of the same run.
      if (asyncCommit) return chain.then(() => closeNow());
      closeNow();
    },
  };

  function closeNow(): void {
    if (fault) {
      // What is in memory includes steps the files do not hold: never save it.
      store.close(true);
      return;
    }
    guard('close', () => {
      if (lastStep !== null) store.saveState(currentState()); // the final state, also when not saved per step
      store.close();
      // A run that never stored a step leaves nothing behind (fuzzers and misconfigured clients).
      if (lastStep === null) removeIfEmpty(store.dir);
    });
    if (fault) store.close(true);
  }


  function currentState(): Omit<RunState, 'version' | 'saved_at'> {
    return {
      last_step: lastStep,
      stats: hooks.snapshots.stats?.() ?? null,
      controller: hooks.snapshots.controller?.() ?? null,
      certified_checkpoints: hooks.snapshots.certified?.() ?? [],
      state_every: stateEvery,
    };
  }
  return hooks;
}

/** Remove a run directory that holds no step (only run.json, empty logs, no state). */
function removeIfEmpty(dir: string): void {
  try {
    for (const f of fs.readdirSync(dir)) {
      if (f === 'run.json' || f.endsWith('.tmp-' + process.pid)) continue;
      if (f.endsWith('.jsonl') && fs.statSync(`${dir}/${f}`).size === 0) continue;
      return;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  } catch {
    // best effort
  }
}

function stateEveryOf(v: unknown): number {
  if (v === undefined || v === null) return DEFAULT_STATE_EVERY;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new TypeError(`--state-every must be an integer >= 1, got ${JSON.stringify(v)}`);
  return n;
}
