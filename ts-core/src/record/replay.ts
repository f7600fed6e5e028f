// Decode a recording message by message with the engine's own codec and validation, handing each
// accepted message to a sink (the run glue). Rejections are collected exactly as the live engine
// would have answered them, so a replay of bad input is as informative as the live run.
import { decodeMessage, isProtocolError, type Message } from '../protocol/index.ts';
import { readRecording } from './index.ts';

export interface ReplaySink {
  /** One decoded, validated client message, with the time the engine (or shim) saw it. */
  message(msg: Message, receivedAt: number): void | Promise<void>;
}

export interface ReplayCounts {
  messages: number;
  accepted: number;
  rejected: { index: number; code: string; message: string }[];
  tornBytes: number;
}

export async function replayRecording(file: string, sink: ReplaySink): Promise<ReplayCounts> {
  const cap = readRecording(file);
  const counts: ReplayCounts = { messages: cap.messages.length, accepted: 0, rejected: [], tornBytes: cap.tornBytes };
  for (let i = 0; i < cap.messages.length; i++) {
    const m = cap.messages[i];
    let msg: Message;
    try {
      msg = decodeMessage(m.frames);
    } catch (e) {
      if (!isProtocolError(e)) throw e;
      counts.rejected.push({ index: i, code: e.code, message: e.message });
      continue;
    }
    await sink.message(msg, m.receivedAt);
    counts.accepted++;
  }
  return counts;
}
