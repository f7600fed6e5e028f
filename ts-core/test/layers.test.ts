// Layering of ts-core/src (docs/architecture.md "Layers"): no import cycles, type-only imports included,
// and no folder imports from a folder above it. Imports are read with a regex over the sources.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = join(import.meta.dirname, '..', 'src');
/** Lower numbers are lower layers; a file may import its own layer or lower ones only. */
export const LAYERS: Record<string, number> = {
  'types.ts': 0, 'version.ts': 0, 'log.ts': 0, util: 0,
  stats: 1, detect: 1,
  protocol: 2, policy: 2,
  store: 3,
  engine: 4,
  transport: 5, record: 5, report: 5,
  ui: 6,
  commands: 7,
  'cli.ts': 8, 'index.ts': 8,
}; // prettier-ignore

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}
const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s*'(\.{1,2}\/[^']+)'|(?:^|\n)\s*import\s*'(\.{1,2}\/[^']+)'|import\(\s*'(\.{1,2}\/[^']+)'\s*\)/g;

function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const f of files(SRC)) {
    const src = readFileSync(f, 'utf8');
    const deps = [...src.matchAll(IMPORT)].map((m) => resolve(dirname(f), m[1] ?? m[2] ?? m[3])).filter((p) => p.startsWith(SRC) && p.endsWith('.ts'));
    g.set(relative(SRC, f), deps.map((p) => relative(SRC, p)));
  }
  return g;
}
const layerOf = (file: string) => LAYERS[file.split('/')[0]];

describe('ts-core/src layering', () => {
  const g = graph();

  it('reads the imports (the regex finds them)', () => {
    expect(g.size).toBeGreaterThan(60);
    expect(g.get('engine/pipeline.ts')).toContain('store/hooks.ts');
  });

  it('every top-level folder and file has a layer', () => {
    const top = new Set([...g.keys()].map((f) => f.split('/')[0]));
    expect([...top].filter((t) => LAYERS[t] === undefined)).toEqual([]);
  });

  it('no file imports from a layer above its own', () => {
    const up = [...g].flatMap(([f, deps]) => deps.filter((d) => layerOf(d) > layerOf(f)).map((d) => `${f} -> ${d}`));
    expect(up).toEqual([]);
  });

  it('no import cycles, type-only imports included', () => {
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const stack: string[] = [];
    const visit = (f: string) => {
      state.set(f, 'open');
      stack.push(f);
      for (const d of g.get(f) ?? []) {
        if (state.get(d) === 'open') cycles.push([...stack.slice(stack.indexOf(d)), d].join(' -> '));
        else if (!state.has(d)) visit(d);
      }
      stack.pop();
      state.set(f, 'done');
    };
    for (const f of g.keys()) if (!state.has(f)) visit(f);
    expect(cycles).toEqual([]);
  });
});
