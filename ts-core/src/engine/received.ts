// The `received` echo of a directive: slice counts and FNV-1a checksum, accumulated per chunk
// (chunks hold whole sequences, so per-chunk counting is exact and needs no concatenation).
import { FNV_OFFSET, fnv1a } from '../protocol/checksum.ts';
import type { Received } from '../protocol/messages.ts';

export function emptyReceived(withChecksum: boolean): Received {
  return { tokens: 0, n_seqs: 0, slices: { all: 0, pre_tool: 0, post_tool: 0, tool_output: 0 }, checksum: withChecksum ? FNV_OFFSET : null };
}

/** Add one chunk. DESIGN §3: over completion tokens; pre/post relative to the first tool-output token of each sequence. */
export function addChunk(acc: Received, cm: Uint8Array, tm: Uint8Array, off: Int32Array, frames: readonly Uint8Array[]): void {
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
  acc.tokens += cm.length;
  acc.n_seqs += off.length - 1;
  acc.slices.pre_tool += pre;
  acc.slices.post_tool += post;
  acc.slices.tool_output += tool;
  acc.slices.all += pre + post;
  if (acc.checksum !== null) {
    let h = acc.checksum;
    for (const f of frames) h = fnv1a(f, h);
    acc.checksum = h;
  }
}
