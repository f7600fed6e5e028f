#!/usr/bin/env node
// Launcher for npm run bench:detect: bundles ts-core/bench/detection.ts with esbuild (as the packaged
// engine is bundled, scripts/build-engine.mjs) and runs the bundle. Under tsx every cross-module read
// of an exported constant is a getter call, which in the statistics' hot loops costs ~2x the
// benchmark's runtime; the bundle is what the shipped engine runs anyway.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// Inside the checkout, so the bundle resolves node_modules (packages stay external).
const OUT = mkdtempSync(path.join(ROOT, '.tg-bench-detect-'));
try {
  await build({
    absWorkingDir: ROOT,
    entryPoints: ['ts-core/bench/detection.ts'],
    outfile: path.join(OUT, 'detection.mjs'),
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    define: { __TAILGUARD_BUNDLED__: 'true' },
    logLevel: 'warning',
  });
  cpSync(path.join(ROOT, 'ts-core', 'policy'), path.join(OUT, 'policy'), { recursive: true });
  cpSync(path.join(ROOT, 'ts-core', 'src', 'stats', 'kernel.wasm'), path.join(OUT, 'kernel.wasm'));
  const r = spawnSync(process.execPath, [path.join(OUT, 'detection.mjs'), ...process.argv.slice(2)], { cwd: ROOT, stdio: 'inherit' });
  process.exitCode = r.status ?? 1;
} finally {
  rmSync(OUT, { recursive: true, force: true });
}
