// Load: R simulated ranks (one DEALER socket each, spread over worker threads so the senders are not
// the bottleneck) × S steps × T tokens per rank and step, against one real `tailguard serve` process
// with world_size R. Ranks advance together (at most 2 steps apart, like a trainer's all-reduce).
//
//   tsx ts-core/bench/load.ts [--ranks 64] [--steps 200] [--tokens 100000] [--workers 4] [--ingest-workers N] [--json FILE]
//   tsx ts-core/bench/load.ts --write-doc [--steps 50]   (--ingest-workers 0 and the default, one after the
//                                                       other in this run; writes docs/benchmarks.md "Load")
//
// Checks that nothing is lost (per step: the store's tokens_per_rank equals what each rank sent, and
// every reply's `received.tokens` too) and reports engine peak RSS (VmHWM), engine CPU seconds,
// throughput (tokens/s, wall and per engine CPU second) and directive latency p50/p99.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Dealer } from 'zeromq';
import { decodeMessage, encodeHeader, encodeMessage } from '../src/protocol/codec.ts';
import { mulberry32, gauss } from './synthetic.ts';
import { loadSection } from './load-doc.ts';
import { availableParallelism } from 'node:os';
import { defaultIngestWorkers } from '../src/commands/options.ts';
import { commitId, loadAvg, writeSection } from './doc-section.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const V = [1, 0];
const RUN = 'load';

interface WorkerIn {
  endpoint: string;
  ranks: number[];
  worldSize: number;
  steps: number;
  tokens: number;
  progress: SharedArrayBuffer; // Int32 per rank: steps answered
}
interface WorkerOut {
  latenciesMs: number[];
  tokensSent: number;
  mismatches: string[];
}

/** One rank's step buffers (sequences of ~250 tokens, a tool span in the middle of every other one). */
function payload(seed: number, T: number) {
  const r = mulberry32(seed);
  const lens: number[] = [];
  for (let left = T; left > 0; ) {
    const n = Math.min(left, 100 + Math.floor(r() * 300));
    lens.push(n);
    left -= n;
  }
  const offsets = new Int32Array(lens.length + 1);
  lens.forEach((n, i) => (offsets[i + 1] = offsets[i] + n));
  const cm = new Uint8Array(T).fill(1);
  const tm = new Uint8Array(T).fill(1);
  lens.forEach((n, s) => {
    if (s % 2) for (let t = Math.floor(n / 3); t < Math.floor(n / 3) + 20 && t < n; t++) tm[offsets[s] + t] = 0;
  });
  const ref = new Float32Array(T);
  const old = new Float32Array(T);
  for (let i = 0; i < T; i++) (ref[i] = 0.1 * gauss(r)), (old[i] = 0.02 * gauss(r));
  return { buffers: { policy_vs_ref: ref, policy_vs_old: old, completion_mask: cm, tool_mask: tm, offsets }, nSeqs: lens.length };
}

async function runWorker(): Promise<void> {
  const w = workerData as WorkerIn;
  const prog = new Int32Array(w.progress);
  const out: WorkerOut = { latenciesMs: [], tokensSent: 0, mismatches: [] };
  const minProgress = () => {
    let m = Infinity;
    for (let i = 0; i < w.worldSize; i++) m = Math.min(m, Atomics.load(prog, i));
    return m;
  };
  await Promise.all(
    w.ranks.map(async (rank) => {
      const sock = new Dealer({ linger: 0, receiveTimeout: 120_000, sendHighWaterMark: 100 });
      sock.connect(w.endpoint);
      await sock.send(encodeHeader({ type: 'hello', version: V, run_id: RUN, rank, world_size: w.worldSize, trainer: 'synthetic', checksum: false }));
      const welcome = decodeMessage(await sock.receive()).header;
      if (welcome.type !== 'welcome') throw new Error(`rank ${rank}: ${JSON.stringify(welcome)}`);
      const p = payload(1000 + rank, w.tokens);
      for (let step = 0; step < w.steps; step++) {
        while (step - minProgress() > 2) await new Promise((r) => setTimeout(r, 1)); // the trainer's barrier
        const frames = encodeMessage(
          { type: 'step', version: V, run_id: RUN, rank, world_size: w.worldSize, step, chunk: { index: 0, count: 1 }, tokens: w.tokens, n_seqs: p.nSeqs, knobs: { beta: 0.04, epsilon_low: 0.2, epsilon_high: 0.28 }, logs: { loss: 1 / (step + 1) } },
          p.buffers,
        );
        const t0 = performance.now();
        await sock.send(frames);
        const h = decodeMessage(await sock.receive()).header as Record<string, any>;
        out.latenciesMs.push(performance.now() - t0);
        if (h.type !== 'directive' || h.step !== step || h.received?.tokens !== w.tokens) out.mismatches.push(`rank ${rank} step ${step}: ${JSON.stringify(h).slice(0, 200)}`);
        out.tokensSent += w.tokens;
        Atomics.store(prog, rank, step + 1);
      }
      sock.close();
    }),
  );
  parentPort!.postMessage(out);
}

function procStat(pid: number): { hwmMiB: number; cpuS: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const hwm = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? NaN) / 1024;
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { hwmMiB: Math.round(hwm), cpuS: (Number(f[11]) + Number(f[12])) / 100 }; // utime + stime, clock ticks (100/s)
}

export interface LoadResult {
  ranks: number;
  steps: number;
  tokensPerRankStep: number;
  tokensSent: number;
  tokensStored: number;
  stepsStored: number;
  lost: string[];
  wallS: number;
  tokensPerS: number;
  engineCpuS: number;
  tokensPerEngineCpuS: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  enginePeakRssMiB: number;
  engineAlive: boolean;
  ingestWorkers: number | 'default';
}

const args = (argv: string[]) => Object.fromEntries(argv.flatMap((a, i) => (a.startsWith('--') ? [[a.slice(2), argv[i + 1]]] : [])));

/** One load run against a fresh engine; `ingestWorkers` undefined: the engine's default. */
export async function runLoad(R: number, S: number, T: number, W: number, ingestWorkers?: number): Promise<LoadResult> {
  const work = mkdtempSync(join(tmpdir(), 'tg-load-'));
  const ready = join(work, 'ready');
  const endpoint = `ipc://${work}/engine.sock`;
  const iw = ingestWorkers === undefined ? [] : ['--ingest-workers', String(ingestWorkers)];
  const engine = spawn(process.execPath, [join(ROOT, 'ts-core/bin/tailguard.mjs'), 'serve', '--endpoint', endpoint, '--run-dir', join(work, 'runs'), '--log-level', 'warn', '--ready-file', ready, '--step-timeout', '600000', ...iw], { stdio: ['ignore', 'inherit', 'inherit'] });
  const t0 = Date.now();
  while (!existsSync(ready)) {
    if (engine.exitCode !== null || Date.now() - t0 > 60_000) throw new Error('engine did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  console.log(`load: ${R} ranks × ${S} steps × ${T} tokens against one engine (pid ${engine.pid}, --ingest-workers ${ingestWorkers ?? 'default'}), ${W} sender threads`);
  const progress = new SharedArrayBuffer(4 * R);
  const boot = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const start = performance.now();
  const cpu0 = procStat(engine.pid!).cpuS;
  const outs = await Promise.all(
    Array.from({ length: W }, (_, k) => {
      const ranks = Array.from({ length: R }, (_, r) => r).filter((r) => r % W === k);
      const wk = new Worker(boot, { eval: true, workerData: { endpoint, ranks, worldSize: R, steps: S, tokens: T, progress } satisfies WorkerIn });
      return new Promise<WorkerOut>((res, rej) => (wk.once('message', res), wk.once('error', rej)));
    }),
  );
  const wallS = (performance.now() - start) / 1000;
  // The last step finalises when the last rank's chunk is in; give the store a moment to be written.
  const stepsFile = join(work, 'runs', RUN, 'steps.jsonl');
  const readSteps = () => (existsSync(stepsFile) ? readFileSync(stepsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
  for (let i = 0; i < 100 && readSteps().length < S; i++) await new Promise((r) => setTimeout(r, 100));
  const st = procStat(engine.pid!);
  const steps = readSteps();
  const lost: string[] = outs.flatMap((o) => o.mismatches);
  const byStep = new Map(steps.map((e) => [e.step, e]));
  let tokensStored = 0;
  for (let s = 0; s < S; s++) {
    const e = byStep.get(s);
    if (!e) {
      lost.push(`step ${s} not in the store`);
      continue;
    }
    tokensStored += e.tokens;
    if (e.ranks_missing.length) lost.push(`step ${s}: ranks missing ${e.ranks_missing}`);
    for (let r = 0; r < R; r++) if (e.tokens_per_rank[String(r)] !== T) lost.push(`step ${s} rank ${r}: stored ${e.tokens_per_rank[String(r)]} tokens, sent ${T}`);
  }
  const lat = outs.flatMap((o) => o.latenciesMs).sort((x, y) => x - y);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  const tokensSent = outs.reduce((s, o) => s + o.tokensSent, 0);
  const res: LoadResult = {
    ranks: R, steps: S, tokensPerRankStep: T, tokensSent, tokensStored, stepsStored: steps.length, lost: lost.slice(0, 50),
    wallS: +wallS.toFixed(2), tokensPerS: Math.round(tokensSent / wallS), engineCpuS: +(st.cpuS - cpu0).toFixed(2),
    tokensPerEngineCpuS: Math.round(tokensSent / Math.max(0.01, st.cpuS - cpu0)),
    latencyP50Ms: +q(0.5).toFixed(2), latencyP99Ms: +q(0.99).toFixed(2), enginePeakRssMiB: st.hwmMiB, engineAlive: engine.exitCode === null,
    ingestWorkers: ingestWorkers ?? 'default',
  };
  engine.kill('SIGTERM');
  await new Promise((r) => (engine.exitCode !== null ? r(null) : engine.once('exit', r)));
  rmSync(work, { recursive: true, force: true });
  console.log(`sent ${tokensSent.toLocaleString('en')} tokens, stored ${tokensStored.toLocaleString('en')} (${steps.length}/${S} steps); lost: ${lost.length ? lost.slice(0, 5).join('; ') : 'nothing'}`);
  console.log(`wall ${res.wallS} s → ${(res.tokensPerS / 1e6).toFixed(1)} M tokens/s; engine CPU ${res.engineCpuS} s → ${(res.tokensPerEngineCpuS / 1e6).toFixed(1)} M tokens per engine CPU-second`);
  console.log(`directive latency p50 ${res.latencyP50Ms} ms, p99 ${res.latencyP99Ms} ms; engine peak RSS (VmHWM) ${res.enginePeakRssMiB} MiB`);
  return res;
}

async function main(): Promise<void> {
  const a = args(process.argv.slice(2));
  const doc = process.argv.includes('--write-doc');
  const R = Number(a.ranks ?? 64);
  const S = Number(a.steps ?? (doc ? 50 : 200));
  const T = Number(a.tokens ?? 100_000);
  const W = Math.min(R, Number(a.workers ?? 4));
  const load = loadAvg();
  // --write-doc: in-thread and the default worker count, in this run, on the same streams.
  const runs = doc ? [await runLoad(R, S, T, W, 0), await runLoad(R, S, T, W)] : [await runLoad(R, S, T, W, a['ingest-workers'] === undefined ? undefined : Number(a['ingest-workers']))];
  if (doc) writeSection('load', loadSection(runs, { commit: commitId(), load, loadEnd: loadAvg(), defaultWorkers: defaultIngestWorkers(availableParallelism()) }));
  if (a.json) writeFileSync(a.json, JSON.stringify(runs.length === 1 ? runs[0] : runs, null, 1));
  process.exit(runs.every((r) => r.lost.length === 0 && r.engineAlive) ? 0 : 1);
}

if (isMainThread && process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) await main();
else if (!isMainThread && (workerData as WorkerIn | undefined)?.progress) await runWorker();
