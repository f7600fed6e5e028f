// Parallel ingest (`serve --ingest-workers N`): rank steps go to a pool of worker threads, each running
// the per-token statistics (rankstep.ts ingestChunk) of one rank's step, so ranks of a step run on
// different cores; the main thread merges the results in arrival order (runstats.ts addRankResult).
// A worker that dies or runs past the job timeout is replaced; its jobs fail with E_WORKER (never lost
// silently, never waited on forever).
import { Worker } from 'node:worker_threads';
import type { PairName, PipelineLog, StepData } from '../types.ts';
import type { Band } from './kernel.ts';
import type { PackedRank } from './packed.ts';
import { SharedPool, copyIn, layoutOf } from './shared-step.ts';
import { StatsError } from './errors.ts';
import type { IngestJob } from './ingest-worker.ts';

declare const __TAILGUARD_BUNDLED__: boolean | undefined;
// From source the worker needs tsx's loader (ingest-worker-entry.mjs); the bundle ships ingest-worker.mjs.
/** A worker that has not loaded within this long is killed (its jobs fail with E_WORKER). */
const BOOT_MS = 60_000;
const ENTRY = typeof __TAILGUARD_BUNDLED__ !== 'undefined' ? new URL('./ingest-worker.mjs', import.meta.url) : new URL('./ingest-worker-entry.mjs', import.meta.url);

export interface IngestPoolOptions {
  /** A job running longer than this kills its worker (default 120 s: a hung worker must not hang the run). */
  jobTimeoutMs?: number;
  log?: PipelineLog;
  /** Tests: make the worker of a job exit, hang or answer late (a real worker death, through the real recovery). */
  fault?: (rank: number, step: number) => 'exit' | 'hang' | 'slow' | undefined;
}

/** A rank step's result: the packed RankStep, and the shared buffer its kept values view. */
export interface IngestResult {
  packed: PackedRank;
  sab: SharedArrayBuffer;
}

interface Job {
  resolve(r: IngestResult): void;
  reject(e: Error): void;
  sab: SharedArrayBuffer;
  slot: Slot;
  timer: NodeJS.Timeout | undefined;
  rank: number;
  step: number;
}
interface Slot {
  w: Worker;
  jobs: Set<number>;
  why: string | null;
  /** Job timers start once the worker has loaded (a cold start under load is not a hang); until then, a boot timer. */
  ready: boolean;
  waiting: (() => void)[];
  boot: NodeJS.Timeout;
}

export class IngestPool {
  readonly shared = new SharedPool();
  readonly counters = { jobs: 0, failed: 0, replaced: 0, copyBytes: 0, copyNs: 0 };
  private readonly slots: Slot[] = [];
  private readonly jobs = new Map<number, Job>();
  private nextId = 1;
  private closed = false;
  private readonly timeoutMs: number;

  constructor(readonly size: number, private readonly opts: IngestPoolOptions = {}) {
    if (!Number.isInteger(size) || size < 1) throw new TypeError(`IngestPool size must be an integer >= 1, got ${size}`);
    this.timeoutMs = opts.jobTimeoutMs ?? 120_000;
  }

  private spawn(): Slot {
    const w = new Worker(ENTRY);
    const slot: Slot = { w, jobs: new Set(), why: null, ready: false, waiting: [], boot: setTimeout(() => this.kill(slot, `not loaded within ${BOOT_MS} ms`), BOOT_MS) };
    slot.boot.unref();
    w.unref(); // an idle pool never keeps the process alive
    w.on('message', (m: { id: number; ready?: true; ok?: PackedRank; error?: { code: string; message: string } }) => {
      if (!m.ready) return this.answer(m);
      clearTimeout(slot.boot);
      slot.ready = true;
      slot.waiting.splice(0).forEach((arm) => arm());
    });
    w.on('error', (e) => (slot.why ??= `worker error: ${e.message}`));
    w.on('exit', (code) => (clearTimeout(slot.boot), this.died(slot, slot.why ?? `worker exited with code ${code}`)));
    return slot;
  }

  private kill(slot: Slot, why: string): void {
    slot.why ??= why;
    void slot.w.terminate();
  }

  private answer(m: { id: number; ok?: PackedRank; error?: { code: string; message: string } }): void {
    const job = this.jobs.get(m.id);
    if (!job) return;
    this.finish(m.id, job);
    if (m.ok) job.resolve({ packed: m.ok, sab: job.sab });
    else {
      this.shared.release(job.sab);
      job.reject(new StatsError(m.error?.code ?? 'E_INTERNAL', m.error?.message ?? 'ingest worker failed'));
    }
  }

  private finish(id: number, job: Job): void {
    this.jobs.delete(id);
    job.slot.jobs.delete(id);
    clearTimeout(job.timer);
  }

  /** A worker ended: fail its jobs with E_WORKER and start a replacement (unless closing). */
  private died(slot: Slot, why: string): void {
    const i = this.slots.indexOf(slot);
    if (i < 0) return;
    for (const id of [...slot.jobs]) {
      const job = this.jobs.get(id)!;
      this.finish(id, job);
      this.shared.release(job.sab);
      this.counters.failed++;
      job.reject(new StatsError('E_WORKER', `the ingest worker holding rank ${job.rank}'s step ${job.step} died (${why}); that rank step was not counted`));
    }
    if (this.closed) return void this.slots.splice(i, 1);
    this.opts.log?.error({ worker: i, why }, 'ingest worker died: replaced');
    this.counters.replaced++;
    this.slots[i] = this.spawn();
  }

  /**
   * One rank's step: copied once into a shared buffer (sync: the caller's arrays may be reused after this
   * call), then ingested by the least busy worker with the step's bands.
   */
  run(d: StepData, bands: Map<PairName, Band>, topK: number): Promise<IngestResult> {
    if (this.closed) return Promise.reject(new StatsError('E_WORKER', 'the ingest pool is closed'));
    const t0 = process.hrtime.bigint();
    const layout = layoutOf(d);
    const sab = this.shared.get(layout.bytes);
    copyIn(d, layout, sab);
    this.counters.copyNs += Number(process.hrtime.bigint() - t0);
    this.counters.copyBytes += layout.bytes;
    this.counters.jobs++;
    while (this.slots.length < this.size) this.slots.push(this.spawn()); // started on first use: an engine without raw steps pays nothing
    let slot = this.slots[0];
    for (const s of this.slots) if (s.jobs.size < slot.jobs.size) slot = s;
    const id = this.nextId++;
    const job: IngestJob = {
      id, sab, layout, bands: [...bands], topK,
      meta: { rank: d.rank, step: d.step, implicit: d.implicit ?? [], sliceNames: d.sliceNames, knobs: d.knobs },
      fault: this.opts.fault?.(d.rank, d.step),
    };
    return new Promise<IngestResult>((resolve, reject) => {
      const entry: Job = { resolve, reject, sab, slot, timer: undefined, rank: d.rank, step: d.step };
      const arm = () => {
        if (!this.jobs.has(id)) return;
        entry.timer = setTimeout(() => this.kill(slot, `no answer within ${this.timeoutMs} ms`), this.timeoutMs);
        entry.timer.unref();
      };
      this.jobs.set(id, entry);
      slot.jobs.add(id);
      if (slot.ready) arm();
      else slot.waiting.push(arm);
      slot.w.postMessage(job);
    });
  }

  /** Jobs in flight. */
  get busy(): number {
    return this.jobs.size;
  }

  /** Kill the workers; jobs still in flight fail with E_WORKER. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => (clearTimeout(s.boot), (s.why ??= 'the pool closed'), s.w.terminate())));
  }
}
