// Sketch mode, engine side: the Python shim's real sketch (tailguard.sketch, torch) of 2 ranks' data,
// decoded by the engine (decodeSketchStep → RunStats.addSketchStep), gives the same StepResult records
// as the same data sent raw by both ranks (StepAssembler → RunStats.addRankStep).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeMessage, encodeMessage, type Message } from '../src/protocol/codec.ts';
import type { StepHeader } from '../src/protocol/messages.ts';
import { StepAssembler, toStepData } from '../src/engine/assembler.ts';
import { decodeSketchStep } from '../src/engine/sketch.ts';
import { ProtocolError } from '../src/protocol/errors.ts';
import type { TypedArray } from '../src/protocol/messages.ts';
import { decodeHistRuns } from '../src/protocol/sketch.ts';
import { DEFAULT_LIMITS } from '../src/protocol/validate.ts';
import { HIST_BINS } from '../src/stats/hist.ts';
import { RunStats } from '../src/stats/index.ts';
import type { MetricRecord } from '../src/types.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const PY = process.env.TAILGUARD_PYTHON ?? join(ROOT, '.venv/bin/python');

// Writes every message as [u32 frame count][u32 len, bytes]... : rank 0 raw, rank 1 raw, then the sketch.
const SCRIPT = `
import struct, sys, numpy as np, torch
from tailguard import sketch as S
from tailguard.wire import encode_message, encode_step
KN = {"epsilon_low": 0.2, "epsilon_high": 0.28}
def shard(rank):
    rng = np.random.default_rng(40 + rank)
    lens = rng.integers(2, 90, 60 + 15 * rank); T = int(lens.sum())
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    cm = (rng.random(T) > 0.03).astype(np.uint8); tm = (rng.random(T) > 0.1).astype(np.uint8)
    ref = (rng.standard_t(3, T) * (0.2 + 0.5 * rank)).astype(np.float32)
    ref[7] = np.nan; ref[11] = 70.0 if rank else -3.0
    old = (rng.normal(0, 1e-4, T)).astype(np.float32)
    ids = rng.integers(0, 4, T).astype(np.uint16)  # user slices; id 3 is beyond the names: in none
    return {"policy_vs_ref": ref, "old_vs_rollout": old, "completion_mask": cm, "tool_mask": tm, "offsets": off, "slice_ids": ids}
NAMES = ["turn_0", "turn_1", "a/b"]
out = open(sys.argv[1], "wb")
def put(frames):
    out.write(struct.pack("<I", len(frames)))
    for f in frames:
        b = bytes(f); out.write(struct.pack("<I", len(b))); out.write(b)
sks = []
for r in (0, 1):
    a = shard(r)
    h = {"type": "step", "run_id": "sk", "rank": r, "world_size": 2, "step": 1, "implicit": [], "knobs": KN, "logs": {},
         "slice_names": NAMES}
    for frames in encode_step(h, a): put(frames)
    sks.append(S.sketch_payload(a, ["policy_vs_ref", "old_vs_rollout"], KN, slice_names=NAMES))
class Id: run_id, rank, world_size = "sk", 0, 2
put(S.encode_sketch_step(Id, 1, S.merge_sketches(sks, per_rank=True), knobs=KN))
`;

function readMessages(path: string): Message[] {
  const buf = readFileSync(path);
  const out: Message[] = [];
  let o = 0;
  while (o < buf.length) {
    const n = buf.readUInt32LE(o);
    o += 4;
    const frames: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      const len = buf.readUInt32LE(o);
      o += 4;
      frames.push(new Uint8Array(buf.buffer, buf.byteOffset + o, len).slice());
      o += len;
    }
    out.push(decodeMessage(frames));
  }
  return out;
}

const rel = (a: number, b: number) => (a === b ? 0 : Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b)));
const EXACT = ['mean', 'abs_mean', 'std', 'abs_max', 'exceed_1_5', 'exceed_2', 'exceed_3', 'ess', 'ess_seq', 'ess_seq_norm',
  'chi2', 'kl_k1', 'kl_k2', 'kl_k3', 'clip_frac', 'alpha'] as const;
const QS = ['abs_q50', 'abs_q90', 'abs_q95', 'abs_q99', 'abs_q999'] as const;

describe('sketch mode, engine side', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-sketch-'));
  const file = join(dir, 'msgs.bin');
  execFileSync(PY, ['-c', SCRIPT, file], { cwd: ROOT, env: { ...process.env, OMP_NUM_THREADS: '1' } });
  const msgs = readMessages(file);
  const sketchMsg = msgs.find((m) => (m.header as StepHeader).sketch) as Message<StepHeader>;

  function rawStats(exactMaxValues?: number): RunStats {
    const raw = new RunStats({ worldSize: 2, runId: 'sk', exactMaxValues });
    for (const m of msgs.filter((x) => !(x.header as StepHeader).sketch)) {
      const done = new StepAssembler(DEFAULT_LIMITS, true).add(m as Message<StepHeader>);
      expect(done).toBeTruthy();
      raw.addRankStep(toStepData(done!, 'synthetic', 0));
    }
    return raw;
  }

  it('gives the raw-mode records, user slices included: counts exact, moments/ESS/KL to 1e-9, histogram quantiles identical', () => {
    const [r] = rawStats().finalizeReady(0); // raw: exact per-step quantiles
    const [rh] = rawStats(0).finalizeReady(0); // raw, histogram quantiles (what a sketch can give)
    const sk = new RunStats({ worldSize: 2, runId: 'sk' });
    sk.addSketchStep(decodeSketchStep(sketchMsg, 'synthetic', 0));
    const [s] = sk.finalizeReady(0);
    expect(s.ranksMissing).toEqual([]);
    expect(s.ranksPresent).toEqual([0, 1]);
    expect(s.tokens).toBe(r.tokens);
    const key = (m: MetricRecord) => `${m.pair}/${m.slice}`;
    const sm = new Map(s.records.map((m) => [key(m), m]));
    const hm = new Map(rh.records.map((m) => [key(m), m]));
    expect([...sm.keys()].sort()).toEqual(r.records.map(key).sort());
    let worstExact = 0;
    let worstQ = 0;
    let worstAt = "";
    for (const a of r.records) {
      const b = sm.get(key(a))!;
      expect([b.n, b.nonfinite]).toEqual([a.n, a.nonfinite]);
      for (const f of EXACT) {
        if (Number.isNaN(a[f])) expect(b[f]).toBeNaN();
        else if (!Number.isFinite(a[f])) expect(b[f]).toBe(a[f]);
        else {
          expect(rel(a[f], b[f]), `${key(a)} ${f}`).toBeLessThan(1e-9);
          if (rel(a[f], b[f]) > worstExact) (worstExact = rel(a[f], b[f])), (worstAt = `${key(a)} ${f}`);
        }
      }
      for (const f of QS) {
        if (a.n === 0) continue;
        expect(rel(hm.get(key(a))![f], b[f]), `${key(a)} ${f}`).toBeLessThan(1e-12); // the same histogram
        worstQ = Math.max(worstQ, rel(a[f], b[f]));
      }
    }
    const post = sm.get('policy_vs_ref/post_tool')!;
    expect(post.n).toBeGreaterThan(500);
    // user slices: raw mode's names (a '/' in one included), ids beyond the names in none
    const users = ['user:turn_0', 'user:turn_1', 'user:a/b'].map((u) => sm.get(`policy_vs_ref/${u}`)!);
    expect(users.every((u) => u.n > 200)).toBe(true);
    expect(users.reduce((a, u) => a + u.n + u.nonfinite, 0)).toBeLessThan(sm.get('policy_vs_ref/all')!.n);
    expect(sm.get('policy_vs_ref/all')!.nonfinite).toBe(2);
    expect(sm.get('policy_vs_ref/all')!.abs_max).toBe(70);
    expect(sm.get('policy_vs_ref/all')!.abs_q50).toBeGreaterThan(0);
    console.log(`sketch vs raw: worst relative difference exact=${worstExact.toExponential(2)} (${worstAt}), ` +
      `quantiles vs raw exact order statistics=${worstQ.toExponential(2)} (sparse tails of small slices)`);
  });

  it('decodes the per-rank summaries into the perRank raw mode gives (n, tokens exact; q99, mean |ℓ| to 1e-12)', () => {
    const [r] = rawStats().finalizeReady(0);
    const sk = new RunStats({ worldSize: 2, runId: 'sk' });
    sk.addSketchStep(decodeSketchStep(sketchMsg, 'synthetic', 0));
    const [s] = sk.finalizeReady(0);
    expect(s.perRank.map((p) => [p.rank, p.tokens])).toEqual(r.perRank.map((p) => [p.rank, p.tokens]));
    let rows = 0;
    for (const [i, raw] of r.perRank.entries())
      for (const [pair, slices] of Object.entries(raw.pairs))
        for (const [slice, a] of Object.entries(slices!)) {
          const b = s.perRank[i].pairs[pair as 'policy_vs_ref']![slice];
          expect(b.n, `${i} ${pair} ${slice}`).toBe(a.n);
          expect(rel(a.abs_q99, b.abs_q99), `${i} ${pair} ${slice} q99`).toBeLessThan(1e-12);
          expect(rel(a.abs_mean, b.abs_mean)).toBeLessThan(1e-12);
          expect(rel(a.ess, b.ess)).toBeLessThan(1e-9);
          rows++;
        }
    expect(rows).toBeGreaterThanOrEqual(2 * 2 * 6); // pairs × ranks × (all, pre, post, 3 user slices)
    // rank 1's tail is wider (scale 0.7 vs 0.2): the summaries tell the ranks apart
    const q = (k: number) => s.perRank[k].pairs.policy_vs_ref!.all.abs_q99;
    expect(q(1) / q(0)).toBeGreaterThan(2.5);
  });

  it('rejects a foreign layout or a malformed payload with E_SKETCH_LAYOUT / E_FRAME_LENGTH / E_DTYPE', () => {
    const with_ = (patch: Record<string, unknown>, buffers = sketchMsg.buffers) =>
      ({ ...sketchMsg, header: { ...sketchMsg.header, ...patch }, buffers }) as Message<StepHeader>;
    const code = (m: Message<StepHeader>) => {
      try {
        decodeSketchStep(m, 'synthetic', 0);
        return 'ok';
      } catch (e) {
        return (e as ProtocolError).code;
      }
    };
    expect(code(with_({}))).toBe('ok');
    expect(code(with_({ hist: { exp_min: -20, exp_max: 8, mant_bits: 6 } }))).toBe('E_SKETCH_LAYOUT');
    expect(code(with_({ sums_fields: ['n'] }))).toBe('E_SKETCH_LAYOUT');
    expect(code(with_({ slice_counts: { pre_tool: -1, post_tool: 0, tool_output: 0 } }))).toBe('E_SKETCH_LAYOUT');
    const bufs = { ...sketchMsg.buffers };
    delete bufs['sketch/policy_vs_ref/post_tool/sums'];
    expect(code(with_({}, bufs))).toBe('E_SKETCH_LAYOUT');
    // The shim sends hist.coding "runs"; malformed payloads are layout errors, a dense array is the wrong dtype.
    expect(sketchMsg.header.hist).toMatchObject({ coding: 'runs' });
    const vb = (name: string, bytes: number[] | Float64Array) => ({ ...sketchMsg.buffers, [name]: bytes instanceof Float64Array ? bytes : Uint8Array.from(bytes) });
    expect(code(with_({}, vb('sketch/policy_vs_ref/post_tool/hist', [0, 0])))).toBe('E_SKETCH_LAYOUT'); // a run of length 0
    expect(code(with_({}, vb('sketch/policy_vs_ref/post_tool/hist', [0, 1, 0])))).toBe('E_SKETCH_LAYOUT'); // a zero count
    expect(code(with_({}, vb('sketch/policy_vs_ref/post_tool/hist', [0, 1, 1, 0, 1, 1])))).toBe('E_SKETCH_LAYOUT'); // runs not maximal
    expect(code(with_({}, vb('sketch/policy_vs_ref/post_tool/hist', [0x80])))).toBe('E_SKETCH_LAYOUT'); // truncated
    expect(code(with_({}, vb('sketch/policy_vs_ref/all/hist', [0, 1])))).toBe('E_SKETCH_LAYOUT'); // all must be empty
    expect(code(with_({}, vb('sketch/policy_vs_ref/pre_tool/hist', new Float64Array(HIST_BINS))))).toBe('E_DTYPE');
    // The same step in the dense coding (still accepted from older shims) keeps its own checks.
    const dense: Record<string, TypedArray> = { ...sketchMsg.buffers };
    for (const [name, arr] of Object.entries(sketchMsg.buffers))
      if (name.endsWith('/hist') && !name.endsWith('/all/hist')) dense[name] = decodeHistRuns(arr as Uint8Array, name);
    for (const name of Object.keys(dense).filter((n) => n.endsWith('/all/hist'))) {
      const pre = dense[name.replace('/all/', '/pre_tool/')] as Float64Array;
      const post = dense[name.replace('/all/', '/post_tool/')] as Float64Array;
      dense[name] = pre.map((v, i) => v + post[i]);
    }
    const withDense = (bufs: Record<string, TypedArray>) => with_({ hist: { ...(sketchMsg.header.hist as object), coding: 'dense' } }, bufs as never);
    expect(code(withDense(dense))).toBe('ok');
    expect(code(withDense({ ...dense, 'sketch/policy_vs_ref/all/hist': new Float64Array(HIST_BINS).fill(-1) }))).toBe('E_SKETCH_LAYOUT');
    expect(code(withDense({ ...dense, 'sketch/policy_vs_ref/all/hist': new Float64Array(2050) }))).toBe('E_FRAME_LENGTH'); // the 6-bit layout's length
    const f32 = { ...sketchMsg.buffers, 'sketch/policy_vs_ref/all/sums': new Float32Array(21) };
    expect(code(with_({}, f32))).toBe('E_DTYPE');
  });

  it('decodes runs whose zigzag differences pass 2^53 exactly', () => {
    const leb = (v: bigint) => { const o: number[] = []; while (v >= 128n) { o.push(Number(v % 128n) | 128); v /= 128n; } o.push(Number(v)); return o; };
    const max = BigInt(Number.MAX_SAFE_INTEGER);
    // gap 5, length 3: 1, then +(2^53 − 2), then −(2^53 − 2): zigzag 2^54 − 4 and 2^54 − 5
    const h = decodeHistRuns(Uint8Array.from([5, 3, 1, ...leb(2n * (max - 1n)), ...leb(2n * (max - 1n) - 1n)]));
    expect([...h.subarray(5, 8)]).toEqual([1, Number.MAX_SAFE_INTEGER, 1]);
    expect(() => decodeHistRuns(Uint8Array.from([5, 2, ...leb(max), 2]))).toThrow(/over 2\^53/); // 2^53 − 1, then +1
  });

  it('accepts a sketch step whose token total is above max_tokens_per_step (its size is fixed)', () => {
    const h = { ...sketchMsg.header, tokens: 5e9, n_seqs: 4e6 } as unknown as Record<string, unknown>;
    delete h.buffers;
    const m = decodeMessage(encodeMessage(h, sketchMsg.buffers as never)) as Message<StepHeader>;
    expect(decodeSketchStep(m, 'synthetic', 0).tokens).toBe(5e9);
    const raw = msgs.find((x) => !(x.header as StepHeader).sketch)!;
    const rh = { ...raw.header, tokens: 5e9 } as unknown as Record<string, unknown>;
    delete rh.buffers;
    expect(() => decodeMessage(encodeMessage(rh, raw.buffers as never))).toThrow(/max_tokens_per_step/);
  });
});
