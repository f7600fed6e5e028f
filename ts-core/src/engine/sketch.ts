// Sketch mode (docs/sketch.md): a `step` with `sketch: true` carries, per pair × slice, the bit-histogram
// and the exact sums that the shim reduced over every rank. protocol/sketch.ts checks the layout (stage D).
import type { Message } from '../protocol/codec.ts';
import type { StepHeader } from '../protocol/messages.ts';
import { HIST_BINS } from '../stats/hist.ts';
import { HIST_DECODERS, PER_RANK_FIELDS, SKETCH_BUFFER, SKETCH_PER_RANK, checkSketchStep } from '../protocol/sketch.ts';
import { PAIRS, type Knobs, type PairName, type RankSummary, type SketchSlice, type SketchStepData, type TrainerLogs } from '../types.ts';
export type { SketchSlice, SketchStepData } from '../types.ts';

export function decodeSketchStep(msg: Message<StepHeader>, trainer: string, nowMs: number): SketchStepData {
  const h = msg.header as StepHeader & Record<string, unknown>;
  checkSketchStep(h, msg.buffers); // the codec ran it already; messages built in-process may not have
  const sc = h.slice_counts as Record<string, number>;
  const sliceCounts = { pre_tool: sc.pre_tool, post_tool: sc.post_tool, tool_output: sc.tool_output };
  const slices = new Map<string, SketchSlice>();
  const coding = (h.hist as { coding?: 'dense' | 'varint' | 'runs' } | undefined)?.coding ?? 'dense';
  const sparse = coding === 'dense' ? null : HIST_DECODERS[coding];
  const rows: string[] = []; // pair/slice of each sums buffer, in buffer order: the rows of sketch/per_rank
  const user = (h.slice_names ?? []) as string[];
  for (const [name, arr] of Object.entries(msg.buffers)) {
    const m = SKETCH_BUFFER.exec(name);
    if (!m) continue; // sketch/per_rank: read below
    // user/<id> is raw mode's `user:<name>` (stage D checked id < slice_names.length, names distinct)
    const key = `${m[1]}/${m[2].startsWith('user/') ? `user:${user[Number(m[2].slice(5))]}` : m[2]}`;
    if (m[3] === 'sums') rows.push(key);
    let s = slices.get(key);
    if (!s) slices.set(key, (s = { hist: new Float64Array(0), sums: new Float64Array(0) }));
    if (m[3] === 'sums') s.sums = Float64Array.from(arr);
    else if (sparse) s.hist = sparse(arr as Uint8Array, name);
    else s.hist = Float64Array.from(arr);
  }
  if (sparse) // the `all` hist is not sent: exactly pre_tool + post_tool (integer counts < 2^53 add exactly)
    for (const [key, s] of slices) {
      const [pair, slice] = splitKey(key);
      if (slice !== 'all') continue;
      const pre = slices.get(`${pair}/pre_tool`)!.hist;
      const post = slices.get(`${pair}/post_tool`)!.hist;
      s.hist = new Float64Array(HIST_BINS);
      for (let b = 0; b < HIST_BINS; b++) s.hist[b] = pre[b] + post[b];
    }
  const pairs = new Set<PairName>();
  for (const key of slices.keys()) pairs.add(key.split('/')[0] as PairName);
  return {
    runId: h.run_id, step: h.step, worldSize: h.world_size, trainer, tokens: h.tokens, nSeqs: h.n_seqs, sliceCounts, slices,
    pairs: PAIRS.filter((p) => pairs.has(p)), implicit: (h.implicit ?? []).filter((p): p is PairName => (PAIRS as readonly string[]).includes(p)),
    knobs: h.knobs ?? {}, logs: h.logs ?? {}, receivedAt: nowMs,
    ...(h.per_rank !== undefined && { perRank: perRankOf(msg.buffers[SKETCH_PER_RANK] as Float64Array, (h.per_rank as { tokens: number[] }).tokens, rows) }),
  };
}

/** [pair, slice] of a `${pair}/${slice}` key (a user slice name may hold '/'). */
function splitKey(key: string): [PairName, string] {
  const i = key.indexOf('/');
  return [key.slice(0, i) as PairName, key.slice(i + 1)];
}

/** RankSummary per rank from `sketch/per_rank` (row-major rank × row × PER_RANK_FIELDS). Like raw mode's
 * summaries, a tool_output or user row with no value is left out (raw mode keeps one whose values are all non-finite). */
function perRankOf(arr: Float64Array, tokens: number[], rows: string[]): RankSummary[] {
  const F = PER_RANK_FIELDS.length;
  return tokens.map((t, rank) => {
    const pairs: RankSummary['pairs'] = {};
    rows.forEach((key, i) => {
      const [pair, slice] = splitKey(key);
      const o = (i + rank * rows.length) * F;
      const [n, abs_q99, abs_mean, ess] = arr.subarray(o, o + F);
      if ((slice === 'tool_output' || slice.startsWith('user:')) && n === 0) return;
      (pairs[pair] ??= {})[slice] = { n, abs_q99, abs_mean, ess };
    });
    return { rank, tokens: t, pairs };
  });
}
