// Edge cases: huge ℓ (±80 and ±500), all-NaN and empty slices, implicit pairs, user slices,
// sketch round trip, chunked steps, rank timeout and late data.
import { describe, expect, it } from 'vitest';
import { RunStats, SliceAccumulator, StatsError } from '../src/stats/index.ts';
import type { StepData } from '../src/types.ts';
import { lse, reference, refLabels, splitRanks, synthStep } from './stats-helpers.ts';

function step(values: number[], tool: number[] = [], extra: Partial<StepData> = {}): StepData {
  const T = values.length;
  const tm = new Uint8Array(T).fill(1);
  for (const t of tool) tm[t] = 0;
  return {
    runId: 'e', rank: 0, worldSize: 1, step: 1, trainer: 'synthetic', pairs: { policy_vs_ref: Float32Array.from(values) },
    implicit: [], completionMask: new Uint8Array(T).fill(1), toolMask: tm, offsets: Int32Array.from([0, T]),
    knobs: {}, logs: {}, receivedAt: 0, ...extra,
  };
}
const final = (rs: RunStats, now = 0) => rs.finalizeReady(now);
const one = (d: StepData) => {
  const rs = new RunStats({ worldSize: 1 });
  rs.addRankStep(d);
  return final(rs)[0];
};
const get = (r: ReturnType<typeof one>, slice: string, pair = 'policy_vs_ref') => r.records.find((x) => x.slice === slice && x.pair === pair)!;

describe('huge log-ratios', () => {
  for (const big of [80, 500]) {
    it(`ℓ = ±${big}: ESS, χ² and k3 stay finite where exact and match log-space references`, () => {
      const vals = [big, -big, 0.1, -0.2, 0.3, big / 2];
      const r = get(one(step(vals)), 'all');
      const ess = Math.exp(2 * lse(vals) - lse(vals.map((v) => 2 * v)) - Math.log(vals.length));
      expect(Math.abs(r.ess / ess - 1)).toBeLessThan(1e-9);
      expect(r.ess).toBeGreaterThan(0);
      expect(r.abs_max).toBe(big);
      const k3 = vals.reduce((a, v) => a + (Math.expm1(v) - v), 0) / vals.length;
      expect(Math.abs(r.kl_k3 / k3 - 1)).toBeLessThan(1e-9);
      if (big === 80) expect(Math.abs(r.chi2 / Math.expm1(lse(vals.map((v) => 2 * v)) - Math.log(6)) - 1)).toBeLessThan(1e-9);
      else expect(r.chi2).toBe(Infinity); // E[w²] = e^1000/6 overflows float64: reported as +Inf, not NaN
    });
  }
});

describe('non-finite and empty slices', () => {
  it('an all-NaN slice counts nonfinite, n = 0, and does not poison other slices', () => {
    const d = step([0.1, -0.1, 0.2, NaN, NaN, Infinity, -Infinity], [2]);
    // tokens 0,1 pre_tool; token 2 tool_output; 3..6 post_tool (all non-finite)
    const r = one(d);
    const post = get(r, 'post_tool');
    expect(post.n).toBe(0);
    expect(post.nonfinite).toBe(4);
    expect(post.mean).toBeNaN();
    expect(post.abs_q99).toBeNaN();
    const all = get(r, 'all');
    expect(all.n).toBe(2);
    expect(all.nonfinite).toBe(4);
    expect(all.mean).toBeCloseTo(0, 15);
    expect(Number.isFinite(all.ess)).toBe(true);
    expect(all.alpha).toBe(0);
    expect(get(r, 'tool_output').n).toBe(1);
  });

  it('empty slices: no post-tool tokens gives n = 0 records; tool_output is omitted', () => {
    const r = one(step([0.1, 0.2, 0.3]));
    expect(get(r, 'post_tool').n).toBe(0);
    expect(get(r, 'post_tool').nonfinite).toBe(0);
    expect(get(r, 'tool_output')).toBeUndefined();
    expect(get(r, 'all').alpha).toBe(0);
  });

  it('an empty step (T = 0) is accepted', () => {
    const r = one(step([]));
    expect(get(r, 'all').n).toBe(0);
  });

  it('bad offsets are a coded error, not a crash', () => {
    const d = step([0.1, 0.2], [], { offsets: Int32Array.from([0, 5]) });
    const rs = new RunStats({ worldSize: 1 });
    expect(() => rs.addRankStep(d)).toThrow(StatsError);
    try { rs.addRankStep(d); } catch (e) { expect((e as StatsError).code).toBe('E_OFFSETS'); }
  });
});

describe('pairs and slices', () => {
  it('implicit pairs without values are all-zero with implicit: true', () => {
    const d = step([0.1, 0.2, 0.3], [], { implicit: ['policy_vs_old'] });
    const r = get(one(d), 'all', 'policy_vs_old');
    expect(r.implicit).toBe(true);
    expect([r.n, r.mean, r.abs_q99, r.ess, r.chi2, r.kl_k3, r.clip_frac]).toEqual([3, 0, 0, 1, 0, 0, 0]);
  });

  it('user slices from slice_ids are named user:<name> and cover model tokens with that id', () => {
    const d = step([0.1, 0.5, 1.0, 2.0, -1.5], [2], { sliceIds: Uint16Array.from([0, 1, 1, 1, 0]), sliceNames: ['search', 'calc'] });
    const r = one(d);
    expect(get(r, 'user:search').n).toBe(2);
    expect(get(r, 'user:calc').n).toBe(2); // token 2 is tool output
    expect(get(r, 'user:calc').abs_max).toBe(2);
  });

  it('user slices and NaN tokens get exact quantiles (rescan of kept chunks), across ranks and steps', () => {
    const rs = new RunStats({ worldSize: 2 });
    for (const step of [1, 2]) {
      const d = synthStep({ tokens: 30_000, seed: 60 + step, step, alpha: 0.4 });
      const x = d.pairs.policy_vs_ref!;
      for (let t = 0; t < x.length; t += 997) x[t] = t % 2 ? NaN : -Infinity;
      const ids = Uint16Array.from({ length: x.length }, (_, t) => (t * 7) % 3);
      const names = ['search', 'calc', 'code'];
      // splitRanks cuts whole sequences; cut slice_ids at the same boundaries
      const n = d.offsets.length - 1;
      splitRanks(d, 2).forEach((part, k) => {
        const s0 = Math.floor((k * n) / 2), s1 = Math.floor(((k + 1) * n) / 2);
        rs.addRankStep({ ...part, sliceIds: ids.slice(d.offsets[s0], d.offsets[s1]), sliceNames: names });
      });
      const [r] = rs.finalizeReady(0);
      const lab = refLabels(d);
      for (const [k, name] of names.entries()) {
        const v: number[] = [];
        for (let t = 0; t < x.length; t++) if (lab[t] <= 1 && ids[t] === k && Number.isFinite(x[t])) v.push(Math.abs(x[t]));
        const abs = Float64Array.from(v).sort();
        const q = (p: number) => {
          const h = p * (abs.length - 1), lo = Math.floor(h);
          return abs[lo] + (h - lo) * (abs[Math.min(lo + 1, abs.length - 1)] - abs[lo]);
        };
        const m = get(r, `user:${name}`);
        expect(m.n).toBe(abs.length);
        expect(m.nonfinite).toBeGreaterThan(0);
        expect([m.abs_q50, m.abs_q90, m.abs_q99, m.abs_q999, m.abs_max]).toEqual([q(0.5), q(0.9), q(0.99), q(0.999), abs[abs.length - 1]]);
      }
      for (const [slice, codes] of [['all', [0, 1]], ['pre_tool', [0]], ['post_tool', [1]]] as const) {
        const ref = reference(d, 'policy_vs_ref', [...codes]);
        const m = get(r, slice);
        expect([m.abs_q50, m.abs_q999], `step ${step} ${slice}`).toEqual([ref.quant(0.5), ref.quant(0.999)]);
        expect(m.nonfinite).toBe(ref.nonfinite);
      }
    }
    expect(rs.quantilePaths.band).toBeGreaterThan(0); // step 2's built-in slices
  });

  it('clip fraction uses the live epsilons', () => {
    const vals = [Math.log(0.85), Math.log(1.1), Math.log(1.25), Math.log(0.5)];
    expect(get(one(step(vals, [], { knobs: { epsilon_low: 0.2, epsilon_high: 0.2 } })), 'all').clip_frac).toBe(0.5);
    expect(get(one(step(vals, [], { knobs: { epsilon_low: 0.1, epsilon_high: 0.3 } })), 'all').clip_frac).toBe(0.5);
    expect(get(one(step(vals, [], { knobs: { epsilon_low: 0.6, epsilon_high: 0.3 } })), 'all').clip_frac).toBe(0);
  });
});

describe('merging', () => {
  it('a sketch payload builds the same accumulator and metrics', () => {
    const d = synthStep({ tokens: 20_000, seed: 3, alpha: 0.3 });
    const x = d.pairs.policy_vs_ref!;
    const a = new SliceAccumulator().add(x.subarray(0, 9000), d.knobs);
    const b = new SliceAccumulator().add(x.subarray(9000), d.knobs);
    const whole = new SliceAccumulator().add(x, d.knobs, [0, 9000, x.length]);
    const sk = SliceAccumulator.fromSketch(Array.from(a.hist), Array.from(a.sums)).merge(b);
    expect([...sk.hist]).toEqual([...whole.hist]);
    const m1 = sk.metrics(), m2 = whole.metrics();
    for (const k of Object.keys(m2) as (keyof typeof m2)[]) expect(Math.abs(m1[k] - m2[k]) / Math.max(Math.abs(m2[k]), 1e-300), k).toBeLessThan(1e-12);
    expect(() => SliceAccumulator.fromSketch(a.hist, a.sums, { exp_min: -20, exp_max: 8, mant_bits: 6 })).toThrow(/E_SKETCH_LAYOUT/);
  });

  it('chunks of whole sequences add up to the whole step', () => {
    const d = synthStep({ tokens: 50_000, seed: 9, alpha: 0.3 });
    const parts = splitRanks(d, 3).map((p) => ({ ...p, rank: 0, worldSize: 1 }));
    const rs = new RunStats({ worldSize: 1 });
    parts.forEach((p, i) => rs.addRankChunk(p, i, 3));
    expect(final(rs)).toHaveLength(1);
    const rs2 = new RunStats({ worldSize: 1 });
    rs2.addRankChunk(parts[0], 0, 3);
    expect(final(rs2)).toHaveLength(0); // waits for the other chunks
    const ref = reference(d, 'policy_vs_ref', [0, 1]);
    const rs3 = new RunStats({ worldSize: 1 });
    parts.forEach((p, i) => rs3.addRankChunk(p, i, 3));
    const r = final(rs3)[0];
    expect(get(r, 'all').abs_q99).toBe(ref.quant(0.99));
    expect(get(r, 'all').n).toBe(ref.n);
  });

  it('a missing rank finalises on timeout, is recorded, and its late data is counted', () => {
    const parts = splitRanks(synthStep({ tokens: 20_000, seed: 4, alpha: 0.3 }), 2).map((p) => ({ ...p, receivedAt: 1000 }));
    const rs = new RunStats({ worldSize: 2, stepTimeoutMs: 500 });
    rs.addRankStep(parts[0]);
    expect(rs.finalizeReady(1200)).toHaveLength(0);
    const [r] = rs.finalizeReady(1500);
    expect(r.ranksPresent).toEqual([0]);
    expect(r.ranksMissing).toEqual([1]);
    expect(r.perRank.map((p) => p.rank)).toEqual([0]);
    rs.addRankStep(parts[1]);
    expect(rs.late.count).toBe(1);
    expect(rs.late.steps).toEqual([1]);
    expect(rs.finalizeReady(5000)).toHaveLength(0);
    expect(() => rs.addRankStep({ ...parts[1], rank: 2 })).toThrow(/E_RANK/);
  });

  it('a later complete step finalises earlier incomplete ones first', () => {
    const mk = (s: number, rank: number) => ({ ...splitRanks(synthStep({ tokens: 5000, seed: s, alpha: 0.3, step: s }), 2)[rank], step: s });
    const rs = new RunStats({ worldSize: 2 });
    rs.addRankStep(mk(1, 0));
    rs.addRankStep(mk(2, 0));
    rs.addRankStep(mk(2, 1));
    const out = rs.finalizeReady(0);
    expect(out.map((r) => [r.step, r.ranksMissing])).toEqual([[1, [1]], [2, []]]);
  });
});
