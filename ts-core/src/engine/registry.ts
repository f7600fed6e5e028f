// All runs of one engine, by run id. Creates a Run (and its pipeline) on the first hello.
// At most `maxRuns` runs are open (each holds files): a hello for a new run at the cap closes the
// least recently active idle run (no session left, or no message for `runIdleMs`), else gets E_LIMIT.
import type { Logger } from 'pino';
import { ProtocolError } from '../protocol/errors.ts';
import type { HelloHeader, Limits } from '../protocol/messages.ts';
import type { PipelineFactory } from './pipeline.ts';
import { Run } from './run.ts';
import { PendingBudget } from './budget.ts';
import { applyRetention, type Retention } from '../store/retention.ts';

export const DEFAULT_MAX_RUNS = 64;
export const DEFAULT_RUN_IDLE_MS = 300_000;

export interface RegistryOptions {
  limits: Limits;
  log: Logger;
  factory: PipelineFactory;
  runDir: string;
  options?: Record<string, unknown>;
  /** Open runs at most (`--max-runs`). Default 64. */
  maxRuns?: number;
  /** A run with sessions still open counts as idle after this long without a message (`--run-idle-ms`). Default 5 min. */
  runIdleMs?: number;
  /** Memory budget for incomplete steps, in total and per run (`--max-pending-bytes`, `--max-run-pending-bytes`). */
  maxPendingBytes?: number;
  maxRunPendingBytes?: number;
  /** Runs one connection may hold sessions in (`--max-runs-per-conn`, default 8): a flood of hellos from one
   *  socket cannot take every run slot. */
  maxRunsPerConn?: number;
  /** Run directory retention (store/retention.ts), applied at start and whenever a run closes. */
  retain?: Retention;
  /** Clock (tests). */
  now?: () => number;
}

export const DEFAULT_MAX_RUNS_PER_CONN = 8;

export class RunRegistry {
  private readonly runs = new Map<string, Run>();
  /** Last message per run (ms): hello, step, ack or bye. */
  private readonly active = new Map<string, number>();
  readonly maxRuns: number;
  readonly runIdleMs: number;
  private readonly now: () => number;
  /** Runs closed to make room (counter for logs and tests). */
  evicted = 0;
  readonly budget: PendingBudget;
  readonly maxRunsPerConn: number;

  constructor(private readonly opts: RegistryOptions) {
    this.maxRuns = positive(opts.maxRuns, DEFAULT_MAX_RUNS);
    this.runIdleMs = positive(opts.runIdleMs, DEFAULT_RUN_IDLE_MS, true);
    this.now = opts.now ?? Date.now;
    this.budget = new PendingBudget(opts.maxPendingBytes, opts.maxRunPendingBytes);
    this.maxRunsPerConn = positive(opts.maxRunsPerConn, DEFAULT_MAX_RUNS_PER_CONN);
    this.retain();
  }

  /** Remove run directories beyond the retention rule (never an open one). */
  retain(): void {
    if (!this.opts.retain) return;
    try {
      const removed = applyRetention(this.opts.runDir, this.opts.retain, new Set(this.runs.keys()));
      if (removed.length) this.opts.log.info({ removed, retain: this.opts.retain }, 'run directories removed (retention)');
    } catch (e) {
      this.opts.log.warn({ err: e }, 'retention failed');
    }
  }

  /** The run a message names (a message for it counts as activity). */
  get(runId: string): Run | undefined {
    const run = this.runs.get(runId);
    if (run) this.active.set(runId, this.now());
    return run;
  }

  /** The run for this hello, created (with its pipeline) on first sight, or reopened after a store fault. */
  forHello(h: HelloHeader, conn?: string): Run {
    if (conn !== undefined) {
      let held = 0;
      for (const r of this.runs.values()) if (r.runId !== h.run_id && r.hasConn(conn)) held++;
      if (held >= this.maxRunsPerConn)
        throw new ProtocolError('E_LIMIT', `this connection holds sessions in ${held} runs (--max-runs-per-conn ${this.maxRunsPerConn}): run ${h.run_id} refused; say bye to a run first`, { fatal: true });
    }
    let run = this.get(h.run_id);
    if (run?.failed) {
      this.opts.log.warn({ run_id: h.run_id, err: run.failed }, 'hello for a run whose store failed: reopening it from what is stored');
      this.closeRun(run);
      run = undefined;
    }
    if (!run) {
      if (this.runs.size >= this.maxRuns) this.makeRoom(h.run_id);
      const log = this.opts.log.child({ run_id: h.run_id });
      let pipeline;
      try {
        pipeline = this.opts.factory({
          runId: h.run_id, worldSize: h.world_size, trainer: h.trainer, config: h.config ?? {},
          runDir: this.opts.runDir, options: this.opts.options ?? {}, log,
        });
      } catch (e) {
        log.error({ err: e }, 'run store could not be opened: hello refused with E_STORE');
        throw new ProtocolError('E_STORE', `run ${h.run_id}: the run store cannot be opened: ${(e as Error).message}`, { fatal: true, cause: e });
      }
      run = new Run(h.run_id, h, pipeline, this.opts.limits, log, this.budget);
      this.runs.set(h.run_id, run);
      this.active.set(h.run_id, this.now());
    }
    return run;
  }

  /** Close the least recently active idle run, or refuse the new one with E_LIMIT. */
  private makeRoom(forRunId: string): void {
    const now = this.now();
    let victim: Run | null = null;
    let oldest = Infinity;
    for (const run of this.runs.values()) {
      const last = this.active.get(run.runId) ?? 0;
      const idle = run.activeRanks === 0 || now - last >= this.runIdleMs;
      if (idle && last < oldest) (victim = run), (oldest = last);
    }
    if (!victim)
      throw new ProtocolError('E_LIMIT', `engine has ${this.runs.size} open runs (--max-runs ${this.maxRuns}), none idle: run ${forRunId} refused; retry later`, { fatal: true });
    this.evicted++;
    this.opts.log.warn({ run_id: victim.runId, idle_ms: now - oldest, sessions: victim.activeRanks, for_run: forRunId, max_runs: this.maxRuns }, 'run closed to make room (--max-runs); a later hello reopens it from its store');
    this.closeRun(victim);
  }

  private closeRun(run: Run): void {
    this.runs.delete(run.runId);
    this.active.delete(run.runId);
    // The store closes synchronously inside pipeline.close (files released before the new run opens).
    run
      .close()
      .then(() => this.retain())
      .catch((e) => this.opts.log.error({ err: e, run_id: run.runId }, 'closing run failed'));
  }

  /** Periodic: finalise steps whose missing ranks timed out. */
  tick(nowMs: number): void {
    for (const run of this.runs.values()) {
      try {
        run.tick(nowMs);
      } catch (e) {
        this.opts.log.error({ err: e, run_id: run.runId }, 'finalize failed');
      }
    }
  }

  get size(): number {
    return this.runs.size;
  }

  async close(): Promise<void> {
    for (const run of this.runs.values()) {
      try {
        await run.close();
      } catch (e) {
        this.opts.log.error({ err: e, run_id: run.runId }, 'closing run failed');
      }
    }
    this.runs.clear();
    this.active.clear();
  }
}

function positive(v: number | undefined, dflt: number, zeroOk = false): number {
  if (v === undefined || v === null) return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < (zeroOk ? 0 : 1)) throw new TypeError(`expected an integer >= ${zeroOk ? 0 : 1}, got ${JSON.stringify(v)}`);
  return n;
}
