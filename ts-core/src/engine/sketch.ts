// Sketch mode (docs/sketch.md): a `step` with `sketch: true` carries, per pair × slice, the bit-histogram
// and the exact sums that the shim reduced over every rank. protocol/sketch.ts checks the layout (stage D).
import type { Message } from '../protocol/codec.ts';
import type { StepHeader } from '../protocol/messages.ts';
import { HIST_BINS } from '../stats/hist.ts';
import { SKETCH_BUFFER, checkSketchStep, decodeHistVarint } from '../protocol/sketch.ts';
import { PAIRS, type Knobs, type PairName, type SketchSlice, type SketchStepData, type TrainerLogs } from '../types.ts';
export type { SketchSlice, SketchStepData } from '../types.ts';

export function decodeSketchStep(msg: Message<StepHeader>, trainer: string, nowMs: number): SketchStepData {
  const h = msg.header as StepHeader & Record<string, unknown>;
  checkSketchStep(h, msg.buffers); // the codec ran it already; messages built in-process may not have
  const sc = h.slice_counts as Record<string, number>;
  const sliceCounts = { pre_tool: sc.pre_tool, post_tool: sc.post_tool, tool_output: sc.tool_output };
  const slices = new Map<string, SketchSlice>();
  const varint = (h.hist as { coding?: string } | undefined)?.coding === 'varint';
  for (const [name, arr] of Object.entries(msg.buffers)) {
    const m = SKETCH_BUFFER.exec(name);
    if (!m) continue; // sketch/per_rank: optional attribution, not used by the engine yet
    const key = `${m[1]}/${m[2]}`;
    let s = slices.get(key);
    if (!s) slices.set(key, (s = { hist: new Float64Array(0), sums: new Float64Array(0) }));
    if (m[3] === 'sums') s.sums = Float64Array.from(arr);
    else if (varint) s.hist = decodeHistVarint(arr as Uint8Array, name);
    else s.hist = Float64Array.from(arr);
  }
  if (varint) // the `all` hist is not sent: exactly pre_tool + post_tool (integer counts < 2^53 add exactly)
    for (const [key, s] of slices) {
      const [pair, slice] = key.split('/');
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
  };
}
