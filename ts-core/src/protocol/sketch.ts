// Stage D for a `step` with `sketch: true` (proto/README.md "Sketch payloads"): stateless, so the golden
// vectors and both decoders agree on it. Layout and field list must be the engine's own (stats/), so a
// shim built for another layout gets E_SKETCH_LAYOUT, never wrong numbers.
import { HIST_BINS, HIST_LAYOUT } from '../stats/hist.ts';
import { N_SUMS, SUMS_FIELDS } from '../stats/sums.ts';
import { BUILTIN_SLICES, PAIRS } from '../types.ts';
import type { TypedArray } from './messages.ts';
import { ProtocolError } from './errors.ts';

export const SKETCH_BUFFER = /^sketch\/([a-z_]+)\/([a-z_]+)\/(hist|sums)$/;
export const SKETCH_PER_RANK = 'sketch/per_rank';
const bad = (msg: string) => new ProtocolError('E_SKETCH_LAYOUT', msg);

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Throws E_SKETCH_LAYOUT / E_DTYPE / E_FRAME_LENGTH (first failure, in the README's order). */
export function checkSketchStep(h: Record<string, unknown>, buffers: Record<string, TypedArray>): void {
  const layout = h.hist as Record<string, unknown> | undefined;
  if (!layout || typeof layout !== 'object' || layout.exp_min !== HIST_LAYOUT.exp_min || layout.exp_max !== HIST_LAYOUT.exp_max || layout.mant_bits !== HIST_LAYOUT.mant_bits)
    throw bad(`hist layout ${JSON.stringify(layout)} != ${JSON.stringify(HIST_LAYOUT)}`);
  const fields = h.sums_fields;
  if (!Array.isArray(fields) || fields.length !== N_SUMS || fields.some((f, i) => f !== SUMS_FIELDS[i]))
    throw bad(`sums_fields must be [${SUMS_FIELDS.join(', ')}]`);
  const sc = h.slice_counts as Record<string, unknown> | undefined;
  for (const s of ['pre_tool', 'post_tool', 'tool_output'])
    if (!sc || typeof sc !== 'object' || !isCount(sc[s])) throw bad(`slice_counts.${s} must be a non-negative integer`);
  const have = new Map<string, number>(); // pair/slice -> 1 (hist) | 2 (sums)
  for (const [name, arr] of Object.entries(buffers)) {
    if (name === SKETCH_PER_RANK) {
      if (!(arr instanceof Float64Array)) throw new ProtocolError('E_DTYPE', `buffer ${name} must be f64`);
      continue; // optional attribution: (ranks, pair, slice, 4), not read by the engine yet
    }
    const m = SKETCH_BUFFER.exec(name);
    if (!m) throw bad(`unexpected buffer ${name} in a sketch step`);
    const [, pair, slice, kind] = m;
    if (!(PAIRS as readonly string[]).includes(pair) || !(BUILTIN_SLICES as readonly string[]).includes(slice)) throw bad(`unknown pair/slice in ${name}`);
    if (!(arr instanceof Float64Array)) throw new ProtocolError('E_DTYPE', `buffer ${name} must be f64`);
    const want = kind === 'hist' ? HIST_BINS : N_SUMS;
    if (arr.length !== want) throw new ProtocolError('E_FRAME_LENGTH', `buffer ${name} has ${arr.length} elements, want ${want}`);
    if (kind === 'hist') {
      for (let b = 0; b < arr.length; b++) if (!(arr[b] >= 0 && arr[b] <= Number.MAX_SAFE_INTEGER)) throw bad(`${name}[${b}] is not a count`);
    } else if (!(arr[0] >= 0 && arr[1] >= 0)) throw bad(`${name}: n and nonfinite must be counts`);
    const key = `${pair}/${slice}`;
    have.set(key, (have.get(key) ?? 0) | (kind === 'hist' ? 1 : 2));
  }
  const pairs = new Set([...have.keys()].map((k) => k.split('/')[0]));
  for (const p of pairs)
    for (const sl of BUILTIN_SLICES) if (have.get(`${p}/${sl}`) !== 3) throw bad(`pair ${p} needs sketch/${p}/${sl}/hist and /sums`);
}
