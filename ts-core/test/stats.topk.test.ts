// Forensics top-k (stats/topk.ts) against a sort reference: every finite token of a slice, ordered by
// |ℓ| descending, then trainer rank, sequence, position; the first k. Ties, NaN/Inf, padding, several
// ranks, chunked steps and token ids.
import { describe, expect, it } from 'vitest';
import { RunStats } from '../src/stats/index.ts';
import { TopK } from '../src/stats/topk.ts';
import { mulberry32 } from '../src/util/prng.ts';
import type { PairName, StepData, TopToken } from '../src/types.ts';
import { refLabels, splitRanks, studentT3, synthStep } from './stats-helpers.ts';

const NAMES = ['pre_tool', 'post_tool', 'tool_output'];

/** The reference: all finite tokens of `slice` over the rank steps, sorted, first k. */
function reference(steps: StepData[], pair: PairName, slice: string, k: number): TopToken[] {
  const all: (TopToken & { abs: number })[] = [];
  for (const d of steps) {
    const lab = refLabels(d), x = d.pairs[pair]!;
    for (let s = 0; s + 1 < d.offsets.length; s++) {
      for (let t = d.offsets[s]; t < d.offsets[s + 1]; t++) {
        const keep = slice === 'all' ? lab[t] <= 1 : lab[t] === NAMES.indexOf(slice);
        if (!keep || !Number.isFinite(x[t])) continue;
        const tok: TopToken & { abs: number } = { rank: d.rank, seq: s, pos: t - d.offsets[s], value: x[t], abs: Math.abs(x[t]) };
        if (d.tokenIds) tok.token_id = d.tokenIds[t];
        all.push(tok);
      }
    }
  }
  all.sort((a, b) => b.abs - a.abs || a.rank - b.rank || a.seq - b.seq || a.pos - b.pos);
  return all.slice(0, k).map(({ abs: _, ...t }) => t);
}

/** A step whose values have many ties (a coarse grid), a few NaN/±Inf, and token ids. */
function tiedStep(seed: number, tokens: number, rank = 0, worldSize = 1): StepData {
  const d = synthStep({ tokens, seed, alpha: 0.35, rank, worldSize, pairs: ['policy_vs_ref', 'old_vs_rollout'] });
  const rng = mulberry32(seed + 99);
  const x = d.pairs.policy_vs_ref!;
  for (let i = 0; i < x.length; i++) x[i] = Math.round(x[i] * 20) / 20; // ties everywhere
  for (let i = 0; i < 12; i++) x[Math.floor(rng() * x.length)] = [NaN, Infinity, -Infinity][i % 3];
  d.tokenIds = Int32Array.from({ length: x.length }, () => Math.floor(rng() * 50_000));
  return d;
}

function check(steps: StepData[], k: number, chunks = 1): void {
  const rs = new RunStats({ worldSize: steps[0].worldSize, topK: k });
  for (const d of steps) {
    if (chunks === 1) rs.addRankStep(d);
    else splitRanks(d, chunks).forEach((c, i) => rs.addRankChunk({ ...c, rank: d.rank, worldSize: d.worldSize, tokenIds: chunkIds(d, i, chunks) }, i, chunks));
  }
  const [r] = rs.finalizeReady(Infinity);
  for (const pair of ['policy_vs_ref', 'old_vs_rollout'] as PairName[]) {
    for (const slice of ['all', ...NAMES]) {
      const want = reference(steps, pair, slice, k);
      expect(r.topTokens?.[`${pair}/${slice}`] ?? [], `${pair}/${slice} k=${k}`).toEqual(want);
      for (const d of steps) expect(r.rankTopTokens?.[d.rank]?.[`${pair}/${slice}`] ?? [], `rank ${d.rank}`).toEqual(reference([d], pair, slice, k));
    }
  }
}

/** token_ids of chunk i of `chunks` (splitRanks cuts sequences the same way; it does not slice the ids). */
function chunkIds(d: StepData, i: number, chunks: number): Int32Array | undefined {
  const n = d.offsets.length - 1;
  return d.tokenIds?.slice(d.offsets[Math.floor((i * n) / chunks)], d.offsets[Math.floor(((i + 1) * n) / chunks)]);
}

describe('top-k tokens by |ℓ| (forensics)', () => {
  it('matches the sort reference on one rank, with ties, NaN/Inf and token ids', () => {
    for (const k of [1, 3, 8, 32]) check([tiedStep(1, 20_000)], k);
  });

  it('matches across 4 ranks (merged and per rank)', () => {
    check([0, 1, 2, 3].map((r) => tiedStep(10 + r, 6_000, r, 4)), 8);
  });

  it('heavy tails, no ties, no token ids', () => {
    const d = synthStep({ tokens: 50_000, seed: 7, alpha: 0.3, gen: (r) => studentT3(r, 0.1), pairs: ['policy_vs_ref', 'old_vs_rollout'] });
    check([d], 8);
  });

  it('a chunked rank step numbers its sequences across chunks', () => {
    check([tiedStep(3, 30_000)], 8, 3);
  });

  it('k = 0 turns it off; a slice with fewer finite tokens than k lists them all', () => {
    const rs = new RunStats({ worldSize: 1, topK: 0 });
    rs.addRankStep(tiedStep(2, 2_000));
    expect(rs.finalizeReady(Infinity)[0].topTokens).toBeUndefined();
    const h = new TopK(5);
    h.offer(100, 1, 0, 0, 0, -1);
    h.offer(200, -2, 0, 0, 1, 7);
    expect(h.list()).toEqual([{ rank: 0, seq: 0, pos: 1, value: -2, token_id: 7 }, { rank: 0, seq: 0, pos: 0, value: 1 }]);
  });
});
