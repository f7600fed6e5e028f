// Where the engine's main thread spends, from a `node --cpu-prof` profile: every sample goes to the
// innermost project module on its stack (statistics, detectors + policy, run store, ...), GC to its own
// row, the rest (runtime, loader) to "other". Samples before `sinceUs` (CLOCK_MONOTONIC µs, as
// process.hrtime) are skipped, so warm-up and start-up do not count.
import { readFileSync } from 'node:fs';

interface Node { id: number; callFrame: { functionName: string; url: string }; children?: number[] }
interface Profile { nodes: Node[]; samples: number[]; timeDeltas: number[]; startTime: number }

const RULES: [string, (fn: string, url: string) => boolean][] = [
  ['statistics kernel', (fn, url) => url.includes('/stats/kernel') && /^kernel/.test(fn)],
  ['state snapshot (stats toJSON for state.json)', (fn, url) => url.includes('/stats/') && /^(toJSON|snapshot|histToSparse)$/.test(fn)],
  ['statistics, other (runs, windows, quantiles, shape)', (_, url) => url.includes('/src/stats/')],
  ['detectors + policy', (_, url) => url.includes('/src/detect/') || url.includes('/src/policy/')],
  ['run store (JSON, writes, fsync)', (_, url) => url.includes('/src/store/')],
  ['decode + validate', (_, url) => url.includes('/src/protocol/')],
  ['server + assembly', (_, url) => url.includes('/src/transport/') || url.includes('/src/engine/')],
];

export function breakdown(file: string, sinceUs = 0): { rows: [string, number][]; busyMs: number } {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const cat = new Map<number, string>();
  const classify = (id: number): string => {
    const hit = cat.get(id);
    if (hit) return hit;
    const leaf = byId.get(id)!.callFrame.functionName;
    let out = leaf === '(garbage collector)' ? 'garbage collector (main thread part)' : leaf === '(idle)' ? 'idle' : '';
    for (let c: number | undefined = id; !out && c !== undefined; c = parent.get(c)) {
      const f = byId.get(c)!.callFrame;
      const rule = RULES.find(([, test]) => test(f.functionName, f.url));
      if (rule) out = rule[0];
    }
    out ||= 'other (runtime, ZeroMQ binding, event loop)';
    cat.set(id, out);
    return out;
  };
  const acc = new Map<string, number>();
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (t < sinceUs) continue;
    const k = classify(p.samples[i]);
    if (k !== 'idle') acc.set(k, (acc.get(k) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const busy = [...acc.values()].reduce((a, b) => a + b, 0);
  return { rows: [...acc].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, v / busy]), busyMs: busy / 1000 };
}
