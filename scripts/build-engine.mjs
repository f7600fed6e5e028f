#!/usr/bin/env node
// Build the engine for packaging: bundle ts-core/src to JavaScript with esbuild (dist/engine), and emit
// the public API's type declarations with tsc (dist/types). The npm package and the Python wheel both
// ship dist/engine; only zeromq stays outside the bundle (it loads a native addon from its own folder).
//
//   node scripts/build-engine.mjs            bundle + declarations
//   node scripts/build-engine.mjs --no-types bundle only (the wheel build)
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.join(ROOT, 'dist', 'engine');
const TYPES = path.join(ROOT, 'dist', 'types');
const require = createRequire(import.meta.url);

rmSync(OUT, { recursive: true, force: true });
await build({
  absWorkingDir: ROOT,
  entryPoints: { cli: 'ts-core/src/cli.ts', index: 'ts-core/src/index.ts', 'ui-worker': 'ts-core/src/ui/worker.ts', 'ingest-worker': 'ts-core/src/stats/ingest-worker.ts' }, // ui-worker: serve --ui's thread; ingest-worker: --ingest-workers
  outdir: OUT,
  outExtension: { '.js': '.mjs' },
  chunkNames: '[name]-[hash]', // flat: policy/load.ts finds policy/ beside whichever file it lands in
  bundle: true,
  splitting: true, // the CLI keeps its lazy per-command imports
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // zeromq finds its addon relative to its own files; msgpackr-extract is msgpackr's optional native speed-up.
  external: ['zeromq', 'msgpackr-extract'],
  define: { __TAILGUARD_BUNDLED__: 'true' },
  // Bundled CommonJS dependencies call require() for Node built-ins: give the ESM bundle a real one.
  banner: { js: "import { createRequire as __tgCreateRequire } from 'node:module'; const require = __tgCreateRequire(import.meta.url);" },
  legalComments: 'linked',
  logLevel: 'warning',
});
// Files the engine reads beside its own module, which in the flat bundle means beside every chunk:
// the shipped default policy (policy/load.ts) and the WebAssembly kernel (stats/kernel-wasm.ts, which
// silently falls back to the slower JS kernel without it).
cpSync(path.join(ROOT, 'ts-core', 'policy'), path.join(OUT, 'policy'), { recursive: true });
cpSync(path.join(ROOT, 'ts-core', 'src', 'stats', 'kernel.wasm'), path.join(OUT, 'kernel.wasm'));

if (!process.argv.includes('--no-types')) {
  rmSync(TYPES, { recursive: true, force: true });
  mkdirSync(TYPES, { recursive: true });
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(ROOT, 'ts-core', 'tsconfig.build.json')], { stdio: 'inherit' });
  // The sources import './x.ts'; a consumer resolves declarations through './x.js'.
  for (const f of readdirSync(TYPES, { recursive: true, encoding: 'utf8' })) {
    if (!f.endsWith('.d.ts')) continue;
    const file = path.join(TYPES, f);
    const text = readFileSync(file, 'utf8');
    const fixed = text.replace(/((?:from|import)\s*\(?\s*['"]\.{1,2}\/[^'"]*?)\.ts(['"])/g, '$1.js$2');
    if (fixed !== text) writeFileSync(file, fixed);
  }
}
console.log(`built ${path.relative(ROOT, OUT)}${process.argv.includes('--no-types') ? '' : ` and ${path.relative(ROOT, TYPES)}`}`);
