// Assembles the chunks of one rank's step into StepData. A single-chunk step is viewed in place
// (no copy); chunked steps are concatenated into per-rank scratch arrays reused across steps, so
// an assembled step's arrays are valid until this rank's next step completes.
import { PAIRS, type PairName, type StepData } from '../types.ts';
import { DTYPE_CTOR, type Message, type TypedArray } from '../protocol/codec.ts';
import { ProtocolError } from '../protocol/errors.ts';
import type { Limits, Received, StepHeader } from '../protocol/messages.ts';
import { STEP_BUFFERS } from '../protocol/validate.ts';
import { addChunk, emptyReceived } from './received.ts';

export interface Assembled {
  header: StepHeader; // chunk 0's header
  buffers: Record<string, TypedArray>;
  received: Received;
}

interface PartialStep {
  step: number;
  count: number;
  next: number;
  names: string;
  tokens: number;
  /** Buffer bytes of the chunks so far (max_step_bytes); held against the budget until the step completes. */
  bytes: number;
  chunks: Message<StepHeader>[];
  received: Received;
}

/** Defaults of the v1.1 step limits (welcome.limits; proto/README.md "Limits"). */
export const DEFAULT_STEP_LIMITS = { max_step_bytes: 512 * 1024 ** 2, max_step_chunks: 1024 } as const;

/** Where a partial step's chunks are charged (engine/budget.ts); take() throws E_BUDGET. */
export interface ChunkBudget {
  take(bytes: number): void;
  give(bytes: number): void;
}

export class StepAssembler {
  /** Highest step completed since the last hello (E_DUPLICATE below or at it). */
  lastComplete = -1;
  private cur: PartialStep | null = null;
  private scratch = new Map<string, TypedArray>();

  constructor(
    private readonly limits: Limits,
    private readonly checksum: boolean,
    private readonly budget: ChunkBudget | null = null,
  ) {}

  /** The step currently being assembled, if any (for logs). */
  get pending(): number | null {
    return this.cur?.step ?? null;
  }

  /** Add a validated chunk. Returns the whole step when this chunk completes it, else null. */
  add(msg: Message<StepHeader>): Assembled | null {
    const h = msg.header;
    const names = h.buffers.map((b) => b.name).sort().join(',');
    const bytes = frameBytes(msg);
    let cur = this.cur;
    const maxChunks = this.limits.max_step_chunks ?? DEFAULT_STEP_LIMITS.max_step_chunks;
    const maxBytes = this.limits.max_step_bytes ?? DEFAULT_STEP_LIMITS.max_step_bytes;
    try {
      if (h.chunk.count > maxChunks) throw new ProtocolError('E_TOO_LARGE', `step ${h.step} declares ${h.chunk.count} chunks, more than max_step_chunks ${maxChunks}`);
      if (h.step <= this.lastComplete) throw new ProtocolError('E_DUPLICATE', `step ${h.step} is already complete for this rank (last complete ${this.lastComplete})`);
      if (cur && cur.step !== h.step) {
        if (h.chunk.index !== 0) throw new ProtocolError('E_CHUNK', `chunk ${h.chunk.index} of step ${h.step} while step ${cur.step} is incomplete`);
        this.discard(); // a new step supersedes an incomplete one (the server logs it)
        cur = null;
      }
      if (!cur) {
        if (h.chunk.index !== 0) throw new ProtocolError('E_CHUNK', `step ${h.step} starts with chunk ${h.chunk.index}, expected 0`);
        cur = this.cur = { step: h.step, count: h.chunk.count, next: 0, names, tokens: 0, bytes: 0, chunks: [], received: emptyReceived(this.checksum) };
      } else {
        if (h.chunk.index < cur.next) throw new ProtocolError('E_DUPLICATE', `chunk ${h.chunk.index} of step ${h.step} was already received`);
        if (h.chunk.index > cur.next) throw new ProtocolError('E_CHUNK', `chunk ${h.chunk.index} of step ${h.step} arrived before chunk ${cur.next}`);
        if (h.chunk.count !== cur.count) throw new ProtocolError('E_CHUNK', `chunk.count ${h.chunk.count} differs from ${cur.count} in earlier chunks`);
        if (names !== cur.names) throw new ProtocolError('E_CHUNK', `buffer names [${names}] differ from earlier chunks [${cur.names}]`);
      }
      if (cur.tokens + h.tokens > this.limits.max_tokens_per_step)
        throw new ProtocolError('E_TOO_LARGE', `step ${h.step} has ${cur.tokens + h.tokens} tokens so far, exceeds max_tokens_per_step ${this.limits.max_tokens_per_step}`);
      if (cur.bytes + bytes > maxBytes)
        throw new ProtocolError('E_TOO_LARGE', `step ${h.step} has ${cur.bytes + bytes} buffer bytes so far, exceeds max_step_bytes ${maxBytes}`);
      // A chunk that completes the step is not held past this call: only earlier chunks are charged.
      if (h.chunk.index + 1 < h.chunk.count) this.budget?.take(bytes);
      cur.tokens += h.tokens;
      cur.bytes += bytes;
    } catch (e) {
      this.discard(); // a rejected chunk discards its partial step
      throw e;
    }
    addChunk(cur.received, h.tokens, h.n_seqs, msg.frames); // slice counts: Run.step, once per step
    cur.chunks.push(msg);
    cur.next++;
    if (cur.next < cur.count) return null;
    this.discard();
    this.lastComplete = h.step;
    const first = cur.chunks[0].header;
    if (cur.chunks.length === 1) return { header: first, buffers: msg.buffers, received: cur.received };
    return { header: first, buffers: this.concat(cur.chunks), received: cur.received };
  }

  /** Drop the partial step and give its chunks' bytes back to the budget. */
  discard(): void {
    const cur = this.cur;
    if (!cur) return;
    this.cur = null;
    const held = cur.chunks.reduce((n, c) => n + (c.header.chunk.index + 1 < c.header.chunk.count ? frameBytes(c) : 0), 0);
    if (held) this.budget?.give(held);
  }

  /** Concatenate per name into reused scratch (grown ×2 when short); offsets are rebased. */
  private concat(chunks: Message<StepHeader>[]): Record<string, TypedArray> {
    const out: Record<string, TypedArray> = {};
    for (const d of chunks[0].header.buffers) {
      const total = chunks.reduce((s, c) => s + c.buffers[d.name].length, 0) - (d.name === 'offsets' ? chunks.length - 1 : 0);
      const key = `${d.name}:${d.dtype}`;
      let s = this.scratch.get(key);
      if (!s || s.length < total) {
        s = new DTYPE_CTOR[d.dtype](Math.max(total, (s?.length ?? 0) * 2, 1024));
        this.scratch.set(key, s);
      }
      const dst = s.subarray(0, total) as TypedArray;
      let at = 0;
      if (d.name === 'offsets') {
        const o = dst as Int32Array;
        let base = 0;
        o[0] = 0;
        for (const c of chunks) {
          const src = c.buffers.offsets as Int32Array;
          for (let i = 1; i < src.length; i++) o[++at] = src[i] + base;
          base += c.header.tokens;
        }
      } else {
        for (const c of chunks) {
          const src = c.buffers[d.name];
          (dst as Uint8Array).set(src as Uint8Array, at);
          at += src.length;
        }
      }
      out[d.name] = dst;
    }
    return out;
  }
}

function frameBytes(m: Message<StepHeader>): number {
  let n = 0;
  for (const f of m.frames) n += f.byteLength; // buffer frames only
  return n;
}

/** Build the engine's StepData from an assembled step. */
export function toStepData(a: Assembled, trainer: string, receivedAt: number): StepData {
  const h = a.header;
  const b = a.buffers;
  const pairs: Partial<Record<PairName, Float32Array>> = {};
  for (const p of PAIRS) if (b[p]) pairs[p] = b[p] as Float32Array;
  const data: StepData = {
    runId: h.run_id,
    rank: h.rank,
    worldSize: h.world_size,
    step: h.step,
    trainer,
    pairs,
    implicit: (h.implicit ?? []) as PairName[],
    completionMask: b.completion_mask as Uint8Array,
    toolMask: b.tool_mask as Uint8Array,
    offsets: b.offsets as Int32Array,
    knobs: h.knobs ?? {},
    logs: (h.logs ?? {}) as StepData['logs'],
    receivedAt,
  };
  if (b.slice_ids) data.sliceIds = b.slice_ids as Uint16Array;
  if (h.slice_names) data.sliceNames = h.slice_names;
  if (b.advantages) data.advantages = b.advantages as Float32Array;
  if (b.rewards) data.rewards = b.rewards as Float32Array;
  if (b.group_ids) data.groupIds = b.group_ids as Int32Array;
  if (b.token_ids) data.tokenIds = b.token_ids as Int32Array;
  return data;
}

export const KNOWN_STEP_BUFFERS = Object.keys(STEP_BUFFERS);
