// The HTML report over a run recorded by the real engine pipeline (a 2-rank capture replayed).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaptureWriter } from '../src/capture/index.ts';
import { helloFrames, stepFrames } from '../src/capture/synthetic.ts';
import { replayToDir } from '../src/commands/replay.ts';
import { downsample, lineChart } from '../src/report/svg.ts';

const CLI = path.resolve('ts-core/bin/tailguard.mjs');
let dir: string;
let runDir: string;
let html: string;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-report-'));
  const cap = path.join(dir, 'r.tgcap');
  const w = new CaptureWriter(cap);
  const run = { runId: 'rep-run', worldSize: 2, onset: 6, rankSkew: 1 };
  let t = 1_700_000_000_000;
  for (const r of [0, 1]) w.write(helloFrames(run, r), t);
  for (let s = 1; s <= 24; s++) for (const r of [0, 1]) w.write(stepFrames(run, s, r), (t += 500));
  w.close();
  await replayToDir(cap, { runDir: path.join(dir, 'runs'), window: '4' });
  runDir = path.join(dir, 'runs/rep-run');
  fs.appendFileSync(path.join(runDir, 'steps.jsonl'), '{"step":25,"wor'); // torn tail: reported, not fatal
  const r = spawnSync(process.execPath, [CLI, 'report', runDir, '-o', path.join(dir, 'out.html')], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  expect(r.stderr).toMatch(/warning: steps\.jsonl: torn last line/);
  expect(r.stdout).toMatch(/wrote .*out\.html \(24 steps/);
  html = fs.readFileSync(path.join(dir, 'out.html'), 'utf8');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const svg = (id: string) => new RegExp(`<svg[^>]*id="${id}"[^>]*>([\\s\\S]*?)</svg>`).exec(html)?.[0] ?? '';

describe('tailguard report', () => {
  it('is self-contained: no scripts, no external resources', () => {
    expect(html).not.toMatch(/<script/i);
    expect(html.replace(/xmlns="http:\/\/www\.w3\.org\/2000\/svg"/g, '')).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/<link|<img|@import|url\(/i);
  });

  it('draws the CDF of |ℓ| per slice, one curve per window, pre_tool beside post_tool', () => {
    for (const pair of ['policy_vs_ref', 'policy_vs_old']) {
      const pre = svg(`cdf-${pair}-pre_tool`), post = svg(`cdf-${pair}-post_tool`);
      expect(post).toMatch(/data-curves="24"/); // a rolling window record per step
      expect((post.match(/class="series"/g) ?? []).length).toBe(24);
      expect(pre).toMatch(/\|ℓ\| \(log\)/);
      expect(html.indexOf(`cdf-${pair}-pre_tool`)).toBeLessThan(html.indexOf(`cdf-${pair}-post_tool`));
      // colour grade: first and last curve differ
      const colours = [...post.matchAll(/class="series"[^>]*stroke="([^"]+)"/g)].map((m) => m[1]);
      expect(new Set(colours).size).toBeGreaterThan(5);
    }
  });

  it('has timelines per slice for the tail, ESS, α, KL and exceedance', () => {
    for (const m of ['abs_q95', 'abs_q99', 'abs_q999', 'ess', 'ess_seq', 'alpha', 'kl_k3', 'exceed_2']) {
      const s = svg(`tl-policy_vs_ref-${m}`);
      expect(s, m).toMatch(/data-last-x="24"/);
      if (m !== 'alpha') for (const slice of ['all', 'pre_tool', 'post_tool']) expect(s, `${m} ${slice}`).toContain(`data-name="${slice}"`);
    }
    // 24 points per slice series: one per step.
    const d = /data-name="post_tool" d="([^"]+)"/.exec(svg('tl-policy_vs_ref-abs_q99'))![1];
    expect(d.split(/[ML]/).filter(Boolean).length).toBe(24);
    expect(svg('tl-policy_vs_ref-shape')).toContain('data-name="post drift-aware"');
  });

  it('shows the trainer logs, findings with evidence on hover, and per-rank attribution', () => {
    for (const k of ['loss', 'reward', 'kl']) expect(svg(`logs-${k}`), k).toMatch(/data-points="24"/);
    expect(svg('knobs')).toContain('data-name="beta"');
    const markers = [...svg('tl-policy_vs_ref-abs_q99').matchAll(/<g class="marker ([^"]+)"><title>([^<]+)<\/title>/g)];
    expect(markers.length).toBeGreaterThan(0);
    expect(markers.some(([, , title]) => /evidence|q99|threshold|baseline/i.test(title))).toBe(true);
    expect(html).toContain('id="audit"');
    const rank = svg('rank-policy_vs_ref-post_tool');
    expect(rank).toContain('data-name="rank 0"');
    expect(rank).toContain('data-name="rank 1"');
    expect(html).toMatch(/torn last line/);
  });

  it('keeps spikes when it downsamples long series, and draws an empty chart without data', () => {
    const pts: [number, number][] = Array.from({ length: 10_000 }, (_, i) => [i, i === 7777 ? 100 : 1]);
    const ds = downsample(pts, 600);
    expect(ds.length).toBeLessThanOrEqual(600);
    expect(ds.some(([x, y]) => x === 7777 && y === 100)).toBe(true);
    expect(lineChart({ id: 'e', title: 'empty', series: [] })).toContain('no data yet');
  });
});
