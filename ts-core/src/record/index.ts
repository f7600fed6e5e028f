// Recordings: the exact multipart messages a tailguard engine received (or a shim sent), so a run
// can be replayed offline. Format (all integers little-endian), documented in docs/observability.md:
//
//   file    = magic "TGCAP\0" (6 bytes) + u16 format version (1) + record*
//   record  = u32 body_len + body                     (body_len = bytes of body)
//   body    = f64 received_at_ms + u32 n_frames + frame*
//   frame   = u32 len + len bytes                     (frame 0 = msgpack header, as on the wire)
//
// The ROUTER identity frame is not stored. Writers flush each record with one write(); a crash can
// only leave a torn last record, which readers report and skip.
import * as fs from 'node:fs';

export const RECORDING_MAGIC = Buffer.from('TGCAP\0', 'latin1');
export const RECORDING_VERSION = 1;
const PREAMBLE = 8;

export interface RecordedMessage {
  receivedAt: number; // ms epoch
  frames: Buffer[];
}

export class RecordingError extends Error {
  constructor(
    readonly code: 'E_RECORDING_MAGIC' | 'E_RECORDING_VERSION' | 'E_RECORDING_RECORD',
    message: string,
  ) {
    super(message);
    this.name = 'RecordingError';
  }
}

export function encodeRecord(frames: readonly Uint8Array[], receivedAt: number): Buffer {
  const bodyLen = 12 + frames.reduce((a, f) => a + 4 + f.byteLength, 0);
  const out = Buffer.allocUnsafe(4 + bodyLen);
  out.writeUInt32LE(bodyLen, 0);
  out.writeDoubleLE(receivedAt, 4);
  out.writeUInt32LE(frames.length, 12);
  let o = 16;
  for (const f of frames) {
    out.writeUInt32LE(f.byteLength, o);
    out.set(f, o + 4);
    o += 4 + f.byteLength;
  }
  return out;
}

/** Appends messages to a recording (creating it with the preamble). */
export class RecordingWriter {
  private fd: number;
  count = 0;

  constructor(readonly file: string) {
    this.fd = fs.openSync(file, 'a');
    if (fs.fstatSync(this.fd).size === 0) {
      const pre = Buffer.alloc(PREAMBLE);
      RECORDING_MAGIC.copy(pre, 0);
      pre.writeUInt16LE(RECORDING_VERSION, 6);
      fs.writeSync(this.fd, pre);
    }
  }

  write(frames: readonly Uint8Array[], receivedAt = Date.now()): void {
    fs.writeSync(this.fd, encodeRecord(frames, receivedAt));
    this.count++;
  }

  close(): void {
    if (this.fd < 0) return;
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
    this.fd = -1;
  }
}

export interface RecordingRead {
  messages: RecordedMessage[];
  /** Bytes at the end that do not form a whole record (a crash mid-write). */
  tornBytes: number;
}

export function parseRecording(buf: Buffer): RecordingRead {
  if (buf.length < PREAMBLE || !buf.subarray(0, 6).equals(RECORDING_MAGIC)) {
    throw new RecordingError('E_RECORDING_MAGIC', 'not a tailguard recording (bad magic)');
  }
  const version = buf.readUInt16LE(6);
  if (version !== RECORDING_VERSION) throw new RecordingError('E_RECORDING_VERSION', `recording format version ${version} is not supported`);
  const messages: RecordedMessage[] = [];
  let o = PREAMBLE;
  while (o < buf.length) {
    if (buf.length - o < 4) break;
    const bodyLen = buf.readUInt32LE(o);
    if (buf.length - o - 4 < bodyLen) break; // torn last record
    if (bodyLen < 12) throw new RecordingError('E_RECORDING_RECORD', `record at byte ${o} is too short`);
    const end = o + 4 + bodyLen;
    const receivedAt = buf.readDoubleLE(o + 4);
    const n = buf.readUInt32LE(o + 12);
    const frames: Buffer[] = [];
    let p = o + 16;
    for (let i = 0; i < n; i++) {
      if (p + 4 > end) throw new RecordingError('E_RECORDING_RECORD', `record at byte ${o}: frame ${i} overruns the record`);
      const len = buf.readUInt32LE(p);
      if (p + 4 + len > end) throw new RecordingError('E_RECORDING_RECORD', `record at byte ${o}: frame ${i} overruns the record`);
      frames.push(buf.subarray(p + 4, p + 4 + len));
      p += 4 + len;
    }
    if (p !== end) throw new RecordingError('E_RECORDING_RECORD', `record at byte ${o}: ${end - p} trailing bytes`);
    messages.push({ receivedAt, frames });
    o = end;
  }
  return { messages, tornBytes: buf.length - o };
}

export function readRecording(file: string): RecordingRead {
  return parseRecording(fs.readFileSync(file));
}
