// Scaling with cores (issue 17, item 4): the directive round trip at R ranks × T tokens per step in total
// (T/R per rank, two pairs), with the engine pinned to 1 core (`taskset -c 0`) and to 2 (`taskset -c 0,1`),
// each with `--ingest-workers 0` (the main thread) and with workers. All engines run in the same process
// tree at once and take turns block by block, so load from neighbours hits every configuration alike.
// Each rank is a DEALER of its own; a step's ranks send together and wait for their replies (a trainer).
//
//   tsx ts-core/bench/scaling.ts [--ranks 8] [--tokens 1e6] [--steps 8] [--blocks 3] [--workers 2]
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dealer } from 'zeromq';
import { decodeMessage, encodeHeader, encodeMessage } from '../src/protocol/codec.ts';
import { productStep } from './product.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const V = [1, 0];

export interface ScaleConfig {
  cores: string; // taskset list
  workers: number;
  label: string;
}
export interface ScaleRow extends ScaleConfig {
  p50Ms: number;
  p99Ms: number;
  /** engine whole-process CPU (all threads) per token·pair, median over blocks */
  cpuNs: number;
  /** wall time per step (all ranks answered), median over blocks */
  stepMs: number;
}
export interface ScaleResult {
  ranks: number; tokens: number; pairs: number; steps: number; blocks: number; rows: ScaleRow[];
}

const cpuNs = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 1e7;
};
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const pct = (a: number[], p: number) => {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
};

interface Engine {
  cfg: ScaleConfig;
  proc: ChildProcess;
  socks: Dealer[];
  work: string;
  step: number;
  rtt: number[];
  cpu: number[];
  wall: number[];
}

async function startEngine(cfg: ScaleConfig, R: number): Promise<Engine> {
  const work = mkdtempSync(join(tmpdir(), 'tg-scale-'));
  const ready = join(work, 'ready'), endpoint = `ipc://${work}/engine.sock`;
  const proc = spawn('taskset', ['-c', cfg.cores, process.execPath, join(ROOT, 'ts-core/bin/tailguard.mjs'), 'serve', '--endpoint', endpoint, '--run-dir', join(work, 'runs'), '--log-level', 'warn', '--ready-file', ready, '--step-timeout', '600000', '--ingest-workers', String(cfg.workers)], { stdio: ['ignore', 'inherit', 'inherit'] });
  const t0 = Date.now();
  while (!existsSync(ready)) {
    if (proc.exitCode !== null || Date.now() - t0 > 60_000) throw new Error(`engine ${cfg.label} did not start`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const socks: Dealer[] = [];
  for (let r = 0; r < R; r++) {
    const s = new Dealer({ linger: 0, receiveTimeout: 600_000 });
    s.connect(endpoint);
    await s.send(encodeHeader({ type: 'hello', version: V, run_id: 'scale', rank: r, world_size: R, trainer: 'synthetic', mode: 'raw', checksum: false }));
    const w = decodeMessage(await s.receive()).header;
    if (w.type !== 'welcome') throw new Error(`no welcome: ${JSON.stringify(w)}`);
    socks.push(s);
  }
  return { cfg, proc, socks, work, step: 0, rtt: [], cpu: [], wall: [] };
}

/** One rank's step frames for every step (the same values each step: the bytes are what is measured). */
function rankFrames(R: number, T: number) {
  return Array.from({ length: R }, (_, r) => {
    const d = productStep(T / R, 1000 / R, 7 + r);
    return (step: number) => encodeMessage(
      { type: 'step', version: V, run_id: 'scale', rank: r, world_size: R, step, chunk: { index: 0, count: 1 }, tokens: T / R, n_seqs: d.offsets.length - 1, knobs: d.knobs, logs: { loss: 1 / (step + 1) } },
      { policy_vs_ref: d.pairs.policy_vs_ref!, policy_vs_old: d.pairs.policy_vs_old!, completion_mask: d.completionMask, tool_mask: d.toolMask, offsets: d.offsets },
    );
  });
}

async function oneStep(e: Engine, frames: ReturnType<typeof rankFrames>, record: boolean): Promise<void> {
  const step = e.step++;
  const t0 = performance.now();
  await Promise.all(e.socks.map(async (s, r) => {
    const t = performance.now();
    await s.send(frames[r](step));
    const h = decodeMessage(await s.receive()).header as Record<string, any>;
    if (h.type !== 'directive' || h.step !== step) throw new Error(`${e.cfg.label} rank ${r} step ${step}: ${JSON.stringify(h).slice(0, 300)}`);
    if (record) e.rtt.push(performance.now() - t);
  }));
  if (record) e.wall.push(performance.now() - t0);
}

export async function scaling(argv: string[]): Promise<ScaleResult> {
  const arg = (k: string) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : undefined);
  const R = Number(arg('--ranks') ?? 8), T = Number(arg('--tokens') ?? 1e6);
  const steps = Number(arg('--steps') ?? 8), blocks = Number(arg('--blocks') ?? 3), W = Number(arg('--workers') ?? 2);
  const configs: ScaleConfig[] = [
    { cores: '0', workers: 0, label: '1 core, in-thread (the default on 1 core)' },
    { cores: '0', workers: W, label: `1 core, ${W} workers` },
    { cores: '0,1', workers: 0, label: '2 cores, in-thread' },
    { cores: '0,1', workers: 1, label: '2 cores, 1 worker' },
    { cores: '0,1', workers: W, label: `2 cores, ${W} workers (the default on 2 cores)` },
  ];
  const frames = rankFrames(R, T);
  const engines: Engine[] = [];
  try {
    for (const c of configs) engines.push(await startEngine(c, R));
    for (const e of engines) for (let k = 0; k < 3; k++) await oneStep(e, frames, false); // JIT, workers, store open
    for (let b = 0; b < blocks; b++) {
      for (const e of engines) {
        const c0 = cpuNs(e.proc.pid!);
        for (let k = 0; k < steps; k++) await oneStep(e, frames, true);
        e.cpu.push((cpuNs(e.proc.pid!) - c0) / (steps * T * 2));
      }
    }
  } finally {
    for (const e of engines) {
      e.socks.forEach((s) => s.close());
      e.proc.kill('SIGTERM');
      await new Promise((r) => (e.proc.exitCode !== null ? r(null) : e.proc.once('exit', r)));
      rmSync(e.work, { recursive: true, force: true });
    }
  }
  const rows = engines.map((e) => ({ ...e.cfg, p50Ms: pct(e.rtt, 0.5), p99Ms: pct(e.rtt, 0.99), cpuNs: median(e.cpu), stepMs: median(e.wall) }));
  return { ranks: R, tokens: T, pairs: 2, steps, blocks, rows };
}

export function scalingLines(s: ScaleResult): string[] {
  const f = (x: number) => x.toFixed(1);
  const base = s.rows[0];
  return s.rows.map((r) => `${r.label.padEnd(44)} round trip p50 ${f(r.p50Ms).padStart(6)} ms, p99 ${f(r.p99Ms).padStart(6)} ms (${(base.p99Ms / r.p99Ms).toFixed(2)}× the 1-core in-thread p99); step ${f(r.stepMs)} ms; CPU ${r.cpuNs.toFixed(2)} ns/token·pair`);
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const s = await scaling(process.argv.slice(2));
  console.log(`# scaling: ${s.ranks} ranks × ${s.tokens / s.ranks} tokens (${s.tokens} per step in total), ${s.pairs} pairs; ${s.blocks} blocks × ${s.steps} steps per configuration`);
  for (const l of scalingLines(s)) console.log(l);
}

const met = (ok: boolean) => (ok ? '**met**' : '**not met**');
/** Which slowest sample pct(·, 0.99) picks from n: 1st, 2nd, ... */
const nth = (n: number) => {
  const k = n - Math.min(n - 1, Math.floor(0.99 * n));
  return `${k}${['th', 'st', 'nd', 'rd'][k] ?? 'th'}`;
};

/** The docs/benchmarks.md section (generated: do not edit by hand). `memcpyNs`: the same run's memcpy into a reused buffer. */
export function scalingSection(s: ScaleResult, o: { commit: string; load: string; loadEnd: string; memcpyNs: number }): string {
  const f = (x: number) => x.toFixed(1);
  const base = s.rows[0], twoIn = s.rows[2], best = s.rows[s.rows.length - 1];
  return `## Scaling with cores (generated by \`npm run bench:product\`)

The directive round trip at **${s.ranks} ranks × ${(s.tokens / s.ranks).toLocaleString('en')} tokens per rank
(${s.tokens.toExponential(0)} tokens per step in total)**, two pairs (policy_vs_ref, policy_vs_old), ${1000 / s.ranks}
sequences per rank: "8 ranks × 1e6 tokens" of issue 17 is read as 1e6 tokens per step over all ranks. Every rank is
a DEALER of its own; a step's ranks send together and each waits for its reply (like a trainer), over ipc to a full
\`tailguard serve\` (store, detectors, windows). ${s.rows.length} engines, pinned with \`taskset\`, run side by side and take
turns in ${s.blocks} blocks of ${s.steps} steps (after 3 warm-up steps); round trips are pooled over ranks and
blocks; CPU is the engine's whole process (every thread, workers and GC included) per token·pair, median of the blocks.

Commit \`${o.commit}\`, load average ${o.load} at the start of the run, ${o.loadEnd} at the end (2 shared vCPUs).

| engine | p50 | p99 | p99 vs 1 core in-thread | wall per step | CPU ns per token·pair |
|---|---:|---:|---:|---:|---:|
${s.rows.map((r) => `| ${r.label} (\`taskset -c ${r.cores}\`, \`--ingest-workers ${r.workers}\`) | ${f(r.p50Ms)} ms | ${f(r.p99Ms)} ms | ${(base.p99Ms / r.p99Ms).toFixed(2)}× | ${f(r.stepMs)} ms | ${r.cpuNs.toFixed(2)} |`).join('\n')}

- Target p99 ≤ 50 ms at 8 ranks: ${met(best.p99Ms <= 50)} (${f(best.p99Ms)} ms with workers on 2 cores, ${f(twoIn.p99Ms)} ms in-thread on 2 cores, ${f(base.p99Ms)} ms on 1 core).
- 2 cores with workers, speed-up (time on the other ÷ time with workers; above 1 is faster): against 1 core p99 ${(base.p99Ms / best.p99Ms).toFixed(2)}, p50 ${(base.p50Ms / best.p50Ms).toFixed(2)}; against 2 cores in-thread p99 ${(twoIn.p99Ms / best.p99Ms).toFixed(2)}, p50 ${(twoIn.p50Ms / best.p50Ms).toFixed(2)}. A p99 of ${s.steps * s.blocks * s.ranks} round trips per engine is its ${nth(s.steps * s.blocks * s.ranks)} slowest: read it with the load average.
- What workers cost: whole-process CPU ${best.cpuNs.toFixed(2)} against ${twoIn.cpuNs.toFixed(2)} ns per token·pair on 2 cores (${(best.cpuNs / twoIn.cpuNs).toFixed(2)}×).
  The one copy of each rank step into shared memory (~10 bytes per token) is about a memcpy into a reused
  buffer, ${o.memcpyNs.toFixed(2)} ns per token·pair in this run; the rest is the hand-over (posting, packing
  the histograms back) and each worker's own garbage collector and compiler.

Reading: on 2 cores the workers change the wall time per step by ${(best.stepMs / twoIn.stepMs).toFixed(2)}× against in-thread
(${f(best.stepMs)} against ${f(twoIn.stepMs)} ms). They can only overlap the statistics of different ranks with each
other and with the main thread, which still decodes, assembles, merges the ranks, finalises the step (windows,
quantiles, detectors), writes the store (fsync) and replies. The slowest round trips are the completing rank's:
it waits for that step-final main-thread work (and \`state.json\` every 10 steps, and the mark-compact GCs
counted in "Product path"), which workers do not take over, and for whatever else runs on the 2 shared vCPUs.
On 1 core the workers add their copy and hand-over and nothing else, which is why the default is 0 workers there
(\`availableParallelism()\` sees the \`taskset\` mask). Meeting p99 ≤ 50 ms needs the step-final main-thread work
cut (issue 17 items 1 and 3) and cores that are not shared; this machine cannot show the latter.`;
}
