// Sketch mode (docs/sketch.md): a `step` with `sketch: true` carries, per pair × slice, the bit-histogram
// and the exact sums that the shim reduced over every rank. Decoding checks the layout against the
// engine's own (stats/), so a shim built for another layout gets E_SKETCH_LAYOUT, never wrong numbers.
import type { Message } from '../protocol/codec.ts';
import { ProtocolError } from '../protocol/errors.ts';
import type { StepHeader } from '../protocol/messages.ts';
import { HIST_BINS, HIST_LAYOUT } from '../stats/hist.ts';
import { N_SUMS, SUMS_FIELDS } from '../stats/sums.ts';
import { BUILTIN_SLICES, PAIRS, type Knobs, type PairName, type TrainerLogs } from '../types.ts';

export interface SketchSlice {
  hist: Float64Array; // HIST_BINS counts of finite |ℓ|
  sums: Float64Array; // SUMS_FIELDS in order
}

/** One sketch step: every rank's data for `step`, merged. Arrays are copies (safe to keep). */
export interface SketchStepData {
  runId: string;
  step: number;
  worldSize: number;
  trainer: string;
  tokens: number;
  nSeqs: number;
  sliceCounts: { pre_tool: number; post_tool: number; tool_output: number };
  /** key `${pair}/${slice}` */
  slices: Map<string, SketchSlice>;
  pairs: PairName[];
  implicit: PairName[];
  knobs: Knobs;
  logs: TrainerLogs;
  receivedAt: number;
}

const NAME = /^sketch\/([a-z_]+)\/([a-z_]+)\/(hist|sums)$/;
const bad = (msg: string) => new ProtocolError('E_SKETCH_LAYOUT', msg);

function count(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${what} must be a non-negative integer`);
  return v;
}

export function decodeSketchStep(msg: Message<StepHeader>, trainer: string, nowMs: number): SketchStepData {
  const h = msg.header as StepHeader & Record<string, unknown>;
  const layout = h.hist as Record<string, unknown> | undefined;
  if (!layout || layout.exp_min !== HIST_LAYOUT.exp_min || layout.exp_max !== HIST_LAYOUT.exp_max || layout.mant_bits !== HIST_LAYOUT.mant_bits)
    throw bad(`hist layout ${JSON.stringify(layout)} != ${JSON.stringify(HIST_LAYOUT)}`);
  const fields = h.sums_fields;
  if (!Array.isArray(fields) || fields.length !== N_SUMS || fields.some((f, i) => f !== SUMS_FIELDS[i]))
    throw bad(`sums_fields must be [${SUMS_FIELDS.join(', ')}]`);
  const sc = (h.slice_counts ?? {}) as Record<string, unknown>;
  const sliceCounts = { pre_tool: count(sc.pre_tool, 'slice_counts.pre_tool'), post_tool: count(sc.post_tool, 'slice_counts.post_tool'), tool_output: count(sc.tool_output, 'slice_counts.tool_output') };
  const slices = new Map<string, SketchSlice>();
  for (const [name, arr] of Object.entries(msg.buffers)) {
    if (name === 'sketch/per_rank') continue; // optional attribution; not used by the engine yet
    const m = NAME.exec(name);
    if (!m) throw bad(`unexpected buffer ${name} in a sketch step`);
    const [, pair, slice, kind] = m;
    if (!(PAIRS as readonly string[]).includes(pair) || !(BUILTIN_SLICES as readonly string[]).includes(slice)) throw bad(`unknown pair/slice in ${name}`);
    if (!(arr instanceof Float64Array)) throw new ProtocolError('E_DTYPE', `buffer ${name} must be f64`);
    const want = kind === 'hist' ? HIST_BINS : N_SUMS;
    if (arr.length !== want) throw bad(`buffer ${name} has ${arr.length} elements, want ${want}`);
    const key = `${pair}/${slice}`;
    let s = slices.get(key);
    if (!s) slices.set(key, (s = { hist: new Float64Array(0), sums: new Float64Array(0) }));
    if (kind === 'hist') {
      for (let b = 0; b < arr.length; b++) if (!(arr[b] >= 0 && arr[b] <= Number.MAX_SAFE_INTEGER)) throw bad(`${name}[${b}] is not a count`);
      s.hist = Float64Array.from(arr);
    } else {
      if (!(arr[0] >= 0 && arr[1] >= 0)) throw bad(`${name}: n and nonfinite must be counts`);
      s.sums = Float64Array.from(arr);
    }
  }
  const pairs = new Set<PairName>();
  for (const [key, s] of slices) {
    if (!s.hist.length || !s.sums.length) throw bad(`${key} needs both hist and sums`);
    pairs.add(key.split('/')[0] as PairName);
  }
  for (const p of pairs) for (const sl of BUILTIN_SLICES) if (!slices.has(`${p}/${sl}`)) throw bad(`missing sketch/${p}/${sl}`);
  return {
    runId: h.run_id, step: h.step, worldSize: h.world_size, trainer, tokens: h.tokens, nSeqs: h.n_seqs, sliceCounts, slices,
    pairs: PAIRS.filter((p) => pairs.has(p)), implicit: (h.implicit ?? []).filter((p): p is PairName => (PAIRS as readonly string[]).includes(p)),
    knobs: h.knobs ?? {}, logs: h.logs ?? {}, receivedAt: nowMs,
  };
}
