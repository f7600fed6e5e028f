// Stage D for a `step` with `sketch: true` (proto/README.md "Sketch payloads"): stateless, so the golden
// vectors and both decoders agree on it. Layout and field list must be the engine's own (stats/), so a
// shim built for another layout gets E_SKETCH_LAYOUT, never wrong numbers.
import { HIST_BINS, HIST_LAYOUT } from '../stats/hist.ts';
import { N_SUMS, SUMS_FIELDS } from '../stats/sums.ts';
import { BUILTIN_SLICES, PAIRS } from '../types.ts';
import type { TypedArray } from './messages.ts';
import { ProtocolError } from './errors.ts';
import { SCHEMAS, type Schema } from './schemas.ts';
import { HIST_CODINGS, HIST_DECODERS } from './histcoding.ts';
export { HIST_CODINGS, HIST_DECODERS, decodeHistRuns, decodeHistVarint, type HistCoding } from './histcoding.ts';

export const SKETCH_BUFFER = /^sketch\/([a-z_]+)\/([a-z_]+|user\/(?:0|[1-9][0-9]*))\/(hist|sums)$/;
/** User slices in a sketch step (`sketch/<pair>/user/<id>/...`, slice `user:<slice_names[id]>`): each is a
 * histogram per pair in the ranks' reduce and on the wire, so a step takes at most this many. */
export const SKETCH_MAX_USER_SLICES = 16;
export const SKETCH_PER_RANK = 'sketch/per_rank';
/** Fields of each `sketch/per_rank` row (step.schema.json per_rank.fields): what rank_outlier reads. */
export const PER_RANK_FIELDS = (SCHEMAS.step.properties!.per_rank.properties!.fields as Schema).const as readonly string[];
const bad = (msg: string) => new ProtocolError('E_SKETCH_LAYOUT', msg);
function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Throws E_SKETCH_LAYOUT / E_DTYPE / E_FRAME_LENGTH (first failure, in the README's order). */
export function checkSketchStep(h: Record<string, unknown>, buffers: Record<string, TypedArray>): void {
  const layout = h.hist as Record<string, unknown> | undefined;
  if (!layout || typeof layout !== 'object' || layout.exp_min !== HIST_LAYOUT.exp_min || layout.exp_max !== HIST_LAYOUT.exp_max || layout.mant_bits !== HIST_LAYOUT.mant_bits)
    throw bad(`hist layout ${JSON.stringify(layout)} != ${JSON.stringify(HIST_LAYOUT)}`);
  const coding = layout.coding ?? 'dense';
  if (!(HIST_CODINGS as readonly unknown[]).includes(coding)) throw bad(`hist.coding ${JSON.stringify(coding)} is not one of ${HIST_CODINGS.join(', ')}`);
  const fields = h.sums_fields;
  if (!Array.isArray(fields) || fields.length !== N_SUMS || fields.some((f, i) => f !== SUMS_FIELDS[i]))
    throw bad(`sums_fields must be [${SUMS_FIELDS.join(', ')}]`);
  const sc = h.slice_counts as Record<string, unknown> | undefined;
  for (const s of ['pre_tool', 'post_tool', 'tool_output'])
    if (!sc || typeof sc !== 'object' || !isCount(sc[s])) throw bad(`slice_counts.${s} must be a non-negative integer`);
  const user = (h.slice_names ?? []) as string[];
  if (user.length > SKETCH_MAX_USER_SLICES || new Set(user).size !== user.length) throw bad(`a sketch step takes at most ${SKETCH_MAX_USER_SLICES} distinct slice_names`);
  const have = new Map<string, number>(); // pair/slice -> 1 (hist) | 2 (sums)
  for (const [name, arr] of Object.entries(buffers)) {
    if (name === SKETCH_PER_RANK) {
      if (!(arr instanceof Float64Array)) throw new ProtocolError('E_DTYPE', `buffer ${name} must be f64`);
      continue; // checked after the sums buffers it is laid out by (checkPerRank)
    }
    const m = SKETCH_BUFFER.exec(name);
    if (!m) throw bad(`unexpected buffer ${name} in a sketch step`);
    const [, pair, slice, kind] = m;
    const known = (BUILTIN_SLICES as readonly string[]).includes(slice) || (slice.startsWith('user/') && Number(slice.slice(5)) < user.length);
    if (!(PAIRS as readonly string[]).includes(pair) || !known) throw bad(`unknown pair/slice in ${name} (a user slice id must be < slice_names.length)`);
    const key = `${pair}/${slice}`;
    if (kind === 'hist' && coding !== 'dense') {
      if (!(arr instanceof Uint8Array)) throw new ProtocolError('E_DTYPE', `buffer ${name} must be u8 (hist.coding ${coding})`);
      if (slice === 'all' && arr.length) throw bad(`${name} must be empty (${coding}: all = pre_tool + post_tool)`);
      HIST_DECODERS[coding as 'varint' | 'runs'](arr, name);
      have.set(key, (have.get(key) ?? 0) | 1);
      continue;
    }
    if (!(arr instanceof Float64Array)) throw new ProtocolError('E_DTYPE', `buffer ${name} must be f64`);
    const want = kind === 'hist' ? HIST_BINS : N_SUMS;
    if (arr.length !== want) throw new ProtocolError('E_FRAME_LENGTH', `buffer ${name} has ${arr.length} elements, want ${want}`);
    if (kind === 'hist') {
      for (let b = 0; b < arr.length; b++) if (!(arr[b] >= 0 && arr[b] <= Number.MAX_SAFE_INTEGER)) throw bad(`${name}[${b}] is not a count`);
    } else if (!(arr[0] >= 0 && arr[1] >= 0)) throw bad(`${name}: n and nonfinite must be counts`);
    have.set(key, (have.get(key) ?? 0) | (kind === 'hist' ? 1 : 2));
  }
  const pairs = new Set([...have.keys()].map((k) => k.split('/')[0]));
  for (const p of pairs)
    for (const sl of BUILTIN_SLICES) if (have.get(`${p}/${sl}`) !== 3) throw bad(`pair ${p} needs sketch/${p}/${sl}/hist and /sums`);
  for (const [key, got] of have) if (got !== 3) throw bad(`sketch/${key} needs both hist and sums`);
  checkPerRank(h, buffers[SKETCH_PER_RANK], have.size);
}

/** Step 6: `per_rank` and the `sketch/per_rank` buffer come together and agree with the `rows` sums buffers. */
function checkPerRank(h: Record<string, unknown>, arr: TypedArray | undefined, rows: number): void {
  const pr = h.per_rank as Record<string, unknown> | undefined;
  if (pr === undefined && arr === undefined) return;
  if (!pr || typeof pr !== 'object' || arr === undefined) throw bad('per_rank and the sketch/per_rank buffer must be sent together');
  const { ranks, fields, tokens } = pr;
  if (ranks !== h.world_size || !isCount(ranks)) throw bad(`per_rank.ranks ${JSON.stringify(ranks)} must equal world_size ${JSON.stringify(h.world_size)}`);
  if (!Array.isArray(fields) || fields.length !== PER_RANK_FIELDS.length || fields.some((f, i) => f !== PER_RANK_FIELDS[i]))
    throw bad(`per_rank.fields must be [${PER_RANK_FIELDS.join(', ')}]`);
  if (!Array.isArray(tokens) || tokens.length !== ranks || !tokens.every(isCount)) throw bad('per_rank.tokens must be ranks non-negative integers');
  const F = PER_RANK_FIELDS.length;
  const want = ranks * rows * F;
  if (arr.length !== want) throw new ProtocolError('E_FRAME_LENGTH', `buffer ${SKETCH_PER_RANK} has ${arr.length} elements, want ${want} (ranks × sums buffers × fields)`);
  for (let i = 0; i < arr.length; i += F) if (!(arr[i] >= 0)) throw bad(`${SKETCH_PER_RANK}: every n must be a count`);
}
