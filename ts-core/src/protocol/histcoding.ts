// Sparse codings of a sketch histogram (proto/README.md "Sketch payloads", `hist.coding`), exact for integer
// counts up to 2^53 - 1; python-shim wire/histcoding.py is the shim's twin. "varint": LEB128 (gap, count) per
// non-zero bin. "runs": LEB128 (gap, length, first count, zigzag differences...) per maximal run of non-zero
// bins: occupied bins of real data are contiguous with similar counts, so the gap byte and most count bytes go.
import { HIST_BINS } from '../stats/hist.ts';
import { ProtocolError } from './errors.ts';
import { SCHEMAS, type Schema } from './schemas.ts';

/** `hist.coding` values (step.schema.json): "dense" (default) f64[HIST_BINS] per hist, "varint", "runs";
 * the sparse ones send the `all` hist empty (= pre_tool + post_tool). */
export const HIST_CODINGS = (SCHEMAS.step.properties!.hist.properties!.coding as Schema).enum as readonly ('dense' | 'varint' | 'runs')[];
export type HistCoding = (typeof HIST_CODINGS)[number];

const bad = (name: string, why: string) => new ProtocolError('E_SKETCH_LAYOUT', `${name}: ${why}`);

/** Reads LEB128 varints from `buf`: at most 8 bytes, minimal; E_SKETCH_LAYOUT otherwise or when truncated. */
class Varints {
  i = 0;
  constructor(readonly buf: Uint8Array, readonly name: string) {}
  get done(): boolean {
    return this.i >= this.buf.length;
  }
  next(): number {
    let v = 0;
    let scale = 1;
    let len = 0;
    for (;;) {
      if (this.i >= this.buf.length) throw bad(this.name, 'truncated varint stream');
      const byte = this.buf[this.i++];
      len++;
      if (len > 8 || (len > 1 && byte === 0)) throw bad(this.name, 'a varint is longer than 8 bytes or not minimal');
      v += (byte & 127) * scale; // exact up to 2^53; a larger value is rejected as a count or runs past the bins
      scale *= 128;
      if (byte < 128) return v;
    }
  }
  count(): number {
    const v = this.next();
    if (v === 0 || v > Number.MAX_SAFE_INTEGER) throw bad(this.name, 'a count is 0 or over 2^53 - 1');
    return v;
  }
  /** A zigzag-coded signed difference (0, 1, 2, 3 → 0, −1, 1, −2), exact while |d| < 2^53: the low 28 bits are
   * read apart, so the sign bit survives values past 2^53 (those are rejected by the caller's count check). */
  zigzag(): number {
    let lo = 0;
    let hi = 0;
    let len = 0;
    for (;;) {
      if (this.i >= this.buf.length) throw bad(this.name, 'truncated varint stream');
      const byte = this.buf[this.i++];
      if (++len > 8 || (len > 1 && byte === 0)) throw bad(this.name, 'a varint is longer than 8 bytes or not minimal');
      if (len <= 4) lo += (byte & 127) * 2 ** (7 * (len - 1));
      else hi += (byte & 127) * 2 ** (7 * (len - 5));
      if (byte < 128) break;
    }
    const mag = hi * 2 ** 27 + Math.floor(lo / 2);
    return lo % 2 ? -mag - 1 : mag;
  }
}

/** The dense histogram of a "varint" hist buffer (into `out`, zeroed first); E_SKETCH_LAYOUT if malformed:
 * truncated, a varint over 8 bytes or not minimal, a zero count, a count over 2^53 - 1, a bin past the last. */
export function decodeHistVarint(buf: Uint8Array, name = 'hist', out: Float64Array = new Float64Array(HIST_BINS)): Float64Array {
  out.fill(0);
  const r = new Varints(buf, name);
  let bin = -1;
  while (!r.done) {
    const gap = r.next();
    const c = r.count();
    bin += gap + 1;
    if (bin >= HIST_BINS) throw bad(name, 'a bin index is past the last bin');
    out[bin] = c;
  }
  return out;
}

/** The dense histogram of a "runs" hist buffer; E_SKETCH_LAYOUT as "varint" (every count, first or from its
 * difference, in [1, 2^53 − 1]), plus: a run of length 0, a run past the last bin, a gap of 0 between runs
 * (runs are maximal, so the coding is canonical). */
export function decodeHistRuns(buf: Uint8Array, name = 'hist', out: Float64Array = new Float64Array(HIST_BINS)): Float64Array {
  out.fill(0);
  const r = new Varints(buf, name);
  let bin = 0; // the first bin after the previous run
  let first = true;
  while (!r.done) {
    const gap = r.next();
    if (!first && gap === 0) throw bad(name, 'a gap of 0 between runs (runs must be maximal)');
    const n = r.next();
    if (n === 0) throw bad(name, 'a run of length 0');
    if (bin + gap + n > HIST_BINS) throw bad(name, 'a bin index is past the last bin');
    bin += gap;
    let c = r.count();
    out[bin++] = c;
    for (let k = 1; k < n; k++) {
      c += r.zigzag(); // exact when the result is a valid count (both terms below 2^53)
      if (!(c >= 1 && c <= Number.MAX_SAFE_INTEGER)) throw bad(name, 'a count is 0 or over 2^53 - 1');
      out[bin++] = c;
    }
    first = false;
  }
  return out;
}

export const HIST_DECODERS: Record<Exclude<HistCoding, 'dense'>, (buf: Uint8Array, name?: string) => Float64Array> = {
  varint: decodeHistVarint,
  runs: decodeHistRuns,
};
