// Reduced load run in `make test` (the full 64 × 200 × 100k is `npm run load`): 8 ranks × 20 steps ×
// 20k tokens against one real engine process; nothing may be lost between what was sent and the store.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import type { LoadResult } from '../bench/load.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const tmp = mkdtempSync(join(tmpdir(), 'tg-load-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

it('8 ranks × 20 steps × 20k tokens: every token sent is in the store, per step and rank', () => {
  const out = join(tmp, 'load.json');
  const r = spawnSync(process.execPath, [join(ROOT, 'node_modules/tsx/dist/cli.mjs'), join(ROOT, 'ts-core/bench/load.ts'), '--ranks', '8', '--steps', '20', '--tokens', '20000', '--json', out], { cwd: ROOT, encoding: 'utf8', timeout: 110_000 });
  const res = JSON.parse(readFileSync(out, 'utf8')) as LoadResult;
  expect(res.lost, r.stdout + r.stderr).toEqual([]);
  expect(r.status).toBe(0);
  expect(res.tokensSent).toBe(8 * 20 * 20_000);
  expect(res.tokensStored).toBe(res.tokensSent);
  expect(res.stepsStored).toBe(20);
  expect(res.engineAlive).toBe(true);
  expect(res.enginePeakRssMiB).toBeGreaterThan(0);
  expect(Number.isFinite(res.latencyP99Ms)).toBe(true);
  console.log(r.stdout.trim());
});
