// The engine's ZeroMQ ROUTER: receive → decode/validate → dispatch to runs → reply by identity.
// Nothing a client sends can stop the loop: every failure becomes an `error` reply.
import { Router } from 'zeromq';
import type { Logger } from 'pino';
import { decodeMessage, encodeHeader, encodeMessage, type Message } from '../protocol/codec.ts';
import { ProtocolError } from '../protocol/errors.ts';
import { CLIENT_TYPES, type AckHeader, type ByeHeader, type HelloHeader, type Limits, type StepHeader } from '../protocol/messages.ts';
import { DEFAULT_LIMITS, PROTOCOL_MAJOR, PROTOCOL_MINOR, refOf } from '../protocol/validate.ts';
import { VERSION } from '../version.ts';
import type { PipelineFactory } from '../engine/pipeline.ts';
import { RunRegistry } from '../engine/registry.ts';
import { noSession, type StepReply } from '../engine/run.ts';
import { DIRECTIVE_LAG } from '../engine/outbox.ts';
import { DEFAULT_STEP_LIMITS } from '../engine/assembler.ts';
import { FairQueue, queueKey } from './fairqueue.ts';
import { ReplyLine } from './replyline.ts';
import { setImmediate as nextTurn } from 'node:timers/promises';

export const DEFAULT_ENDPOINT = 'tcp://127.0.0.1:5599';
const isRawStep = (m: Message): boolean => m.header.type === 'step' && !(m.header as StepHeader).sketch;
const V = [PROTOCOL_MAJOR, PROTOCOL_MINOR];

export interface ServerOptions {
  /** ZeroMQ endpoint to bind (tcp/ipc/inproc); tcp port `*` or `0` picks a free port. */
  endpoint?: string;
  limits?: Partial<Limits>;
  /** Delay every reply by this many ms (tests of slow engines). */
  delayMs?: number;
  log: Logger;
  factory?: PipelineFactory;
  runDir?: string;
  /** Serve options passed to pipelines. */
  options?: Record<string, unknown>;
  /** How often to finalise timed-out steps (ms). */
  tickMs?: number;
  /** Open runs at most (`--max-runs`, default 64) and when a run with sessions counts as idle (`--run-idle-ms`): engine/registry.ts. */
  maxRuns?: number;
  runIdleMs?: number;
  /** Memory budget for incomplete steps (engine/budget.ts): in total, and per run. */
  maxPendingBytes?: number;
  maxRunPendingBytes?: number;
  /** Runs one connection may hold sessions in; run directory retention (engine/registry.ts). */
  maxRunsPerConn?: number;
  retain?: { runs?: number; days?: number };
  /** Extra Router options, e.g. CURVE server keys (transport/curve.ts). */
  socketOptions?: Record<string, unknown>;
  /** `--record`: gets every received message, as received (capture/, ui/serve-hooks.ts). */
  recorder?: { write(frames: readonly Uint8Array[]): void } | null;
}

export interface ServerCounters {
  messages: number;
  steps: number;
  errors: number;
  bytes: number;
}

export class EngineServer {
  readonly limits: Limits;
  readonly registry: RunRegistry;
  readonly counters: ServerCounters = { messages: 0, steps: 0, errors: 0, bytes: 0 };
  /** The endpoint actually bound (real port for tcp `*`/0). */
  endpoint = '';
  private sock: Router | null = null;
  private loop: Promise<void> | null = null;
  private sending: Promise<unknown> = Promise.resolve();
  private delayed = new Set<NodeJS.Timeout>();
  private tick: NodeJS.Timeout | null = null;
  /** Received messages waiting for their run's turn (transport/fairqueue.ts). */
  private readonly fair = new FairQueue();
  private working = false;
  /** Replies in arrival order while ingest workers hold steps (transport/replyline.ts). */
  private readonly line = new ReplyLine();
  private closing = false;
  private resumeReader: (() => void) | null = null;
  private readonly log: Logger;

  constructor(private readonly opts: ServerOptions) {
    this.limits = { ...DEFAULT_LIMITS, ...DEFAULT_STEP_LIMITS, ...opts.limits };
    this.log = opts.log;
    this.registry = new RunRegistry({ limits: this.limits, log: opts.log, factory: opts.factory ?? (() => ({})), runDir: opts.runDir ?? 'runs', options: opts.options, maxRuns: opts.maxRuns, runIdleMs: opts.runIdleMs, maxPendingBytes: opts.maxPendingBytes, maxRunPendingBytes: opts.maxRunPendingBytes, maxRunsPerConn: opts.maxRunsPerConn, retain: opts.retain });
  }

  async start(): Promise<string> {
    const requested = this.opts.endpoint ?? DEFAULT_ENDPOINT;
    const sock = new Router({ maxMessageSize: this.limits.max_message_bytes, linger: 0, sendHighWaterMark: 10_000, receiveHighWaterMark: 10_000, ...this.opts.socketOptions });
    await sock.bind(requested.replace(/^(tcp:\/\/[^/]+):0$/, '$1:*'));
    this.sock = sock;
    this.endpoint = sock.lastEndpoint ?? requested;
    this.loop = this.receive(sock);
    this.tick = setInterval(() => this.registry.tick(Date.now()), this.opts.tickMs ?? 1000);
    this.tick.unref();
    this.log.info({ endpoint: this.endpoint, limits: this.limits, version: VERSION }, 'engine listening');
    return this.endpoint;
  }

  private async receive(sock: Router): Promise<void> {
    try {
      for await (const [id, ...frames] of sock) {
        let bytes = 0;
        for (const f of frames) bytes += f.byteLength;
        this.fair.push(queueKey(id, frames, this.limits.max_header_bytes), { id, frames, bytes });
        void this.work();
        if (this.fair.full) await new Promise<void>((r) => (this.resumeReader = r));
      }
    } catch (e) {
      if (!sock.closed) this.log.error({ err: e }, 'receive loop failed');
    }
  }

  /** Handle queued messages one run at a time, yielding between messages so the reader can queue more. */
  private async work(): Promise<void> {
    if (this.working) return;
    this.working = true;
    try {
      for (let q = this.fair.shift(); q; q = this.fair.shift()) {
        this.handle(q.id, q.frames);
        if (this.resumeReader && !this.fair.full) {
          this.resumeReader();
          this.resumeReader = null;
        }
        await nextTurn();
        await this.line.hasRoom(() => this.sock !== null);
        if (!this.sock) break;
      }
    } finally {
      this.working = false;
    }
  }

  /** One incoming message. Synchronous: replies are queued, never awaited here (a step's may wait on its ingest worker). */
  handle(id: Buffer, frames: Buffer[]): void {
    this.counters.messages++;
    this.opts.recorder?.write(frames);
    for (const f of frames) this.counters.bytes += f.byteLength;
    let msg: Message | null = null;
    try {
      msg = decodeMessage(frames, this.limits);
      const m = msg;
      // Only a raw step starts while earlier steps wait on workers; anything else waits for their replies.
      if (this.line.mustQueue(isRawStep(m))) this.line.queue(() => this.guard(id, m, () => this.dispatch(id, m)));
      else this.dispatch(id, msg);
    } catch (e) {
      const m = msg;
      this.line.inOrder(() => this.fail(id, m, e));
    }
  }

  private guard(id: Buffer, msg: Message | null, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.fail(id, msg, e);
    }
  }

  private fail(id: Buffer, msg: Message | null, e: unknown): void {
    const pe = e instanceof ProtocolError ? e : new ProtocolError('E_INTERNAL', `engine failure: ${(e as Error)?.message ?? e}`, { cause: e });
    if (pe.code === 'E_INTERNAL') this.log.error({ err: e, ref: pe.ref }, 'internal error handling a message');
    if (msg && Object.keys(pe.ref).length === 0) pe.ref = refOf(msg.header as Record<string, unknown>);
    if (pe.ref.type === 'hello' || pe.code === 'E_VERSION') pe.fatal = true;
    this.sendError(id, pe);
  }

  private dispatch(id: Buffer, msg: Message): void {
    const h = msg.header;
    if (!CLIENT_TYPES.has(h.type) || (h.type === 'ack' && 'of' in h))
      throw new ProtocolError('E_UNKNOWN_TYPE', `the engine does not accept ${h.type === 'ack' ? 'an engine-form ack' : `"${h.type}"`} from a client`);
    switch (h.type) {
      case 'hello':
        return this.onHello(id, h as HelloHeader);
      case 'step':
        return this.onStep(id, msg as Message<StepHeader>);
      case 'ack':
        return this.onAck(id, h as AckHeader);
      case 'bye':
        return this.onBye(id, h as ByeHeader);
    }
  }

  private onHello(id: Buffer, h: HelloHeader): void {
    const run = this.registry.forHello(h, connOf(id));
    const { session, resume, isNew, takenFrom } = run.hello(h, connOf(id));
    if (takenFrom !== undefined) this.log.warn({ run_id: h.run_id, rank: h.rank, from_conn: takenFrom, to_conn: connOf(id) }, 'session taken over by a new hello (the old connection gets E_SESSION)');
    this.log.info({ run_id: h.run_id, rank: h.rank, world_size: h.world_size, trainer: h.trainer, mode: h.mode ?? 'raw', session, new_run: isNew, resume: h.resume, client: h.client }, 'hello');
    this.reply(id, {
      type: 'welcome', version: V, run_id: h.run_id, rank: h.rank, session,
      engine: { name: 'tailguard', version: VERSION }, limits: { ...this.limits, max_runs: this.registry.maxRuns }, resume, directive_lag: DIRECTIVE_LAG,
    });
  }

  private onStep(id: Buffer, msg: Message<StepHeader>): void {
    const h = msg.header;
    const run = this.registry.get(h.run_id);
    if (!run) throw noSession(h.run_id, h.rank);
    const started = run.startStep(msg, Date.now(), connOf(id));
    const finish = () => this.guard(id, msg, () => this.stepReply(id, h, started.commit()));
    if (started.wait) this.line.started(started.wait, finish); // an ingest worker has the rank step
    else this.line.inOrder(finish);
  }

  private stepReply(id: Buffer, h: StepHeader, out: StepReply | null): void {
    if (!out) return;
    this.counters.steps++;
    this.log.debug({ run_id: h.run_id, rank: h.rank, step: h.step, tokens: out.received.tokens, slices: out.received.slices }, 'step');
    this.reply(id, { type: 'directive', version: V, run_id: h.run_id, rank: h.rank, step: h.step, ...out });
  }

  private onAck(id: Buffer, h: AckHeader): void {
    const run = this.registry.get(h.run_id);
    if (!run) throw noSession(h.run_id, h.rank);
    run.ack(h, connOf(id));
    this.log.info({ run_id: h.run_id, rank: h.rank, directive_id: h.directive_id, step: h.step, applied: h.applied, changes: h.changes, refused: h.refused }, 'ack');
  }

  private onBye(id: Buffer, h: ByeHeader): void {
    const ack = (recorded: number | null) => {
      this.log.info({ run_id: h.run_id, rank: h.rank, last_step: h.last_step, stats: h.stats, recorded_through: recorded }, 'bye');
      this.reply(id, { type: 'ack', version: V, of: 'bye', run_id: h.run_id, rank: h.rank, recorded_through: recorded });
    };
    const recorded = this.registry.get(h.run_id)?.bye(h.rank, connOf(id)) ?? null;
    if (recorded instanceof Promise) void recorded.then(ack); // --commit async: the ack waits for the flush
    else ack(recorded);
  }

  private sendError(id: Buffer, e: ProtocolError): void {
    this.counters.errors++;
    this.log.warn({ code: e.code, ref: e.ref, fatal: e.fatal }, e.detail);
    const ref = Object.keys(e.ref).length ? { ref: e.ref } : {};
    this.reply(id, { type: 'error', version: V, code: e.code, message: e.detail, fatal: e.fatal, ...ref, ...(e.retryable && { retryable: true }) });
  }

  private reply(id: Buffer, header: Record<string, unknown>): void {
    const frames = [id, encodeHeader(header)];
    const delay = this.opts.delayMs ?? 0;
    if (delay > 0) {
      const t = setTimeout(() => {
        this.delayed.delete(t);
        this.enqueue(frames);
      }, delay);
      this.delayed.add(t);
    } else this.enqueue(frames);
  }

  // zeromq allows one send in flight per socket: chain them. A reply to a vanished peer is dropped by ROUTER.
  private enqueue(frames: Buffer[]): void {
    const sock = this.sock;
    if (!sock || sock.closed) return;
    this.sending = this.sending
      .then(() => (sock.closed ? undefined : sock.send(frames)))
      .catch((e) => this.log.warn({ err: e }, 'reply not sent'));
  }

  /** Stop receiving, flush queued replies, close the socket and every run's pipeline. */
  async close(): Promise<void> {
    const sock = this.sock;
    if (!sock || this.closing) return;
    this.closing = true;
    this.fair.clear();
    // Steps with an ingest worker finish first (their commits write the store), for 10 s at most.
    await this.line.drain(10_000);
    this.sock = null;
    this.resumeReader?.();
    if (this.tick) clearInterval(this.tick);
    for (const t of this.delayed) clearTimeout(t);
    this.delayed.clear();
    await Promise.race([this.sending, new Promise((r) => setTimeout(r, 1000))]);
    sock.close();
    await this.loop;
    await this.registry.close();
    this.log.info({ ...this.counters }, 'engine stopped');
  }
}

/** A connection's name: its ROUTER routing id. */
const connOf = (id: Buffer): string => id.toString('hex');

// Re-exported for tests and clients written in TypeScript.
export { encodeMessage };
