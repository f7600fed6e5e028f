// A long, noisy run (8 ranks, observe mode: the detectors keep firing to the end) through the real engine:
// the report keeps the whole history, the onset of every detector, and stays under 2 MB.
// 2000 steps with TAILGUARD_LONG_TESTS=1 (`npm run test:long`, about 1 CPU-minute of engine time);
// 250 steps in the default suite.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeControlRun } from '../ts-core/src/report/control-run.ts';
import { reportFromDir } from '../ts-core/src/report/index.ts';
import { episodes } from '../ts-core/src/report/story.ts';
import { readRun } from '../ts-core/src/store/index.ts';

const STEPS = process.env.TAILGUARD_LONG_TESTS === '1' ? 2000 : 250;
const LIMIT = 2_000_000;
let tmp: string;
let browser: Browser;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-long-'));
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
});
afterAll(async () => {
  await browser?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe(`a ${STEPS}-step, 8-rank report`, () => {
  it('keeps every onset and the complete history under 2 MB', async () => {
    const run = await writeControlRun({ runDir: tmp, runId: 'long-run', steps: STEPS, worldSize: 8, mode: 'observe', seqs: 4, seqLen: 32, window: 20, checkpointEvery: 50, acks: 'rank0' });
    const data = readRun(run.dir);
    const { html } = reportFromDir(run.dir);
    const file = path.join(tmp, 'long.html');
    fs.writeFileSync(file, html);
    console.log(`${STEPS} steps × 8 ranks: ${data.directives.records.length} audit lines, report ${(html.length / 1e6).toFixed(2)} MB`);
    expect(Buffer.byteLength(html)).toBeLessThanOrEqual(LIMIT);

    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`file://${file}`);
    // Every detector's first episode is in "What happened", with its first step.
    const eps = episodes(data.directives.records);
    const firsts = new Map<string, number>();
    for (const e of eps) if (!firsts.has(e.detector)) firsts.set(e.detector, e.first);
    expect(firsts.size).toBeGreaterThan(1);
    const rows = await page.locator('#episodes tr').evaluateAll((trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')));
    for (const [det, first] of firsts) expect(rows.some((r) => r[0] === det && r[2] === String(first)), `${det} onset ${first}`).toBe(true);
    // The whole audit history is there (not only the last rows), and the oldest finding opens page 1.
    const findings = data.directives.records.filter((e) => e.kind === 'finding');
    expect(Number(await page.locator('[data-count="finding"]').textContent())).toBe(findings.length);
    const firstFinding = Math.min(...findings.map((f) => f.step));
    expect(await page.locator('#audit-rows tr').first().getAttribute('data-step')).toBe(String(firstFinding));
    // Series are downsampled, never truncated: every timeline spans the first to the last step.
    const dom = await page.locator('svg#tl-policy_vs_ref-abs_q99').getAttribute('data-xd');
    expect(dom).toBe(`1,${STEPS}`);
    expect(await page.locator('svg#tl-policy_vs_ref-abs_q99').getAttribute('data-last-x')).toBe(String(STEPS));
    expect(errors).toEqual([]);
    await page.close();
  }, 900_000);
});
