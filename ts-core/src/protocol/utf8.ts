// Every msgpack str in a header must be valid UTF-8 (proto/README.md "msgpack rules"). msgpackr decodes
// invalid bytes lossily (U+FFFD, overlong forms, lone surrogates), so the raw bytes are checked: msgpack is
// a prefix format, so one linear pass over the tokens finds every str payload without building anything.
import { isUtf8 } from 'node:buffer';

// Bytes after the type byte: fixed-size values, and the width of the length prefix of str/bin/ext.
const FIXED: Record<number, number> = { 0xc0: 0, 0xc2: 0, 0xc3: 0, 0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8, 0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17, 0xdc: 2, 0xdd: 4, 0xde: 2, 0xdf: 4 };

/** The offset of the first str whose payload is not valid UTF-8, or -1. Stops quietly on a malformed frame. */
export function invalidUtf8At(frame: Uint8Array): number {
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  let p = 0;
  while (p < frame.length) {
    const b = frame[p];
    let len = -1; // str payload length, or -1 when not a str
    let skip = 0;
    if (b <= 0x9f || b >= 0xe0) skip = 1; // fixint, fixmap, fixarray, negative fixint
    else if (b <= 0xbf) (len = b & 0x1f), (skip = 1);
    else if (b === 0xd9 || b === 0xc4) (len = frame[p + 1]), (skip = 2);
    else if (b === 0xda || b === 0xc5) (len = p + 3 <= frame.length ? dv.getUint16(p + 1) : 0), (skip = 3);
    else if (b === 0xdb || b === 0xc6) (len = p + 5 <= frame.length ? dv.getUint32(p + 1) : 0), (skip = 5);
    else if (b >= 0xc7 && b <= 0xc9) {
      const w = b - 0xc6 === 3 ? 4 : b - 0xc6; // ext8/16/32: length, then a type byte
      const n = w === 1 ? frame[p + 1] : w === 2 && p + 3 <= frame.length ? dv.getUint16(p + 1) : p + 5 <= frame.length ? dv.getUint32(p + 1) : 0;
      p += 1 + w + 1 + n;
      continue;
    } else if (b in FIXED) skip = 1 + FIXED[b];
    else return -1; // 0xc1: the decoder rejects it anyway
    if (len >= 0) {
      const start = p + skip;
      const isStr = b <= 0xbf || (b >= 0xd9 && b <= 0xdb);
      if (isStr && start + len <= frame.length && !isUtf8(frame.subarray(start, start + len))) return p;
      p = start + len;
    } else p += skip;
  }
  return -1;
}
