// Decoder + session fuzzing in `make test`: a bounded run of ts-core/bench/fuzz.ts (the long run is
// `npm run fuzz`), plus checks that its oracle can fail and regressions for what it found.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeMessage, encodeHeader } from '../src/protocol/codec.ts';
import { ProtocolError } from '../src/protocol/errors.ts';
import { decodeVerdict, judge, makeCase } from '../bench/fuzz.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const tmp = mkdtempSync(join(tmpdir(), 'tg-fuzz-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const SEED = Number(process.env.TAILGUARD_FUZZ_SEED ?? (Math.random() * 2 ** 32) >>> 0);

describe('fuzz harness', () => {
  it('a seed and index regenerate the same case', () => {
    for (const i of [0, 7, 4242]) expect(makeCase(SEED, i)).toEqual(makeCase(SEED, i));
    // Different indices give different cases (two given indices can coincide by chance: ~0.2% of seeds).
    const distinct = new Set(Array.from({ length: 20 }, (_, i) => JSON.stringify(makeCase(SEED, i + 1))));
    expect(distinct.size).toBeGreaterThan(10);
  });

  it('the oracle fails on a wrong code, an extra reply, an E_INTERNAL reply and an invalid reply', () => {
    const f = [encodeHeader({ type: 'nope', version: [1, 0] })];
    const v = decodeVerdict(f);
    expect(v).toBe('E_UNKNOWN_TYPE');
    const err = (code: string) => ({ type: 'error', version: [1, 0], code, message: 'm', fatal: false });
    expect(judge(f, v, [err('E_UNKNOWN_TYPE')])).toBeNull();
    expect(judge(f, v, [err('E_FIELD_TYPE')])).toMatch(/decoder says E_UNKNOWN_TYPE/);
    expect(judge(f, v, [])).toMatch(/engine replied \[\]/);
    expect(judge(f, null, [err('E_INTERNAL')])).toMatch(/E_INTERNAL/);
    expect(judge(f, null, [{ type: 'welcome', version: [1, 0] }])).toMatch(/invalid reply/);
    expect(judge(f, null, [err('E_RANK'), err('E_RANK')])).toMatch(/2 replies/);
  });

  it('regression: deeply nested headers are E_HEADER_DECODE, never a stack overflow (E_INTERNAL)', () => {
    const deep = (n: number) => Buffer.concat([Buffer.from([0x81, 0xa1, 0x78]), Buffer.alloc(n, 0x91), Buffer.from([0])]);
    const code = (b: Buffer) => {
      try {
        decodeMessage([b]);
        return null;
      } catch (e) {
        return (e as ProtocolError).code;
      }
    };
    expect(code(deep(63))).toBe('E_MISSING_FIELD'); // 64 levels: decodes, then fails validation
    for (const n of [64, 1000, 3000, 5000, 60000]) expect(code(deep(n))).toBe('E_HEADER_DECODE');
  });
});

describe('fuzz run (in-process + real socket)', () => {
  it(`8000 cases in-process and 400 over the socket: 0 crashes, 0 hangs, documented codes (seed ${SEED})`, () => {
    const out = join(tmp, 'fuzz.json');
    const r = spawnSync(process.execPath, [join(ROOT, 'node_modules/tsx/dist/cli.mjs'), join(ROOT, 'ts-core/bench/fuzz.ts'), '--cases', '8000', '--socket-cases', '400', '--seed', String(SEED), '--json', out], { cwd: ROOT, encoding: 'utf8', timeout: 110_000 });
    const report = JSON.parse(readFileSync(out, 'utf8'));
    expect(report.failures, `${r.stdout}\n${r.stderr}`).toEqual([]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(report.phase1.cases).toBe(8000);
    expect(report.phase1.valid).toBeGreaterThan(500); // enough valid traffic reaches sessions, assembly and stats
    expect(Object.keys(report.phase1.codes).length).toBeGreaterThanOrEqual(10);
    for (const c of ['E_NO_SESSION', 'E_DUPLICATE', 'E_CHUNK']) expect(report.phase1.engineCodes[c], c).toBeGreaterThan(0); // session stage reached
    expect(report.socket.cases).toBeGreaterThan(350);
    expect(report.socket.engineAlive && report.socket.healthy).toBe(true);
    console.log(r.stdout.trim());
  });
});
