// The `received` echo of a directive: tokens, sequences and checksum accumulated per chunk; slice
// counts once per assembled step, taken from the stats pass (RankStep.maskCounts) when a stats
// pipeline ran, else from a pass of our own (chunks hold whole sequences, so either is exact).
import { FNV_OFFSET, fnv1a } from '../protocol/checksum.ts';
import type { Received } from '../protocol/messages.ts';

export type MaskCounts = { pre_tool: number; post_tool: number; tool_output: number };

export function emptyReceived(withChecksum: boolean): Received {
  return { tokens: 0, n_seqs: 0, slices: { all: 0, pre_tool: 0, post_tool: 0, tool_output: 0 }, checksum: withChecksum ? FNV_OFFSET : null };
}

/** Add one chunk's sizes and, when the client asked for it, its bytes to the checksum. */
export function addChunk(acc: Received, tokens: number, nSeqs: number, frames: readonly Uint8Array[]): void {
  acc.tokens += tokens;
  acc.n_seqs += nSeqs;
  if (acc.checksum !== null) {
    let h = acc.checksum;
    for (const f of frames) h = fnv1a(f, h);
    acc.checksum = h;
  }
}

/** Set the slice counts (`all` = pre + post: model tokens). */
export function setSlices(acc: Received, c: MaskCounts): void {
  const s = acc.slices;
  s.pre_tool = c.pre_tool;
  s.post_tool = c.post_tool;
  s.tool_output = c.tool_output;
  s.all = c.pre_tool + c.post_tool;
}

/** The engine's own count, when no stats pass did it. DESIGN §3: over completion tokens; pre/post relative to the first tool-output token of each sequence. */
export function countSlices(cm: Uint8Array, tm: Uint8Array, off: Int32Array): MaskCounts {
  let pre = 0;
  let post = 0;
  let tool = 0;
  for (let s = 0; s + 1 < off.length; s++) {
    let seenTool = false;
    const end = off[s + 1];
    for (let t = off[s]; t < end; t++) {
      if (cm[t] === 0) continue;
      if (tm[t] === 0) {
        tool++;
        seenTool = true;
      } else if (seenTool) post++;
      else pre++;
    }
  }
  return { pre_tool: pre, post_tool: post, tool_output: tool };
}
