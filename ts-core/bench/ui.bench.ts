// What an open live page costs the engine: a real `tailguard serve --ui` ingests the same synthetic run
// (capture/synthetic.ts over ZeroMQ, one reply awaited per step) with no viewer, with one Chromium tab on
// the live page, and with a raw SSE client counting the bytes it receives. Trials alternate so drift in
// the machine's load hits every condition alike; the figure is the median ratio of back-to-back pairs.
//   npx tsx ts-core/bench/ui.bench.ts [--steps 200] [--rounds 3] [--write]   (`npm run bench:ui -- --write`)
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium } from 'playwright-core';
import { Dealer } from 'zeromq';
import { helloFrames, stepFrames } from '../src/record/synthetic.ts';
import { loadAvg, runLine, writeSection } from './doc-section.ts';

const arg = (name: string, d: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};
const STEPS = arg('steps', 200), ROUNDS = arg('rounds', 3);
const CLI = path.resolve(import.meta.dirname, '../bin/tailguard.mjs');
type Cond = 'none' | 'tab' | 'sse';

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return p;
}

async function trial(cond: Cond, browser: import('playwright-core').Browser, k: number): Promise<{ seconds: number; bytes: number; updates: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-uibench-'));
  const ready = path.join(dir, 'ready');
  const uiPort = await freePort();
  const proc = spawn(process.execPath, [CLI, 'serve', '--endpoint', 'tcp://127.0.0.1:0', '--ready-file', ready, '--run-dir', path.join(dir, 'runs'), '--ui', String(uiPort), '--log-level', 'warn'], { stdio: 'ignore' });
  for (let i = 0; i < 600 && !fs.existsSync(ready); i++) await new Promise((r) => setTimeout(r, 50));
  const runId = `bench-${k}`;
  const run = { runId, onset: 60, rankSkew: 0 };
  const sock = new Dealer({ linger: 0, receiveTimeout: 30_000 });
  sock.connect(fs.readFileSync(ready, 'utf8').trim());
  await sock.send(helloFrames(run));
  await sock.receive();
  await sock.send(stepFrames(run, 1));
  await sock.receive();
  const url = `http://127.0.0.1:${uiPort}/run/${runId}/`;
  let bytes = 0, updates = 0;
  let page: import('playwright-core').Page | null = null;
  let req: http.ClientRequest | null = null;
  if (cond === 'tab') {
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.goto(url);
    await page.waitForFunction(() => document.body.dataset.lastStep === '1', null, { timeout: 30_000 });
  } else if (cond === 'sse') {
    await new Promise<void>((resolve) => {
      req = http.get(`${url}events`, (res) => {
        res.on('data', (d: Buffer) => { bytes += d.length; updates += (d.toString().match(/^event: /gm) ?? []).length; });
        resolve();
      });
    });
  }
  const t0 = performance.now();
  for (let s = 2; s <= STEPS; s++) {
    await sock.send(stepFrames(run, s));
    await sock.receive();
  }
  const seconds = (performance.now() - t0) / 1000;
  if (page) {
    await page.waitForFunction((n) => document.body.dataset.lastStep === String(n), STEPS, { timeout: 30_000 });
    updates = Number(await page.evaluate(() => document.body.dataset.updates));
    await page.close();
  }
  (req as http.ClientRequest | null)?.destroy();
  sock.close();
  proc.kill('SIGTERM');
  await new Promise((r) => proc.once('exit', r));
  fs.rmSync(dir, { recursive: true, force: true });
  return { seconds, bytes, updates };
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function main(): Promise<void> {
  const load0 = loadAvg();
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
  const res: Record<Cond, { seconds: number; bytes: number; updates: number }[]> = { none: [], tab: [], sse: [] };
  const ratios: Record<'tab' | 'sse', number[]> = { tab: [], sse: [] };
  let k = 0;
  await trial('none', browser, k++); // warm-up (tsx compile cache, page cache)
  // Back-to-back pairs (ABBA order): the two runs of a pair share the machine's load, so their ratio is
  // far steadier than a ratio of medians on a shared box.
  for (let r = 0; r < ROUNDS; r++) {
    for (const [a, b] of [['none', 'tab'], ['tab', 'none'], ['none', 'sse']] as [Cond, Cond][]) {
      const ta = await trial(a, browser, k++), tb = await trial(b, browser, k++);
      res[a].push(ta);
      res[b].push(tb);
      const [none, other, cond] = a === 'none' ? [ta, tb, b] : [tb, ta, a];
      ratios[cond as 'tab' | 'sse'].push(other.seconds / none.seconds);
      const extra = cond === 'sse' ? ` (${(other.bytes / 1024).toFixed(0)} KiB in ${other.updates} events)` : ` (${other.updates} page updates)`;
      console.log(`round ${r + 1}: none ${none.seconds.toFixed(2)} s, ${cond} ${other.seconds.toFixed(2)} s${extra}, ratio ${(other.seconds / none.seconds).toFixed(3)}`);
    }
  }
  await browser.close();
  const none = median(res.none.map((t) => t.seconds)), tab = median(res.tab.map((t) => t.seconds)), sse = median(res.sse.map((t) => t.seconds));
  const rt = median(ratios.tab), rs = median(ratios.sse);
  const kib = median(res.sse.map((t) => t.bytes)) / 1024;
  const lines = [
    `## Live page cost (generated by \`npm run bench:ui -- --write\`)`,
    '',
    `A real \`tailguard serve --ui\` ingests ${STEPS} synthetic steps (1 rank, 1024 tokens per step, one reply awaited per step over ZeroMQ); the live page runs in a worker thread, sends each open page only the charts that changed (at most once a second), and the page swaps a chart only when it is in view. ${ROUNDS} rounds of back-to-back pairs (none/tab, tab/none, none/sse); the ratio is the median of the per-pair ratios (each pair shares the machine's load), the times are medians.`,
    '',
    '| condition | run time (s), median | ratio to no viewer (median of pairs) | pair ratios |',
    '|---|---|---|---|',
    `| no viewer | ${none.toFixed(2)} | 1.00 | |`,
    `| one Chromium tab on the live page | ${tab.toFixed(2)} | **${rt.toFixed(3)}** | ${ratios.tab.map((x) => x.toFixed(2)).join(', ')} |`,
    `| one raw SSE client | ${sse.toFixed(2)} | ${rs.toFixed(3)} | ${ratios.sse.map((x) => x.toFixed(2)).join(', ')} (received ${kib.toFixed(0)} KiB per run) |`,
    '',
    `Target: a run with one tab open takes at most 1.1× the time with none. Before (issue 16): 200 steps took 4.5 s with no viewer and 23.5 s with a Chromium tab (5.2×), 369 MB sent in 16 s.`,
    runLine(load0),
  ];
  console.log(`\nratio tab/none ${rt.toFixed(3)}, sse/none ${rs.toFixed(3)} (medians of pair ratios)`);
  if (process.argv.includes('--write')) {
    writeSection('live-page', lines.join('\n'));
    console.log('wrote docs/benchmarks.md (live-page section)');
  }
}

await main();
