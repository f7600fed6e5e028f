// Header validation cost on the hot path (`npm run bench:validate`): validateHeader (ajv compiled from
// proto/v1 at startup) against msgpack decoding of the same header, measured in the same process.
// Prints ns per header and the ratio; `--baseline FILE` also times another validate.ts (e.g. an old one).
import { decodeHeader, encodeHeader, validateHeader } from '../src/protocol/index.ts';

const step = {
  type: 'step', version: [1, 0], run_id: 'bench-run', rank: 3, world_size: 8, step: 1234,
  chunk: { index: 0, count: 1 }, tokens: 65536, n_seqs: 64, sent_at: 1733500000.123,
  buffers: ['policy_vs_old', 'policy_vs_ref', 'completion_mask', 'tool_mask', 'offsets', 'advantages'].map((name, i) => ({
    name, dtype: i < 2 ? 'f32' : i < 4 ? 'u8' : i === 4 ? 'i32' : 'f32', length: i < 4 ? 65536 : i === 4 ? 65 : 64,
  })),
  implicit: ['old_vs_rollout'], knobs: { epsilon: 0.2, beta: 0.04 }, logs: { loss: 0.5, reward: 1.25 },
}; // prettier-ignore
const frame = encodeHeader(step);

function time(label: string, n: number, f: () => void): number {
  for (let i = 0; i < n / 10; i++) f(); // warm-up (JIT)
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) f();
  const ns = Number(process.hrtime.bigint() - t0) / n;
  console.log(`${label.padEnd(34)} ${ns.toFixed(0).padStart(7)} ns/header`);
  return ns;
}

const N = 200_000;
const decode = time('msgpack decode (baseline)', N, () => decodeHeader(frame));
const h = decodeHeader(frame);
const v = time('validateHeader (schemas, ajv)', N, () => validateHeader(h));
console.log(`ratio validate/decode: ${(v / decode).toFixed(2)}`);
const i = process.argv.indexOf('--baseline');
if (i > 0) {
  const other = (await import(process.argv[i + 1])) as { validateHeader: typeof validateHeader };
  const b = time('validateHeader (--baseline)', N, () => other.validateHeader(h));
  console.log(`ratio schemas/baseline: ${(v / b).toFixed(2)}`);
}
