// One rank's step copied once into a SharedArrayBuffer for an ingest worker (stats/ingest-pool.ts): the
// worker reads it, and the main thread keeps the same memory as the step's raw values for an exact
// rescan (select.ts). Received ZeroMQ buffers cannot be transferred, so this copy is the one cost of
// handing a step over. The buffers are pooled by size: a fresh allocation per step costs more than the copy.
import type { PairName, StepData } from '../types.ts';
import { PAIRS } from '../types.ts';

/** Byte offsets of a step's arrays inside its shared buffer (-1: absent). */
export interface SharedLayout {
  T: number;
  nSeqs: number;
  pairs: [PairName, number][];
  /** T zeros for an implicit pair the step has no values of (kept values must outlive the worker's scratch). */
  zeros: number;
  offsets: number;
  completionMask: number;
  toolMask: number;
  sliceIds: number;
  tokenIds: number;
  bytes: number;
}

/** What the worker needs besides the arrays (plain, structured-clonable). */
export interface SharedMeta {
  rank: number;
  step: number;
  implicit: PairName[];
  sliceNames?: string[];
  knobs: StepData['knobs'];
}

const align = (n: number) => (n + 7) & ~7;

export function layoutOf(d: StepData): SharedLayout {
  const T = d.completionMask.length, nSeqs = d.offsets.length - 1;
  let at = 0;
  const take = (bytes: number) => ((at = align(at)), (at += bytes), at - bytes);
  const pairs: [PairName, number][] = [];
  for (const p of PAIRS) if (d.pairs[p]) pairs.push([p, take(4 * T)]);
  const needZeros = (d.implicit ?? []).some((p) => !d.pairs[p]);
  const lay: SharedLayout = {
    T, nSeqs, pairs,
    zeros: needZeros ? take(4 * T) : -1,
    offsets: take(4 * (nSeqs + 1)),
    tokenIds: d.tokenIds ? take(4 * T) : -1,
    sliceIds: d.sliceIds && d.sliceNames ? take(2 * T) : -1,
    completionMask: take(T),
    toolMask: take(T),
    bytes: 0,
  };
  lay.bytes = align(at);
  return lay;
}

/** The one copy: the step's arrays into `sab` at `lay`'s offsets. */
export function copyIn(d: StepData, lay: SharedLayout, sab: SharedArrayBuffer): void {
  const { T } = lay;
  for (const [p, o] of lay.pairs) new Float32Array(sab, o, T).set(d.pairs[p]!);
  if (lay.zeros >= 0) new Float32Array(sab, lay.zeros, T).fill(0); // a pooled buffer holds an older step
  new Int32Array(sab, lay.offsets, lay.nSeqs + 1).set(d.offsets);
  if (lay.tokenIds >= 0) new Int32Array(sab, lay.tokenIds, T).set(d.tokenIds!);
  if (lay.sliceIds >= 0) new Uint16Array(sab, lay.sliceIds, T).set(d.sliceIds!);
  new Uint8Array(sab, lay.completionMask, T).set(d.completionMask);
  new Uint8Array(sab, lay.toolMask, T).set(d.toolMask);
}

/** The step as StepData viewing `sab` (the worker's side), and the zeros for implicit pairs. */
export function viewsOf(sab: SharedArrayBuffer, lay: SharedLayout, m: SharedMeta): { data: StepData; zeros?: Float32Array } {
  const { T } = lay;
  const pairs: StepData['pairs'] = {};
  for (const [p, o] of lay.pairs) pairs[p] = new Float32Array(sab, o, T);
  const data: StepData = {
    runId: '', rank: m.rank, worldSize: 0, step: m.step, trainer: '', pairs, implicit: m.implicit,
    completionMask: new Uint8Array(sab, lay.completionMask, T), toolMask: new Uint8Array(sab, lay.toolMask, T),
    offsets: new Int32Array(sab, lay.offsets, lay.nSeqs + 1), knobs: m.knobs, logs: {}, receivedAt: 0,
  };
  if (lay.tokenIds >= 0) data.tokenIds = new Int32Array(sab, lay.tokenIds, T);
  if (lay.sliceIds >= 0) (data.sliceIds = new Uint16Array(sab, lay.sliceIds, T)), (data.sliceNames = m.sliceNames);
  return { data, zeros: lay.zeros >= 0 ? new Float32Array(sab, lay.zeros, T) : undefined };
}

/** Shared buffers by power-of-two size, reused across steps. */
export class SharedPool {
  private free = new Map<number, SharedArrayBuffer[]>();
  constructor(private maxPerClass = 128) {}

  get(bytes: number): SharedArrayBuffer {
    let cap = 1 << 16;
    while (cap < bytes) cap *= 2;
    return this.free.get(cap)?.pop() ?? new SharedArrayBuffer(cap);
  }

  release(sab: SharedArrayBuffer): void {
    const cap = sab.byteLength;
    let list = this.free.get(cap);
    if (!list) this.free.set(cap, (list = []));
    if (list.length < this.maxPerClass) list.push(sab);
  }
}
