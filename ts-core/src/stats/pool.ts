// Reusable value buffers (Float32Array + Int32Array view over the same bytes), by power-of-two
// capacity: a fresh allocation per step costs several times a copy.
import type { ValueBuf } from './select.ts';

export class BufPool {
  private free = new Map<number, Float32Array[]>();
  constructor(private maxPerClass = 32) {}

  get(minCap: number): ValueBuf {
    let cap = 1024;
    while (cap < minCap) cap *= 2;
    const vals = this.free.get(cap)?.pop() ?? new Float32Array(cap);
    return { vals, bits: new Int32Array(vals.buffer, vals.byteOffset, cap), len: 0 };
  }

  release(buf: ValueBuf): void {
    const cap = buf.vals.length;
    let list = this.free.get(cap);
    if (!list) this.free.set(cap, (list = []));
    if (list.length < this.maxPerClass) list.push(buf.vals);
    buf.len = 0;
  }
}
