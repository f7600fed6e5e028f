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


interface RankSession {
  session: string;
  assembler: StepAssembler;
  checksum: boolean;
}

export interface StepReply {
  directive: WireDirective;
  received: Received;
  metrics: Record<string, number | null>;
  metrics_step: number | null;
}

export class Run {
  readonly worldSize: number;
  readonly trainer: string;
  private readonly sessions = new Map<number, RankSession>();
  /** Highest step any rank completed (welcome.resume). */
  lastCompleteStep: number | null = null;
  private metrics: Record<string, number | null> = {};
  private metricsStep: number | null = null;
  /** A directive from the controller, waiting for rank 0's next reply. */
  private pending: Directive | null = null;
  /** Mask counts of the step ingestStep just passed to stats (null: stats did not count it). */
  private counted: MaskCounts | null = null;

  constructor(
    readonly runId: string,
    hello: HelloHeader,
    readonly pipeline: Pipeline,
    private readonly limits: Limits,
    private readonly log: Logger,
  ) {
    this.worldSize = hello.world_size;
    this.trainer = hello.trainer;
    this.lastCompleteStep = pipeline.resumeStep?.() ?? null;
  }

  /** hello: (re)create the rank's session; its step history restarts. */
  hello(h: HelloHeader): { session: string; resume: { last_step: number | null } | null; isNew: boolean } {
    if (h.world_size !== this.worldSize)
      throw new ProtocolError('E_RANK', `run ${this.runId} has world_size ${this.worldSize}, hello says ${h.world_size}`, { fatal: true });
    const isNew = this.sessions.size === 0 && this.lastCompleteStep === null;
    const session = `s-${randomBytes(6).toString('hex')}`;
    this.sessions.set(h.rank, { session, assembler: new StepAssembler(this.limits, h.checksum !== false), checksum: h.checksum !== false });
    this.pipeline.onHello?.(h);
    return { session, resume: this.lastCompleteStep === null ? null : { last_step: this.lastCompleteStep }, isNew };
  }

  /** A validated step chunk. Returns the reply when the chunk completes the step, else null. */
  step(msg: Message<StepHeader>, nowMs: number): StepReply | null {
    const h = msg.header;
    const s = this.sessions.get(h.rank);
    if (!s) throw noSession(this.runId, h.rank);
    if (h.world_size !== this.worldSize) throw new ProtocolError('E_RANK', `run ${this.runId} has world_size ${this.worldSize}, step says ${h.world_size}`);
    // A checkpoint the shim saved (header `checkpoint: {step, path}`): the controller certifies it later.
    const ck = (h as { checkpoint?: { step?: unknown; path?: unknown } }).checkpoint;
    if (ck && Number.isInteger(ck.step) && typeof ck.path === 'string') this.pipeline.onCheckpoint?.(ck.step as number, ck.path);
    if (h.sketch) return this.sketchStep(msg, s.checksum, nowMs);
    const before = s.assembler.pending;
    const done = s.assembler.add(msg);
    if (before !== null && before !== h.step) this.log.warn({ run_id: this.runId, rank: h.rank, step: before }, 'incomplete step discarded: a newer step started');
    if (!done) return null;
    this.lastCompleteStep = Math.max(this.lastCompleteStep ?? -1, h.step);
    const data = toStepData(done, this.trainer, nowMs);
    const directive = this.ingestStep(data);
    // The stats pass already counted the masks; count here only when it did not run (no stats, late step).
    setSlices(done.received, this.counted ?? countSlices(data.completionMask, data.toolMask, data.offsets));
    return { directive: toWire(directive), received: done.received, metrics: this.metrics, metrics_step: this.metricsStep };
  }

  /** Sketch mode (docs/sketch.md): one message holds every rank's data, already reduced by the shim. */
  private sketchStep(msg: Message<StepHeader>, checksum: boolean, nowMs: number): StepReply {
    const data = decodeSketchStep(msg, this.trainer, nowMs);
    this.lastCompleteStep = Math.max(this.lastCompleteStep ?? -1, data.step);
    this.pipeline.addSketchStep?.(data);
    this.finalize(nowMs);
    const directive = this.takeDirective(data.step, true); // one message for all ranks: it is rank 0's
    const received = emptyReceived(checksum);
    addChunk(received, data.tokens, data.nSeqs, msg.frames);
    setSlices(received, data.sliceCounts);
    return { directive: toWire(directive), received, metrics: this.metrics, metrics_step: this.metricsStep };
  }

  /**
   * The glue for one assembled rank step: stats → (finalised steps) → detect/policy → store.
   * Returns the directive for this rank's reply (a no-op unless the controller queued one for rank 0).
   */
  ingestStep(data: StepData): Directive {
    const counts = this.pipeline.addRankStep?.(data); // stats/: accumulate; views are valid only in this call
    this.counted = typeof counts === 'object' && counts !== null ? counts : null; // a hook may return anything
    this.finalize(data.receivedAt);
    return this.takeDirective(data.step, data.rank === 0);
  }

  /** The reply's directive: the pending control directive when this reply may carry it (rank 0's), else the
   *  controller's no-op (which carries the certified/rejected checkpoints the shim protects). */
  private takeDirective(step: number, toRank0: boolean): Directive {
    const d = toRank0 ? this.pending : null;
    if (d) {
      this.pending = null;
      return d;
    }
    return this.pipeline.noop?.(step) ?? noop(this.runId, step);
  }

  /** Finalise whatever is ready (also called periodically, for steps with missing ranks). */
  finalize(nowMs: number): StepResult[] {
    const results = this.pipeline.finalizeReady?.(nowMs) ?? [];
    for (const r of results) {
      const d = this.pipeline.onStepResult?.(r) ?? null; // detect/ + policy/
      // The newest decision wins, but a warn never displaces a control directive still waiting for
      // rank 0 (in DDP several steps can finalise between two of rank 0's messages).
      if (d && d.action !== 'noop' && !(d.action === 'warn' && this.pending && this.pending.action !== 'warn')) this.pending = d;
      this.pipeline.onFinalized?.(r, d); // store/
      this.metrics = { ...headlineMetrics(r), ...this.pipeline.findingMetrics?.() };
      this.metricsStep = r.step;
    }
    return results;
  }

  ack(a: AckHeader): void {
    if (!this.sessions.has(a.rank)) throw noSession(this.runId, a.rank);
    this.pipeline.onAck?.(a);
  }

  bye(rank: number): void {
    this.sessions.delete(rank);
  }

  get activeRanks(): number {
    return this.sessions.size;
  }

  async close(): Promise<void> {
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
