// FNV-1a 32-bit, incremental: the `received.checksum` echo over every buffer frame of a step.
export const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** Continue an FNV-1a hash `h` over `bytes`. Start with FNV_OFFSET; result is a uint32. */
export function fnv1a(bytes: Uint8Array, h: number = FNV_OFFSET): number {
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], FNV_PRIME);
  return h >>> 0;
}
