// `tailguard replay RECORDING [--policy FILE] [--run-dir DIR]`: re-run the engine over a recording at
// full speed. Messages go through the same codec, run glue, statistics, controller and run store as
// live; time is the recording's clock, so the same recording and policy always give the same output.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createLogger } from '../log.ts';
import { buildPipeline } from '../engine/pipeline.ts';
import { RunRegistry } from '../engine/registry.ts';
import type { AckHeader, ByeHeader, HelloHeader, StepHeader } from '../protocol/messages.ts';
import { DEFAULT_LIMITS, type Message } from '../protocol/index.ts';
import { replayRecording } from '../record/replay.ts';
import { readRun, RUN_ID_RE } from '../store/index.ts';

export interface ReplayOptions {
  policy?: string;
  runDir?: string;
  window?: string;
  stepTimeout?: string;
  force?: boolean;
  logLevel?: string;
  /** Tests: do not print the summary. */
  quiet?: boolean;
}

export interface ReplaySummary {
  messages: number;
  accepted: number;
  rejected: { index: number; code: string; message: string }[];
  tornBytes: number;
  runs: { run_id: string; dir: string; steps: number; findings: number; directives: Record<string, number> }[];
}

export async function replayToDir(recording: string, opts: ReplayOptions): Promise<ReplaySummary> {
  const runDir = path.resolve(opts.runDir ?? 'runs-replay');
  const log = createLogger({ level: opts.logLevel ?? 'warn' });
  const stepTimeout = opts.stepTimeout ?? '30000';
  const registry = new RunRegistry({
    limits: { ...DEFAULT_LIMITS, step_timeout_ms: Number(stepTimeout) },
    log,
    factory: buildPipeline,
    runDir,
    options: { policy: opts.policy, window: opts.window ?? '20', stepTimeout, durable: false },
  });
  const seen = new Set<string>();
  let clock = 0;
  const counts = await replayRecording(recording, {
    message(msg: Message, at: number) {
      clock = Math.max(clock, at); // a recording's clock never runs backwards for the engine
      registry.tick(clock); // what the live server's 1 s tick would have finalised by now
      const h = msg.header;
      const runId = (h as { run_id?: string }).run_id ?? '';
      if (h.type === 'hello') {
        if (!seen.has(runId)) {
          seen.add(runId);
          const dir = path.join(runDir, runId);
          if (RUN_ID_RE.test(runId) && fs.existsSync(dir) && fs.readdirSync(dir).length > 0) {
            if (!opts.force) throw new Error(`${dir} already exists: replay into a fresh --run-dir, or pass --force to replace it`);
            fs.rmSync(dir, { recursive: true, force: true });
          }
        }
        registry.forHello(h as HelloHeader).hello(h as HelloHeader);
        return;
      }
      const run = registry.get(runId);
      if (!run) return; // the live engine answered E_NO_SESSION; nothing reached the pipeline
      try {
        if (h.type === 'step') run.step(msg as Message<StepHeader>, clock);
        else if (h.type === 'ack') run.ack(h as AckHeader);
        else if (h.type === 'bye') run.bye((h as ByeHeader).rank);
      } catch (e) {
        log.warn({ err: e, type: h.type }, 'message rejected by the run (as live)');
      }
    },
  });
  // End of recording: steps still waiting for ranks are finalised as their timeout would have done.
  registry.tick(Number.MAX_SAFE_INTEGER);
  await registry.close();

  const runs: ReplaySummary['runs'] = [];
  for (const runId of [...seen].sort()) {
    const dir = path.join(runDir, runId);
    if (!fs.existsSync(dir)) continue;
    const r = readRun(dir);
    const directives: Record<string, number> = {};
    for (const e of r.directives.records) if (e.kind === 'directive') directives[e.action] = (directives[e.action] ?? 0) + 1;
    runs.push({ run_id: runId, dir, steps: r.steps.records.length, findings: r.directives.records.filter((e) => e.kind === 'finding').length, directives });
  }
  return { ...counts, runs };
}

export async function replay(recording: string, opts: ReplayOptions): Promise<void> {
  let s: ReplaySummary;
  const t0 = performance.now();
  try {
    s = await replayToDir(recording, opts);
  } catch (e) {
    process.stderr.write(`tailguard replay: ${(e as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  const secs = (performance.now() - t0) / 1000;
  if (opts.quiet) return;
  const lines = [`replayed ${s.accepted}/${s.messages} messages from ${recording} in ${secs.toFixed(2)} s`];
  if (s.tornBytes) lines.push(`warning: torn last record (${s.tornBytes} bytes) skipped`);
  for (const r of s.rejected.slice(0, 10)) lines.push(`rejected message #${r.index}: ${r.code} ${r.message}`);
  for (const r of s.runs) {
    const d = Object.entries(r.directives).map(([a, n]) => `${a}×${n}`).join(', ') || 'none';
    lines.push(`${r.run_id}: ${r.steps} steps, ${r.findings} findings, directives: ${d} → ${r.dir}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}
