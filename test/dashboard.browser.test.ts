// Real browser tests of the report and the live page: Debian's Chromium driven by playwright-core.
// Fixtures are runs through the real engine: report/control-run.ts (in process) and `tailguard serve`.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Dealer } from 'zeromq';
import { decodeHeader } from '../ts-core/src/protocol/index.ts';
import { helloFrames, stepFrames } from '../ts-core/src/record/synthetic.ts';
import { replayToDir } from '../ts-core/src/commands/replay.ts';
import { writeControlRun } from '../ts-core/src/report/control-run.ts';
import { reportFromDir } from '../ts-core/src/report/index.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = path.resolve('test-artifacts');
const CLI = path.resolve('ts-core/bin/tailguard.mjs');

let tmp: string;
let userDataDir: string;
let browser: BrowserContext; // persistent context = a fresh --user-data-dir
const procs: ChildProcess[] = [];

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-browser-'));
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-chromium-'));
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  expect(fs.existsSync(CHROMIUM), `${CHROMIUM} missing: run \`make setup-browser\``).toBe(true);
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

afterAll(async () => {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  await browser?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.rmSync(userDataDir, { recursive: true, force: true });
});

async function open(url: string): Promise<{ page: Page; errors: string[]; foreign: string[] }> {
  const page = await browser.newPage();
  const errors: string[] = [], foreign: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('request', (r) => { if (!r.url().startsWith(url.replace(/\/run\/.*$/, '')) && !r.url().startsWith('file:') && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) foreign.push(r.url()); });
  await page.goto(url);
  return { page, errors, foreign };
}

describe('the report of a control run (real engine, rollback)', () => {
  it('says on the first screen what happened: the first finding, the rollback, its target and outcome', async () => {
    const run = await writeControlRun({ runDir: path.join(tmp, 'runs'), runId: 'control-run', steps: 60, worldSize: 2 });
    const rollback = run.directives.find((d) => d.action === 'rollback');
    expect(rollback, 'the fixture policy rolls back').toBeTruthy();
    const target = (rollback!.params.checkpoint as { step: number }).step;
    const findings = fs.readFileSync(path.join(run.dir, 'directives.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.kind === 'finding' && e.severity !== 'info');
    const first = findings[0];
    const file = path.join(tmp, 'control.html');
    fs.writeFileSync(file, reportFromDir(run.dir).html);

    const { page, errors, foreign } = await open(`file://${file}`);
    const verdict = page.locator('#verdict');
    const text = (await verdict.textContent())!;
    expect(text).toContain(first.detector);
    expect(text).toContain(`from step ${first.step}`);
    expect(text).toContain(`rolled back at step ${rollback!.step} to checkpoint step ${target} (applied)`);
    const row = page.locator('#directives tr.act-rollback');
    expect(await row.textContent()).toMatch(new RegExp(`step ${target}.*applied`));
    expect(await page.locator('#directives tr.act-tighten').textContent()).toMatch(/partly applied — refused: beta not changed/);
    // The first screen (1000 px) holds the verdict and the rollback row.
    for (const el of [verdict, row]) expect((await el.boundingBox())!.y + 10).toBeLessThan(1000);

    // The audit table: open, findings + directives, complete, paginated; checkpoints behind a filter.
    const total = Number(await page.locator('[data-count="finding"]').textContent()) + Number(await page.locator('[data-count="directive"]').textContent());
    expect(await page.locator('#audit .pageinfo').textContent()).toContain(`(${total} rows)`);
    expect(await page.locator('#audit-rows tr.k-checkpoint').count()).toBe(0);
    await page.locator('[data-filter="checkpoint"]').check();
    expect(await page.locator('#audit .pageinfo').textContent()).not.toContain(`(${total} rows)`);

    // A row (or an event) marks its step on every step chart, and keyboard users reach the events.
    await page.locator(`#directives tr.act-rollback a[data-step="${rollback!.step}"]`).click();
    const charts = await page.locator('svg.chart[id^="tl-"][data-box]').count();
    expect(charts).toBeGreaterThan(10);
    expect(await page.locator('svg.chart[id^="tl-"] line.hl').count()).toBe(charts);
    expect(await page.locator(`#audit-rows tr.hlrow[data-step="${rollback!.step}"]`).count()).toBeGreaterThan(0);
    const ev = page.locator('svg.lane a.ev').first();
    await ev.focus();
    expect(await page.evaluate(() => document.activeElement?.closest('svg')?.classList.contains('lane'))).toBe(true);
    await page.keyboard.press('Enter');
    expect(await page.locator('#hl-status').textContent()).toBe(`marked: step ${await ev.getAttribute('data-step')}`);

    // Accessibility: every chart has a text summary. Export: CSV values come back in axis units.
    for (const id of await page.locator('svg.chart').evaluateAll((els) => els.map((e) => e.id))) {
      expect(await page.locator(`svg#${id} desc`).textContent(), id).toBeTruthy();
    }
    const csv = (await page.evaluate(() => (window as unknown as { tailguardCsv(id: string): string }).tailguardCsv('tl-policy_vs_ref-abs_q99')))!;
    const post = csv.split('\n').filter((l) => l.startsWith('"post_tool"')).map((l) => l.split(',').map(Number));
    expect(post.length).toBe(60);
    const q99 = fs.readFileSync(path.join(run.dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.pair === 'policy_vs_ref' && m.slice === 'post_tool');
    for (const [i, m] of q99.entries()) expect(Math.abs(post[i][2] / m.abs_q99 - 1), `step ${m.step}`).toBeLessThan(0.02);
    const download = page.waitForEvent('download');
    await page.locator('svg#tl-policy_vs_ref-abs_q99').hover();
    await page.locator('button[data-export="png"][data-for="tl-policy_vs_ref-abs_q99"]').click();
    expect((await download).suggestedFilename()).toBe('tl-policy_vs_ref-abs_q99.png');

    // Dark mode.
    const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const light = await bg();
    await page.locator('[data-opt="dark"]').check();
    expect(await bg()).not.toBe(light);
    await page.locator('[data-opt="dark"]').uncheck();
    await page.screenshot({ path: path.join(ARTIFACTS, 'report-control.png') });
    expect(errors).toEqual([]);
    expect(foreign).toEqual([]);
    await page.close();
  });
});

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function waitFile(file: string): Promise<string> {
  for (let i = 0; i < 600 && !fs.existsSync(file); i++) await new Promise((r) => setTimeout(r, 50));
  return fs.readFileSync(file, 'utf8').trim();
}

function engine(dir: string, extra: string[] = []): { proc: ChildProcess; ready: string; log: () => string } {
  const ready = path.join(dir, `ready-${Date.now()}`);
  const proc = spawn(process.execPath, [CLI, 'serve', '--endpoint', 'tcp://127.0.0.1:0', '--ready-file', ready, '--run-dir', path.join(dir, 'runs'), '--window', '5', '--log-level', 'info', ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  procs.push(proc);
  let log = '';
  proc.stdout!.on('data', (d) => (log += d));
  return { proc, ready, log: () => log };
}

async function driver(endpoint: string, runId: string) {
  const sock = new Dealer({ linger: 0, receiveTimeout: 20_000 });
  sock.connect(endpoint);
  const run = { runId, onset: 8 };
  await sock.send(helloFrames(run));
  expect(decodeHeader((await sock.receive())[0]).type).toBe('welcome');
  return {
    async send(from: number, to: number) {
      for (let s = from; s <= to; s++) {
        await sock.send(stepFrames(run, s));
        expect(decodeHeader((await sock.receive())[0]).type).toBe('directive');
      }
    },
    close: () => sock.close(),
  };
}

describe('the live page', () => {
  it('`tailguard ui` follows a real engine: updates keep the page state, survive an engine restart, and end "finished"', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'live-'));
    fs.mkdirSync(path.join(dir, 'runs'));
    const uiPort = await freePort();
    const ui = spawn(process.execPath, [CLI, 'ui', '--run-dir', path.join(dir, 'runs'), '--port', String(uiPort)], { stdio: 'ignore' });
    procs.push(ui);
    let e = engine(dir);
    let d = await driver(await waitFile(e.ready), 'live-run');
    await d.send(1, 10);
    const base = `http://127.0.0.1:${uiPort}`;
    for (let i = 0; i < 100; i++) { try { if ((await fetch(`${base}/api/runs`)).ok) break; } catch {} await new Promise((r) => setTimeout(r, 100)); }
    const { page, errors } = await open(`${base}/run/live-run/`);
    await page.waitForFunction(() => document.body.dataset.lastStep === '10', null, { timeout: 20_000 });
    await page.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: 20_000 });

    // State the user set before an update: a filter, a highlighted step, an open evidence cell.
    await page.locator('[data-filter="checkpoint"]').check();
    await page.locator('[data-opt="smooth"]').check();
    await page.evaluate(() => { location.hash = '#step-5'; });
    await page.waitForFunction(() => document.querySelectorAll('svg line.hl').length > 0);
    const updates = Number(await page.evaluate(() => document.body.dataset.updates));
    await d.send(11, 20);
    await page.waitForFunction(() => document.body.dataset.lastStep === '20', null, { timeout: 20_000 });
    expect(Number(await page.evaluate(() => document.body.dataset.updates))).toBeGreaterThan(updates);
    expect(await page.locator('[data-filter="checkpoint"]').isChecked()).toBe(true);
    expect(await page.locator('[data-opt="smooth"]').isChecked()).toBe(true);
    // Charts out of view are updated when they scroll in (the browser does only what it shows).
    const q99 = page.locator('svg#tl-policy_vs_ref-abs_q99');
    await q99.scrollIntoViewIfNeeded();
    await expect.poll(() => q99.getAttribute('data-last-x')).toBe('20');
    expect(await page.locator('svg#tl-policy_vs_ref-abs_q99 line.hl').count()).toBe(1);
    expect(await page.locator('svg#tl-policy_vs_ref-abs_q99 path.smooth').count()).toBeGreaterThan(0);

    // The engine dies (kill -9) and a new one resumes the same run store: the page follows.
    e.proc.kill('SIGKILL');
    d.close();
    await new Promise((r) => e.proc.once('exit', r));
    e = engine(dir);
    d = await driver(await waitFile(e.ready), 'live-run');
    await d.send(21, 30);
    await page.waitForFunction(() => document.body.dataset.lastStep === '30', null, { timeout: 20_000 });
    await page.waitForFunction(() => document.body.dataset.state === 'live', null, { timeout: 20_000 });
    expect(await page.locator('#live').textContent()).toBe('live · step 30');
    // The engine stops: the run store is closed and the badge says so.
    d.close();
    e.proc.kill('SIGTERM');
    await new Promise((r) => e.proc.once('exit', r));
    await page.waitForFunction(() => document.body.dataset.state === 'finished', null, { timeout: 20_000 });
    expect(await page.locator('#live').textContent()).toMatch(/^finished · step 30/);
    await page.screenshot({ path: path.join(ARTIFACTS, 'live-finished.png') });
    expect(errors).toEqual([]);

    // Opened later, the page shows the store as it is now (no stale snapshot).
    const late = await open(`${base}/run/live-run/`);
    expect(await late.page.locator('#last-step').textContent()).toBe('30');
    await late.page.close();
    await page.close();

    // Host / Origin allow-list (DNS rebinding, cross-site reads).
    const get = (headers: Record<string, string>) => new Promise<number>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: uiPort, path: '/api/runs', headers }, (res) => { res.resume(); resolve(res.statusCode ?? -1); });
      req.on('error', () => resolve(-1));
    });
    expect(await get({ host: `127.0.0.1:${uiPort}` })).toBe(200);
    expect(await get({ host: 'evil.example' })).toBe(403);
    expect(await get({ host: `127.0.0.1:${uiPort}`, origin: 'http://evil.example' })).toBe(403);
    ui.kill('SIGTERM');
  });

  it('refuses a non-loopback --host without a token', async () => {
    const r = spawn(process.execPath, [CLI, 'ui', '--run-dir', tmp, '--port', '0', '--host', '0.0.0.0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    r.stdout!.on('data', (x) => (out += x));
    r.stderr!.on('data', (x) => (out += x));
    const code = await new Promise((res) => r.once('exit', res));
    expect(code).toBe(2);
    expect(out).toMatch(/E_UI_INSECURE/);
  });
});

describe('tailguard serve --ui --record', () => {
  it('the live page runs in a worker of a real engine; its recording replays to the same run files', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'serve-ui-'));
    const e = engine(dir, ['--ui', '0', '--record', path.join(dir, 'cap.tgcap')]);
    const d = await driver(await waitFile(e.ready), 'engine-run');
    let uiUrl: string | undefined;
    for (let i = 0; i < 200 && !uiUrl; i++) {
      uiUrl = /"url":"(http:\/\/127\.0\.0\.1:\d+\/)"/.exec(e.log())?.[1];
      if (!uiUrl) await new Promise((r) => setTimeout(r, 50));
    }
    expect(uiUrl, e.log()).toBeTruthy();
    await d.send(1, 10);
    const { page, errors } = await open(new URL('/run/engine-run/', uiUrl!).href);
    await page.waitForFunction(() => document.body.dataset.lastStep === '10', null, { timeout: 20_000 });
    const cdf = page.locator('svg#cdf-policy_vs_ref-post_tool');
    await cdf.scrollIntoViewIfNeeded();
    const curves10 = Number(await cdf.getAttribute('data-curves'));
    expect(curves10).toBeGreaterThan(0);
    await d.send(11, 30);
    await page.waitForFunction(() => document.body.dataset.lastStep === '30', null, { timeout: 20_000 });
    const q99 = page.locator('svg#tl-policy_vs_ref-abs_q99');
    await q99.scrollIntoViewIfNeeded();
    await expect.poll(() => q99.getAttribute('data-last-x')).toBe('30');
    await expect.poll(() => cdf.getAttribute('data-curves').then(Number)).toBeGreaterThan(curves10);
    expect(Number(await page.locator('svg#tl-policy_vs_ref-abs_q99 path.series[data-name="post_tool"]').evaluate((p) => (p as SVGPathElement).getTotalLength()))).toBeGreaterThan(0);
    expect(await page.locator('svg.lane a.ev').count()).toBeGreaterThan(0); // the growing tail fired detectors
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-engine.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
    d.close();
    e.proc.kill('SIGTERM');
    await new Promise((r) => e.proc.once('exit', r));

    const summary = await replayToDir(path.join(dir, 'cap.tgcap'), { runDir: path.join(dir, 'replayed'), window: '5' });
    expect(summary.accepted).toBe(31);
    for (const f of ['metrics.jsonl', 'windows.jsonl', 'directives.jsonl']) {
      const live = fs.readFileSync(path.join(dir, 'runs/engine-run', f), 'utf8');
      expect(live.length, f).toBeGreaterThan(0);
      expect(fs.readFileSync(path.join(dir, 'replayed/engine-run', f), 'utf8'), f).toBe(live);
    }
  });
});
