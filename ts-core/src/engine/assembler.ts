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
  chunks: Message<StepHeader>[];
  received: Received;
}

export class StepAssembler {
  /** Highest step completed since the last hello (E_DUPLICATE below or at it). */
  lastComplete = -1;
  private cur: PartialStep | null = null;
  private scratch = new Map<string, TypedArray>();

  constructor(
    private readonly limits: Limits,
    private readonly checksum: boolean,
  ) {}

  /** The step currently being assembled, if any (for logs). */
  get pending(): number | null {
    return this.cur?.step ?? null;
  }

  /** Add a validated chunk. Returns the whole step when this chunk completes it, else null. */
  add(msg: Message<StepHeader>): Assembled | null {
    const h = msg.header;
    const names = h.buffers.map((b) => b.name).sort().join(',');
    let cur = this.cur;
    try {
      if (h.step <= this.lastComplete) throw new ProtocolError('E_DUPLICATE', `step ${h.step} is already complete for this rank (last complete ${this.lastComplete})`);
      if (cur && cur.step !== h.step) {
        if (h.chunk.index !== 0) throw new ProtocolError('E_CHUNK', `chunk ${h.chunk.index} of step ${h.step} while step ${cur.step} is incomplete`);
        cur = this.cur = null; // a new step supersedes an incomplete one (the server logs it)
      }
      if (!cur) {
        if (h.chunk.index !== 0) throw new ProtocolError('E_CHUNK', `step ${h.step} starts with chunk ${h.chunk.index}, expected 0`);
        cur = this.cur = { step: h.step, count: h.chunk.count, next: 0, names, tokens: 0, chunks: [], received: emptyReceived(this.checksum) };
      } else {
        if (h.chunk.index < cur.next) throw new ProtocolError('E_DUPLICATE', `chunk ${h.chunk.index} of step ${h.step} was already received`);
        if (h.chunk.index > cur.next) throw new ProtocolError('E_CHUNK', `chunk ${h.chunk.index} of step ${h.step} arrived before chunk ${cur.next}`);
        if (h.chunk.count !== cur.count) throw new ProtocolError('E_CHUNK', `chunk.count ${h.chunk.count} differs from ${cur.count} in earlier chunks`);
        if (names !== cur.names) throw new ProtocolError('E_CHUNK', `buffer names [${names}] differ from earlier chunks [${cur.names}]`);
      }
      cur.tokens += h.tokens;
      if (cur.tokens > this.limits.max_tokens_per_step)
        throw new ProtocolError('E_TOO_LARGE', `step ${h.step} has ${cur.tokens} tokens so far, exceeds max_tokens_per_step ${this.limits.max_tokens_per_step}`);
    } catch (e) {
      this.cur = null; // a rejected chunk discards its partial step
      throw e;
    }
    addChunk(cur.received, h.tokens, h.n_seqs, msg.frames); // slice counts: Run.step, once per step
    cur.chunks.push(msg);
    cur.next++;
    if (cur.next < cur.count) return null;
    this.cur = null;
    this.lastComplete = h.step;
    const first = cur.chunks[0].header;
    if (cur.chunks.length === 1) return { header: first, buffers: msg.buffers, received: cur.received };
    return { header: first, buffers: this.concat(cur.chunks), received: cur.received };
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
