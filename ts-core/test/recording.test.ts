import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordingError, RecordingWriter, readRecording } from '../src/record/index.ts';

const PY = process.env.TAILGUARD_PYTHON ?? path.resolve('.venv/bin/python');
let dir: string;
beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-cap-')); });
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const msgs = [
  [Buffer.from([0x81, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xa5, 0x68, 0x65, 0x6c, 0x6c, 0x6f])],
  [Buffer.from('header'), Buffer.from(new Float32Array([1.5, -2, NaN]).buffer), Buffer.alloc(0), Buffer.from([1, 2, 3])],
];

describe('recordings', () => {
  it('round-trips messages frame for frame, with times', () => {
    const f = path.join(dir, 'a.tgcap');
    const w = new RecordingWriter(f);
    msgs.forEach((m, i) => w.write(m, 1000 + i));
    w.close();
    const w2 = new RecordingWriter(f); // appending keeps a single preamble
    w2.write([Buffer.from('third')], 3000);
    w2.close();
    const r = readRecording(f);
    expect(r.tornBytes).toBe(0);
    expect(r.messages.map((m) => m.receivedAt)).toEqual([1000, 1001, 3000]);
    expect(r.messages[1].frames.map((b) => b.toString('hex'))).toEqual(msgs[1].map((b) => b.toString('hex')));
  });

  it('skips and reports a torn last record; rejects a foreign file', () => {
    const f = path.join(dir, 'torn.tgcap');
    const w = new RecordingWriter(f);
    msgs.forEach((m) => w.write(m));
    w.close();
    const full = fs.readFileSync(f);
    fs.writeFileSync(f, full.subarray(0, full.length - 5));
    const r = readRecording(f);
    expect(r.messages.length).toBe(1);
    expect(r.tornBytes).toBeGreaterThan(0);
    fs.writeFileSync(f, 'hello world');
    expect(() => readRecording(f)).toThrow(RecordingError);
  });

  it('reads what the Python shim writes (tailguard.record) and vice versa', () => {
    const fromPy = path.join(dir, 'py.tgcap');
    const py = `
import sys
from tailguard.record import RecordingWriter, read_recording
with RecordingWriter(sys.argv[1]) as w:
    w.write([b"hdr", bytes(range(10))], at_ms=42.5)
    w.write([memoryview(b"x" * 7)], at_ms=43.0)
got = [(t, [f.hex() for f in fr]) for t, fr in read_recording(sys.argv[2])]
print(got)
`;
    const fromTs = path.join(dir, 'ts.tgcap');
    const w = new RecordingWriter(fromTs);
    w.write([Buffer.from('ts-frame'), Buffer.from([255, 0])], 7);
    w.close();
    const res = spawnSync(PY, ['-c', py, fromPy, fromTs], { encoding: 'utf8' });
    expect(res.stderr).toBe('');
    expect(res.stdout.trim()).toBe(`[(7.0, ['${Buffer.from('ts-frame').toString('hex')}', 'ff00'])]`);
    const r = readRecording(fromPy);
    expect(r.messages.map((m) => [m.receivedAt, m.frames.map((b) => b.toString('hex'))])).toEqual([
      [42.5, [Buffer.from('hdr').toString('hex'), Buffer.from([...Array(10).keys()]).toString('hex')]],
      [43, ['78'.repeat(7)]],
    ]);
  });
});
