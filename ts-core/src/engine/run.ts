// One Run per run id: the sessions of its ranks, step assembly, and the glue
// ingestStep → pipeline (stats → detect/policy → store) → directive + metrics for the reply.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Message } from '../protocol/codec.ts';
import { ProtocolError } from '../protocol/errors.ts';
import type { AckHeader, HelloHeader, Limits, Received, StepHeader, WireDirective } from '../protocol/messages.ts';
import type { Directive, StepData, StepResult } from '../types.ts';
import { StepAssembler, toStepData } from './assembler.ts';
import type { Pipeline } from './pipeline.ts';
import { headlineMetrics } from '../stats/index.ts';
import { addChunk, countSlices, emptyReceived, setSlices, type MaskCounts } from './received.ts';
import { decodeSketchStep } from './sketch.ts';
import { DirectiveOutbox } from './outbox.ts';
import { PENDING_STEP_OVERHEAD, PendingBudget } from './budget.ts';


interface RankSession {
  session: string;
  assembler: StepAssembler;
  checksum: boolean;
  /** The connection (ROUTER routing id, hex) the hello came on: the session is its alone. */
  conn: string | undefined;
}

/** Connections whose session was taken over, remembered per run for E_SESSION (oldest forgotten first). */
const TAKEN_OVER_KEEP = 256;

/** A step chunk on its way (Run.startStep): `wait` settles when its ingest worker is done (null: none). */
export interface StartedStep {
  wait: Promise<void> | null;
  commit(): StepReply | null;
}

export interface StepReply {
  directive: WireDirective;
  received: Received;
  metrics: Record<string, number | null>;
  metrics_step: number | null;
  recorded_through: number | null;
}

export class Run {
  readonly worldSize: number;
  readonly trainer: string;
  private readonly sessions = new Map<number, RankSession>();
  /** Highest step any rank completed (welcome.resume). */
  lastCompleteStep: number | null = null;
  private metrics: Record<string, number | null> = {};
  private metricsStep: number | null = null;
  /** Control directives on their way to every rank (proto/README.md "Directive contract"). */
  readonly outbox: DirectiveOutbox;
  /** Sketch mode: rank 0's messages carry every rank's data, and only rank 0 reads replies. */
  private sketch = false;
  /** The step whose message is being handled (null in the periodic tick). */
  private current: number | null = null;
  /** `${conn}/${rank}` of sessions a newer hello took over. */
  private readonly takenOver = new Set<string>();
  /** Bytes charged to the budget per step waiting in the statistics for its other ranks. */
  private readonly charged = new Map<number, { bytes: number; ranks: Set<number> }>();
  private finalHigh = -1;
  /** Rank steps with an ingest worker, not yet committed. */
  private inflight = 0;
  /** Mask counts of the step ingestStep just passed to stats (null: stats did not count it). */
  private counted: MaskCounts | null = null;

  constructor(
    readonly runId: string,
    hello: HelloHeader,
    readonly pipeline: Pipeline,
    private readonly limits: Limits,
    private readonly log: Logger,
    private readonly budget: PendingBudget = new PendingBudget(),
  ) {
    this.worldSize = hello.world_size;
    this.trainer = hello.trainer;
    this.lastCompleteStep = pipeline.resumeStep?.() ?? null;
    this.outbox = new DirectiveOutbox(() => (this.sketch ? 1 : this.worldSize));
  }

  /**
   * hello: (re)create the rank's session on connection `conn`; its step history restarts. A session held by
   * another connection is taken over (that connection then gets E_SESSION). `resume: false` over stored
   * steps, with no other rank connected, is E_RUN_EXISTS: a second training run never appends silently.
   */
  hello(h: HelloHeader, conn?: string): { session: string; resume: { last_step: number | null } | null; isNew: boolean; takenFrom?: string } {
    if (h.world_size !== this.worldSize)
      throw new ProtocolError('E_RANK', `run ${this.runId} has world_size ${this.worldSize}, hello says ${h.world_size}`, { fatal: true });
    const others = [...this.sessions.keys()].some((r) => r !== h.rank);
    if (h.resume === false && this.lastCompleteStep !== null && !others)
      throw new ProtocolError('E_RUN_EXISTS', `run ${this.runId} already holds steps up to ${this.lastCompleteStep} from an earlier training run: use a new run_id, or say hello with resume: true to continue it`, { fatal: true });
    const isNew = this.sessions.size === 0 && this.lastCompleteStep === null;
    const session = `s-${randomBytes(6).toString('hex')}`;
    const prev = this.sessions.get(h.rank);
    const takenFrom = prev && prev.conn !== conn ? prev.conn : undefined;
    if (takenFrom !== undefined) {
      this.takenOver.add(`${takenFrom}/${h.rank}`);
      if (this.takenOver.size > TAKEN_OVER_KEEP) this.takenOver.delete(this.takenOver.values().next().value as string);
    }
    if (conn !== undefined) this.takenOver.delete(`${conn}/${h.rank}`); // a hello takes it back
    prev?.assembler.discard();
    const chunkBudget = { take: (n: number) => this.budget.take(this.runId, n, 'this chunk'), give: (n: number) => this.budget.give(this.runId, n) };
    this.sessions.set(h.rank, { session, assembler: new StepAssembler(this.limits, h.checksum !== false, chunkBudget), checksum: h.checksum !== false, conn });
    this.outbox.forget(h.rank);
    this.pipeline.onHello?.(h);
    return { session, resume: this.lastCompleteStep === null ? null : { last_step: this.lastCompleteStep }, isNew, takenFrom };
  }

  /** The session of `rank` if it belongs to `conn` (undefined: in-process callers, no connection check). */
  private sessionFor(rank: number, conn: string | undefined): RankSession {
    const s = this.sessions.get(rank);
    if (s && (conn === undefined || s.conn === undefined || s.conn === conn)) return s;
    if (conn !== undefined && this.takenOver.has(`${conn}/${rank}`))
      throw new ProtocolError('E_SESSION', `the session of run ${this.runId} rank ${rank} was taken over by a hello on another connection`, { fatal: true });
    throw noSession(this.runId, rank);
  }

  /** A validated step chunk. Returns the reply when the chunk completes the step, else null. */
  step(msg: Message<StepHeader>, nowMs: number, conn?: string): StepReply | null {
    return this.startStep(msg, nowMs, conn, false).commit();
  }

  /**
   * A step chunk in two parts: what must happen on arrival (session, assembly, budget, and with ingest
   * workers the hand-over of the rank step), and commit(), which merges, finalises and builds the reply.
   * With `parallel`, commit() may be called only once `wait` has settled, and in arrival order.
   */
  startStep(msg: Message<StepHeader>, nowMs: number, conn?: string, parallel = true): StartedStep {
    const h = msg.header;
    this.checkStore();
    const s = this.sessionFor(h.rank, conn);
    if (h.world_size !== this.worldSize) throw new ProtocolError('E_RANK', `run ${this.runId} has world_size ${this.worldSize}, step says ${h.world_size}`);
    // A checkpoint the shim saved (header `checkpoint: {step, path}`): the controller certifies it later.
    const ck = (h as { checkpoint?: { step?: unknown; path?: unknown } }).checkpoint;
    const checkpoint = () => ck && Number.isInteger(ck.step) && typeof ck.path === 'string' && this.pipeline.onCheckpoint?.(ck.step as number, ck.path);
    if (!parallel) checkpoint();
    const atCommit = parallel ? checkpoint : () => undefined; // in order with the controller's other inputs
    if (h.sketch) return { wait: null, commit: () => (atCommit(), this.sketchStep(msg, s.checksum, nowMs)) };
    const before = s.assembler.pending;
    const completeBefore = s.assembler.lastComplete;
    const done = s.assembler.add(msg);
    if (before !== null && before !== h.step) this.log.warn({ run_id: this.runId, rank: h.rank, step: before }, 'incomplete step discarded: a newer step started');
    if (!done) return { wait: null, commit: () => (atCommit(), null) };
    const data = toStepData(done, this.trainer, nowMs);
    // A rank step the statistics keep until the step's last rank is in is charged to the memory budget.
    // The rank that completes a step is not charged (its step finalises now), so a full budget never blocks the ranks it waits for.
    const held = this.charged.get(h.step);
    let cost = 0;
    if (this.worldSize > 1 && this.pipeline.addRankStep && h.step > this.finalHigh && (held?.ranks.size ?? 0) + 1 < this.worldSize) {
      cost = PENDING_STEP_OVERHEAD + done.received.tokens * 16;
      try {
        this.budget.take(this.runId, cost, `step ${h.step} of rank ${h.rank}, waiting for the other ranks`);
      } catch (e) {
        s.assembler.lastComplete = completeBefore; // refused, not received: a resend later is accepted (not E_DUPLICATE)
        throw e;
      }
      if (held) (held.bytes += cost), held.ranks.add(h.rank);
      else this.charged.set(h.step, { bytes: cost, ranks: new Set([h.rank]) });
    }
    this.lastCompleteStep = Math.max(this.lastCompleteStep ?? -1, h.step);
    const job = parallel ? this.pipeline.startRankStep?.(data) : undefined;
    let result: unknown, failed: unknown;
    const wait = job ? job.then((r) => void (result = r), (e) => void (failed = e ?? new Error('ingest failed'))) : null;
    if (job) this.inflight++;
    const commit = (): StepReply => {
      if (job) {
        this.inflight--;
        this.checkStore(); // a store fault since this step arrived: E_STORE, as it would have been then
      }
      atCommit();
      if (failed !== undefined) this.workerFailed(failed, s, h.step, h.rank, completeBefore, cost);
      const directive = this.ingestStep(data, result);
      this.checkStore();
      // The stats pass already counted the masks; count here only when it did not run (no stats, late step).
      setSlices(done.received, this.counted ?? countSlices(data.completionMask, data.toolMask, data.offsets));
      return { directive: toWire(directive), received: done.received, ...this.replyState() };
    };
    return { wait, commit };
  }

  /** An ingest worker died with this rank step: undo its receipt so a resend is accepted, and say so (E_WORKER). */
  private workerFailed(e: unknown, s: RankSession, step: number, rank: number, completeBefore: number, cost: number): never {
    if ((e as { code?: string }).code !== 'E_WORKER') throw e; // the worker's own exception: as in-thread
    const retryable = s.assembler.lastComplete === step; // no later step of this rank accepted meanwhile
    if (retryable) s.assembler.lastComplete = completeBefore;
    const held = this.charged.get(step);
    if (cost && held?.ranks.delete(rank)) (held.bytes -= cost), this.budget.give(this.runId, cost);
    throw new ProtocolError('E_WORKER', `${(e as Error).message}${retryable ? '; resend the step' : ''}`, { retryable });
  }

  /** Sketch mode (docs/sketch.md): one message holds every rank's data, already reduced by the shim. */
  private sketchStep(msg: Message<StepHeader>, checksum: boolean, nowMs: number): StepReply {
    const data = decodeSketchStep(msg, this.trainer, nowMs);
    this.sketch = true;
    this.lastCompleteStep = Math.max(this.lastCompleteStep ?? -1, data.step);
    this.pipeline.addSketchStep?.(data);
    this.current = data.step;
    try {
      this.finalize(nowMs);
    } finally {
      this.current = null;
    }
    this.checkStore();
    const directive = this.takeDirective(0, data.step); // one message for all ranks: rank 0 relays (shim collective)
    const received = emptyReceived(checksum);
    addChunk(received, data.tokens, data.nSeqs, msg.frames);
    setSlices(received, data.sliceCounts);
    return { directive: toWire(directive), received, ...this.replyState() };
  }

  private replyState(): { metrics: Record<string, number | null>; metrics_step: number | null; recorded_through: number | null } {
    return { metrics: this.metrics, metrics_step: this.metricsStep, recorded_through: this.pipeline.recordedThrough?.() ?? null };
  }

  /**
   * The glue for one assembled rank step: stats → (finalised steps) → detect/policy → store.
   * Returns the directive for this rank's reply: the oldest control directive it has not received, else a no-op.
   */
  ingestStep(data: StepData, started?: unknown): Directive {
    const counts = this.pipeline.addRankStep?.(data, started); // stats/: accumulate; views are valid only in this call
    this.counted = typeof counts === 'object' && counts !== null ? counts : null; // a hook may return anything
    this.current = data.step;
    try {
      this.finalize(data.receivedAt);
    } finally {
      this.current = null;
    }
    return this.takeDirective(data.rank, data.step);
  }

  /** The reply's directive: the oldest control directive this rank has not received, else the controller's
   *  no-op (which carries the certified/rejected checkpoints the shim protects). */
  private takeDirective(rank: number, step: number): Directive {
    return this.outbox.take(rank, step) ?? this.pipeline.noop?.(step) ?? noop(this.runId, step);
  }

  /**
   * The periodic timeout check. Skipped while rank steps are with ingest workers: their steps must not time out
   * under them (in-thread, a step is never between arrival and ingest); each commit checks timeouts anyway.
   */
  tick(nowMs: number): void {
    if (this.inflight === 0) this.finalize(nowMs);
  }

  /** Finalise whatever is ready (also called periodically, for steps with missing ranks). */
  finalize(nowMs: number): StepResult[] {
    const results = this.pipeline.finalizeReady?.(nowMs) ?? [];
    for (const r of results) {
      // apply_at_step leaves every rank a reply to meet it (the controller honours minApplyAt; others are raised here).
      const minApplyAt = this.outbox.minApplyAt(this.current);
      let d = this.pipeline.onStepResult?.(r, { minApplyAt }) ?? null; // detect/ + policy/
      if (d && d.action !== 'noop') {
        if (d.apply_at_step < minApplyAt) d = { ...d, apply_at_step: minApplyAt };
        this.outbox.push(d);
      }
      this.pipeline.onFinalized?.(r, d); // store/
      this.metrics = { ...headlineMetrics(r), ...this.pipeline.findingMetrics?.() };
      this.metricsStep = r.step;
      this.finalHigh = Math.max(this.finalHigh, r.step);
    }
    // Steps final now (or late: never kept) give their budget back.
    for (const [step, held] of this.charged) {
      if (step > this.finalHigh) continue;
      this.budget.give(this.runId, held.bytes);
      this.charged.delete(step);
    }
    return results;
  }

  ack(a: AckHeader, conn?: string): void {
    this.checkStore();
    this.sessionFor(a.rank, conn);
    this.pipeline.onAck?.(a);
  }

  /** bye: the session ends (only its own connection ends it); what is stored is made durable first. */
  bye(rank: number, conn?: string): number | null | Promise<number | null> {
    const s = this.sessions.get(rank);
    if (s && (conn === undefined || s.conn === undefined || s.conn === conn)) {
      s.assembler.discard();
      this.sessions.delete(rank);
    }
    const flushed = this.failed ? undefined : this.pipeline.onBye?.(rank);
    const recorded = () => this.pipeline.recordedThrough?.() ?? null;
    return flushed instanceof Promise ? flushed.then(recorded, recorded) : recorded();
  }

  /** The run store failed: every message of the run gets E_STORE until a hello reopens it (registry). */
  get failed(): Error | null {
    return this.pipeline.storeFault?.() ?? null;
  }

  private checkStore(): void {
    const f = this.failed;
    if (f)
      throw new ProtocolError('E_STORE', `run ${this.runId}: the run store failed (${f.message}); steps after recorded_through ${this.pipeline.recordedThrough?.() ?? 'none'} are not recorded. Say hello to reopen the run from what is stored`, { fatal: true });
  }

  /** Whether `conn` holds a session of this run. */
  hasConn(conn: string): boolean {
    for (const s of this.sessions.values()) if (s.conn === conn) return true;
    return false;
  }

  get activeRanks(): number {
    return this.sessions.size;
  }

  async close(): Promise<void> {
    this.budget.release(this.runId);
    await this.pipeline.close?.();
  }
}

export function noSession(runId: string, rank: number): ProtocolError {
  return new ProtocolError('E_NO_SESSION', `no session for run ${runId} rank ${rank}: send hello first`, { fatal: true });
}

export function noop(runId: string, step: number): Directive {
  return { id: `${runId}/${step}/noop`, action: 'noop', step, apply_at_step: step + 1, params: {}, reason: '', evidence: {} };
}

const toWire = (d: Directive): WireDirective => ({
  id: d.id,
  action: d.action,
  step: d.step,
  // step + lag can pass 2^53-1 (a client may send step 2^53-1); a reply must stay a valid uint (fuzz seed 20240601 case 35355).
  apply_at_step: Math.min(d.apply_at_step, Number.MAX_SAFE_INTEGER),
  params: d.params,
  reason: d.reason,
  evidence: d.evidence,
});
