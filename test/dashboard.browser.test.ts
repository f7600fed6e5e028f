// Real browser test of the live dashboard: Debian's Chromium driven by playwright-core loads the page
// while a synthetic run streams into the run store, and checks that the charts render and update.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunStore } from '../ts-core/src/store/index.ts';
import { syntheticStepResult } from '../ts-core/src/report/synthetic.ts';
import { startUi, type UiServer } from '../ts-core/src/ui/server.ts';
import { Dealer } from 'zeromq';
import { decodeHeader } from '../ts-core/src/protocol/index.ts';
import { helloFrames, stepFrames } from '../ts-core/src/capture/synthetic.ts';
import { replayToDir } from '../ts-core/src/commands/replay.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = path.resolve('test-artifacts');

let root: string;
let userDataDir: string;
let browser: BrowserContext; // persistent context = a fresh --user-data-dir
let ui: UiServer;

beforeAll(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-ui-'));
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-chromium-'));
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  ui = await startUi({ root, port: 0, pollMs: 100 });
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

afterAll(async () => {
  await browser?.close();
  await ui?.close();
  fs.rmSync(root, { recursive: true, force: true });
  fs.rmSync(userDataDir, { recursive: true, force: true });
});

describe('live dashboard in Chromium', () => {
  it('renders the CDF chart and timelines and updates them while a run streams', async () => {
    expect(fs.existsSync(CHROMIUM), `${CHROMIUM} missing: run \`make setup-browser\``).toBe(true);
    const store = RunStore.open(root, 'live-run');
    store.writeRunJson({ trainer: 'grpo', world_size: 2, window: 5 });
    let step = 0;
    const writeSteps = (n: number) => {
      for (let i = 0; i < n; i++) {
        step++;
        store.appendStepResult(syntheticStepResult('live-run', step, { worldSize: 2, window: 5 }));
        if (step === 14) store.appendDirective({ kind: 'finding', detector: 'post_tool_tail_growth', severity: 'high', step, pair: 'policy_vs_ref', slice: 'post_tool', message: 'post_tool q99 rising while pre_tool flat', evidence: { q99: 0.9, baseline_q99: 0.3 } });
        store.commitStep();
      }
    };
    writeSteps(10);

    const pageErrors: string[] = [];
    const page = await browser.newPage();
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    // Any request that is not the dashboard itself would break the "no network" promise.
    const foreign: string[] = [];
    page.on('request', (r) => { if (!r.url().startsWith(ui.url)) foreign.push(r.url()); });

    await page.goto(new URL('/run/live-run/', ui.url).href);
    await page.waitForFunction(() => document.body.dataset.lastStep === '10', null, { timeout: 20_000 });
    const cdf = page.locator('svg#cdf-policy_vs_ref-post_tool');
    await expect.poll(() => cdf.getAttribute('data-curves')).toBe('2');
    expect(await page.locator('svg#cdf-policy_vs_ref-pre_tool path.series').count()).toBe(2);
    const q99 = page.locator('svg#tl-policy_vs_ref-abs_q99');
    expect(await q99.getAttribute('data-last-x')).toBe('10');
    const d10 = await q99.locator('path.series[data-name="post_tool"]').getAttribute('d');
    expect(d10?.split('L').length).toBe(10); // one M + 9 L: a point per step

    // Stream more steps; the open page must follow without a reload.
    const updatesBefore = Number(await page.evaluate(() => document.body.dataset.updates));
    for (let k = 0; k < 4; k++) {
      writeSteps(5);
      await page.waitForFunction((s) => document.body.dataset.lastStep === String(s), step, { timeout: 20_000 });
    }
    expect(Number(await page.evaluate(() => document.body.dataset.updates))).toBeGreaterThan(updatesBefore);
    expect(await cdf.getAttribute('data-curves')).toBe('6');
    expect(await q99.getAttribute('data-last-x')).toBe('30');
    const d30 = await q99.locator('path.series[data-name="post_tool"]').getAttribute('d');
    expect(d30).not.toBe(d10);
    // The finding is a marker with its evidence on hover, on the timelines and in the audit table.
    expect(await page.locator('svg#tl-policy_vs_ref-abs_q99 g.marker.finding-high title').textContent()).toContain('baseline_q99');
    expect(await page.locator('#audit tr.finding').count()).toBe(1);
    for (const id of ['tl-policy_vs_ref-ess', 'tl-policy_vs_ref-alpha', 'tl-policy_vs_ref-kl_k3', 'logs-loss', 'logs-reward', 'logs-kl', 'rank-policy_vs_ref-post_tool']) {
      expect(Number(await page.locator(`svg#${id}`).getAttribute('data-points')), id).toBeGreaterThan(0);
    }
    await expect.poll(() => page.locator('#live').textContent()).toBe('live · step 30');
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
    expect(foreign).toEqual([]);
    store.close();
  });

  it('lists runs and rejects unsafe run ids', async () => {
    const res = await fetch(new URL('/api/runs', ui.url));
    expect((await res.json()).map((r: { run_id: string }) => r.run_id)).toContain('live-run');
    expect((await fetch(new URL('/run/..%2F..%2Fetc/', ui.url))).status).toBe(404);
    expect((await fetch(new URL('/run/nope/', ui.url))).status).toBe(404);
  });
});

describe('tailguard serve --ui --record', () => {
  let proc: ChildProcess | null = null;
  afterAll(() => { if (proc && proc.exitCode === null) proc.kill('SIGKILL'); });

  it('a real engine fed over ZeroMQ drives the dashboard; its recording replays to the same run files', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-serve-ui-'));
    const ready = path.join(dir, 'ready');
    proc = spawn(process.execPath, [path.resolve('ts-core/bin/tailguard.mjs'), 'serve', '--endpoint', 'tcp://127.0.0.1:0', '--ready-file', ready, '--run-dir', path.join(dir, 'runs'), '--window', '5', '--ui', '0', '--record', path.join(dir, 'cap.tgcap'), '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let log = '';
    proc.stdout!.on('data', (d) => (log += d));
    for (let i = 0; i < 600 && !fs.existsSync(ready); i++) await new Promise((r) => setTimeout(r, 50));
    const uiUrl = /"url":"(http:\/\/127\.0\.0\.1:\d+\/)"/.exec(log)?.[1];
    expect(uiUrl, log).toBeTruthy();

    const run = { runId: 'engine-run', onset: 8 };
    const sock = new Dealer({ linger: 0, receiveTimeout: 20_000 });
    sock.connect(fs.readFileSync(ready, 'utf8').trim());
    await sock.send(helloFrames(run));
    expect(decodeHeader((await sock.receive())[0]).type).toBe('welcome');
    const send = async (from: number, to: number) => {
      for (let s = from; s <= to; s++) {
        await sock.send(stepFrames(run, s));
        expect(decodeHeader((await sock.receive())[0]).type).toBe('directive');
      }
    };
    await send(1, 10);

    const page = await browser.newPage();
    await page.goto(new URL('/run/engine-run/', uiUrl!).href);
    await page.waitForFunction(() => document.body.dataset.lastStep === '10', null, { timeout: 20_000 });
    const cdf = page.locator('svg#cdf-policy_vs_ref-post_tool');
    const curves10 = Number(await cdf.getAttribute('data-curves'));
    expect(curves10).toBeGreaterThan(0);
    await send(11, 30);
    await page.waitForFunction(() => document.body.dataset.lastStep === '30', null, { timeout: 20_000 });
    expect(Number(await cdf.getAttribute('data-curves'))).toBeGreaterThan(curves10);
    expect(await page.locator('svg#tl-policy_vs_ref-abs_q99').getAttribute('data-last-x')).toBe('30');
    expect(Number(await page.locator('svg#tl-policy_vs_ref-abs_q99 path.series[data-name="post_tool"]').evaluate((p) => (p as SVGPathElement).getTotalLength()))).toBeGreaterThan(0);
    expect(await page.locator('g.marker').count()).toBeGreaterThan(0); // the growing tail fired detectors
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-engine.png'), fullPage: true });
    await page.close();
    sock.close();
    proc.kill('SIGTERM');
    await new Promise((r) => proc!.once('exit', r));

    // Offline replay of what the engine recorded reproduces the live run's files.
    const summary = await replayToDir(path.join(dir, 'cap.tgcap'), { runDir: path.join(dir, 'replayed'), window: '5' });
    expect(summary.accepted).toBe(31);
    for (const f of ['metrics.jsonl', 'windows.jsonl', 'directives.jsonl']) {
      const live = fs.readFileSync(path.join(dir, 'runs/engine-run', f), 'utf8');
      expect(live.length, f).toBeGreaterThan(0);
      expect(fs.readFileSync(path.join(dir, 'replayed/engine-run', f), 'utf8'), f).toBe(live);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
