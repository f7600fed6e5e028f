// The HTML report over a run recorded by the real engine pipeline (a 2-rank capture replayed).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingWriter } from '../src/record/index.ts';
import { helloFrames, stepFrames } from '../src/record/synthetic.ts';
import { replayToDir } from '../src/commands/replay.ts';
import { writeControlRun } from '../src/report/control-run.ts';
import { downsample, lineChart } from '../src/report/svg.ts';
import { auditLeaves } from '../src/report/audit.ts';

const CLI = path.resolve('ts-core/bin/tailguard.mjs');
let dir: string;
let runDir: string;
let html: string;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-report-'));
  const cap = path.join(dir, 'r.tgcap');
  const w = new RecordingWriter(cap);
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
  it('is self-contained: inline script and style only, no external resources', () => {
    expect(html).not.toMatch(/<script[^>]*src=/i);
    expect(html.replace(/xmlns="http:\/\/www\.w3\.org\/2000\/svg"|'http:\/\/www\.w3\.org\/2000\/svg'/g, '')).not.toMatch(/https?:\/\//);
    expect(html.replace(/<script>[\s\S]*?<\/script>/g, '')).not.toMatch(/<link|<img|@import|url\(/i);
  });

  it('draws the CDF and the survival curve (1 − F, log y) of |ℓ| per slice, pre_tool before post_tool', () => {
    for (const pair of ['policy_vs_ref', 'policy_vs_old']) {
      const pre = svg(`cdf-${pair}-pre_tool`), post = svg(`cdf-${pair}-post_tool`), surv = svg(`surv-${pair}-post_tool`);
      expect(post).toMatch(/data-curves="1[23]"/); // 24 windows thinned to about 12 curves
      expect(post).toContain('24 windows');
      expect(pre).toMatch(/\|ℓ\| \(nats, log\)/);
      expect(surv).toMatch(/data-ylog="1"/);
      expect(surv).toContain('P(|ℓ| &gt; x)');
      expect(html.indexOf(`cdf-${pair}-pre_tool`)).toBeLessThan(html.indexOf(`cdf-${pair}-post_tool`));
      const colours = [...post.matchAll(/class="series"[^>]*stroke="([^"]+)"/g)].map((m) => m[1]);
      expect(new Set(colours).size).toBeGreaterThan(5);
    }
  });

  it('has timelines per slice, log y for tails, KL and exceedance, post_tool drawn last, with a text summary', () => {
    for (const [m, log] of [['abs_q95', true], ['abs_q99', true], ['abs_q999', true], ['ess', false], ['ess_seq', false], ['alpha', false], ['kl_k3', true], ['exceed_2', true]] as const) {
      const s = svg(`tl-policy_vs_ref-${m}`);
      expect(s, m).toMatch(/data-last-x="24"/);
      expect(s.includes('data-ylog="1"'), m).toBe(log);
      expect(s, m).toMatch(/<desc>[^<]+<\/desc>/);
      if (m !== 'alpha') {
        const names = [...s.matchAll(/class="series" data-name="([^"]+)"/g)].map((x) => x[1]);
        expect(names.at(-1), m).toBe('post_tool');
        for (const slice of ['all', 'pre_tool']) expect(names, `${m} ${slice}`).toContain(slice);
      }
    }
    const d = /data-name="post_tool" d="([^"]+)"/.exec(svg('tl-policy_vs_ref-abs_q99'))![1];
    expect(d.split(/[ML]/).filter(Boolean).length).toBe(24);
    expect(svg('tl-policy_vs_ref-abs_q99')).toMatch(/aria-label="q99 \|ℓ\|\. [^"]*post_tool (rose|fell)/);
    expect(svg('tl-policy_vs_ref-shape')).toContain('data-name="post drift-aware"');
    expect(html).toContain('id="defs"'); // ℓ and its units
    expect(html).toMatch(/in <b>nats<\/b>/);
  });

  it('leads with what happened; episodes are bands on one event lane per section; evidence only in the table', () => {
    expect(html.indexOf('id="what-happened"')).toBeLessThan(html.indexOf('id="pair-'));
    expect(html).toMatch(/<p id="verdict"[^>]*>[^<]*post_tool_tail_growth[^<]*from step \d+/);
    const lane = svg('lane-policy_vs_ref');
    expect(lane).toMatch(/class="band sev-(warn|high)"/);
    expect(lane).toMatch(/<a class="ev" href="#step-\d+"/);
    expect(svg('tl-policy_vs_ref-abs_q99')).toMatch(/class="band sev-/);
    expect(svg('tl-policy_vs_ref-abs_q99')).not.toMatch(/evidence|<title>/);
    expect(html).toMatch(/<svg[^>]*class="legendbar"/);
    const audit = html.slice(html.indexOf('<section id="audit"'));
    const rows = [...audit.matchAll(/<script type="application\/json" class="audit-data" id="audit-b\d+">([^<]*)<\/script>/g)].flatMap((m) => JSON.parse(m[1]));
    expect(rows.filter((r) => r[1] === 'finding').length).toBe((html.match(/<dt>findings<\/dt><dd>(\d+)/) ?? [])[1] ? Number(/<dt>findings<\/dt><dd>(\d+)/.exec(html)![1]) : -1);
    expect(Object.keys(rows.find((r) => r[1] === 'finding')[6])).toContain('values'); // evidence, once
    expect(audit).toContain('data-filter="checkpoint"');
  });

  it('lists a finding\'s top tokens (evidence.top_tokens) in its audit row, out of the evidence JSON', () => {
    const f = { kind: 'finding' as const, detector: 'post_tool_tail_growth', severity: 'high' as const, step: 7, pair: 'policy_vs_ref' as const, slice: 'post_tool' as const, message: 'tail grows', evidence: { values: { q99: 1.5 }, top_tokens: [{ rank: 1, seq: 3, pos: 12, value: -2.5, token_id: 42, text: '<tool>' }, { rank: 0, seq: 0, pos: 4, value: 2.25, token_id: 7 }] } };
    const { bodies } = auditLeaves([f], new Map());
    const row = JSON.parse(/>(\[.*\])</.exec(bodies[0][1])![1])[0];
    expect(row.slice(2, 6)).toEqual(['high', 'post_tool_tail_growth', 'policy_vs_ref / post_tool', 'tail grows | top |ℓ|: 2.5 (r1 s3 p12 "<tool>"), 2.25 (r0 s0 p4 id 7)']);
    expect(row[6]).toEqual({ values: { q99: 1.5 } });
    expect(bodies[0][1]).not.toContain('<tool>'); // escaped inside the JSON script
    // Thresholds (the policy's) stay on the finding that raised the episode, not on each repeat.
    const raise = { ...f, evidence: { values: { q99: 1 }, thresholds: { q99: 2 }, event: 'raise' } };
    const repeat = { ...f, step: 8, evidence: { values: { q99: 3 }, thresholds: { q99: 2 }, event: 'repeat' } };
    const rows = JSON.parse(/>(\[.*\])</.exec(auditLeaves([raise, repeat], new Map()).bodies[0][1])![1]);
    expect(rows.map((r: unknown[]) => r[6])).toEqual([{ values: { q99: 1 }, thresholds: { q99: 2 }, event: 'raise' }, { values: { q99: 3 }, event: 'repeat' }]);
  });

  it('shows the trainer logs and per-rank attribution', () => {
    for (const k of ['loss', 'reward', 'kl']) expect(svg(`logs-${k}`), k).toMatch(/data-points="24"/);
    expect(svg('knobs')).toContain('data-name="beta"');
    const rank = svg('rank-policy_vs_ref-post_tool');
    expect(rank).toContain('data-name="rank 0"');
    expect(rank).toContain('data-name="rank 1"');
    expect(html).toMatch(/torn last line/);
  });

  it('keeps spikes when it downsamples long series, and says why a chart is empty', () => {
    const pts: [number, number][] = Array.from({ length: 10_000 }, (_, i) => [i, i === 7777 ? 100 : 1]);
    const ds = downsample(pts, 160);
    expect(ds.length).toBeLessThanOrEqual(160);
    expect(ds.some(([x, y]) => x === 7777 && y === 100)).toBe(true);
    expect([ds[0][0], ds.at(-1)![0]]).toEqual([0, 9999]); // never cut short
    expect(lineChart({ id: 'e', title: 'empty', series: [] })).toContain('no data yet');
    expect(lineChart({ id: 'e', title: 'empty', series: [], empty: 'no tokens in this slice' })).toContain('no tokens in this slice');
  });
});

describe('tailguard report A B', () => {
  it('overlays an observe run and a control run of the real engine: both verdicts, onsets side by side, A solid and B dashed', async () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-compare-'));
    try {
      const obs = await writeControlRun({ runDir: d, runId: 'obs', steps: 50, mode: 'observe' });
      const ctl = await writeControlRun({ runDir: d, runId: 'ctl', steps: 50 });
      const out = path.join(d, 'cmp.html');
      const r = spawnSync(process.execPath, [CLI, 'report', obs.dir, ctl.dir, '-o', out], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const page = fs.readFileSync(out, 'utf8');
      expect(/<p class="verdict" id="verdict-a">A: ([^<]*)</.exec(page)?.[1]).not.toMatch(/rolled back/);
      expect(/<p class="verdict" id="verdict-b">B: ([^<]*)</.exec(page)?.[1]).toMatch(/rolled back at step \d+ to checkpoint step \d+ \(applied\)/);
      const q99 = /<svg[^>]*id="cmp-policy_vs_ref-abs_q99"[\s\S]*?<\/svg>/.exec(page)![0];
      expect(q99).toContain('data-name="A post_tool"');
      expect(q99).toMatch(/data-name="B post_tool"[^>]*stroke-dasharray="5 3"/);
      expect(page).toMatch(/<tr><td>policy_vs_ref · post_tool q99 \|ℓ\|<\/td><td>[\d–]+<\/td><td>[\d–]+<\/td><\/tr>/);
    } finally {
      fs.rmSync(d, { recursive: true, force: true });
    }
  });
});

