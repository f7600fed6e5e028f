// A control run through the real engine, in process: synthetic wire messages (capture/synthetic.ts)
// go through the codec, run glue, statistics, controller and run store; the "trainer" saves a
// checkpoint every `checkpointEvery` steps, acks each directive as a TRL trainer with beta = 0 would
// (tighten: beta refused with E_NO_REF_MODEL, the rest applied; rollback: applied), and after an applied
// rollback its data is healthy again (the cause is cleared, as in the demo). Fixture for report tests,
// screenshots and the live-page benchmark.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { helloFrames, stepFrames, type SyntheticRun } from '../record/synthetic.ts';
import { buildPipeline } from '../engine/pipeline.ts';
import { RunRegistry } from '../engine/registry.ts';
import { createLogger } from '../log.ts';
import { decodeHeader, decodeMessage, encodeHeader, DEFAULT_LIMITS, type Message } from '../protocol/index.ts';
import type { AckHeader, HelloHeader, StepHeader, WireDirective } from '../protocol/messages.ts';

export interface ControlRunOptions {
  runDir: string;
  runId?: string;
  steps?: number;
  worldSize?: number;
  onset?: number;
  checkpointEvery?: number;
  window?: number;
  /** observe: findings and warn only (the demo's first run). */
  mode?: 'control' | 'observe';
  seqs?: number;
  seqLen?: number;
  /** Which ranks ack each directive: all (as the DDP shim does, the default) or rank 0 only (each ack makes the
   *  store save the resume state, so long fixtures ack once). */
  acks?: 'all' | 'rank0';
}

export interface ControlRunSummary {
  dir: string;
  directives: WireDirective[];
}

// One tighten, then rollback: the ladder of the demo's control run, over a short run.
const POLICY = (mode: string) => `mode: ${mode}\ntighten:\n  max_tightens: 1\ncheckpoints:\n  certify_after: 2\n  window: 3\n`;

export async function writeControlRun(o: ControlRunOptions): Promise<ControlRunSummary> {
  const runId = o.runId ?? 'control-run';
  const steps = o.steps ?? 60, world = o.worldSize ?? 1, every = o.checkpointEvery ?? 5;
  fs.mkdirSync(o.runDir, { recursive: true });
  const policy = path.join(o.runDir, `${runId}.policy.yaml`);
  fs.writeFileSync(policy, POLICY(o.mode ?? 'control'));
  const log = createLogger({ level: 'silent' });
  const registry = new RunRegistry({
    limits: { ...DEFAULT_LIMITS, step_timeout_ms: 30_000 }, log, factory: buildPipeline, runDir: o.runDir,
    options: { policy, window: String(o.window ?? 5), durable: false },
  });
  const sick: SyntheticRun = { runId, worldSize: world, onset: o.onset ?? 30, rankSkew: world > 1 ? 0.5 : 0, seqs: o.seqs, seqLen: o.seqLen };
  const healthy: SyntheticRun = { ...sick, onset: Number.MAX_SAFE_INTEGER };
  let run = sick;
  const decode = (frames: Buffer[]) => decodeMessage(frames) as Message;
  for (let r = 0; r < world; r++) {
    const h = decode(helloFrames(sick, r)).header as HelloHeader;
    registry.forHello(h).hello(h);
  }
  const issued: WireDirective[] = [];
  let clock = 1_700_000_000_000;
  let stopped = false;
  for (let step = 1; step <= steps && !stopped; step++) {
    clock += 1000;
    for (let r = 0; r < world; r++) {
      const frames = stepFrames(run, step, r);
      if (r === 0 && step % every === 0) {
        const h = { ...decodeHeader(frames[0]), checkpoint: { step, path: `checkpoints/checkpoint-${step}` } };
        frames[0] = encodeHeader(h);
      }
      const msg = decode(frames) as Message<StepHeader>;
      const reply = registry.get(runId)!.step(msg, clock);
      const d = reply?.directive;
      if (!d || d.action === 'noop' || r !== 0) continue;
      issued.push(d);
      for (let rank = 0; rank < (o.acks === 'rank0' ? 1 : world); rank++) registry.get(runId)!.ack(ackFor(d, runId, rank, step));
      if (d.action === 'rollback') run = healthy;
      if (d.action === 'stop') stopped = true; // the trainer ends after this step
    }
  }
  registry.tick(Number.MAX_SAFE_INTEGER);
  await registry.close();
  return { dir: path.join(o.runDir, runId), directives: issued };
}

/** What a beta = 0 TRL trainer answers: beta cannot be raised without a reference model. */
function ackFor(d: WireDirective, runId: string, rank: number, step: number): AckHeader {
  const base = { type: 'ack' as const, version: [1, 0] as [number, number], run_id: runId, rank, directive_id: d.id, step };
  if (d.action === 'tighten') {
    const knobs = Object.keys(d.params).filter((k) => typeof d.params[k] === 'number');
    const changes = knobs.filter((k) => k !== 'beta').map((k) => ({ knob: k, old: null, new: d.params[k] as number }));
    return { ...base, applied: changes.length > 0, changes, refused: knobs.includes('beta') ? 'E_NO_REF_MODEL: beta stays 0 without a reference model' : null };
  }
  return { ...base, applied: true, changes: [], refused: null };
}
