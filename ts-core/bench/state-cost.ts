// What a per-step state.json costs: the engine path (decode → stats → detect/policy → store) for a
// synthetic run, with the time inside RunStore.saveState measured separately (snapshot + JSON +
// write + fsync + rename). Usage: npx tsx ts-core/bench/state-cost.ts [--ranks 8] [--steps 60] [--every 1]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { EngineServer } from '../src/transport/server.ts';
import { buildPipeline } from '../src/engine/pipeline.ts';
import { silentLogger } from '../src/log.ts';
import { helloFrames, stepFrames } from '../src/record/synthetic.ts';
import { RunStore } from '../src/store/index.ts';

const { values } = parseArgs({ options: { ranks: { type: 'string', default: '8' }, steps: { type: 'string', default: '60' }, every: { type: 'string', default: '1' } } });
const ranks = Number(values.ranks), steps = Number(values.steps);
const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-statecost-'));
const server = new EngineServer({ log: silentLogger(), factory: buildPipeline, runDir, options: { stateEvery: values.every } });
let saveNs = 0n, saves = 0, bytes = 0;
const orig = RunStore.prototype.saveState;
RunStore.prototype.saveState = function (this: RunStore, s) {
  const t = process.hrtime.bigint();
  orig.call(this, s);
  saveNs += process.hrtime.bigint() - t;
  saves++;
  bytes = fs.statSync(this.path('state')).size;
};
const id = Buffer.from('x');
const run = { runId: 'cost', worldSize: ranks, seqs: 8, seqLen: 64 };
for (let r = 0; r < ranks; r++) server.handle(id, helloFrames(run, r));
const frames = Array.from({ length: steps }, (_, s) => Array.from({ length: ranks }, (_, r) => stepFrames(run, s + 1, r)));
const t0 = process.hrtime.bigint();
for (let s = 0; s < steps; s++) for (let r = 0; r < ranks; r++) server.handle(id, frames[s][r]);
const total = Number(process.hrtime.bigint() - t0) / 1e6;
await server.close();
const save = Number(saveNs) / 1e6;
console.log(JSON.stringify({ ranks, steps, every: Number(values.every), state_bytes: bytes, saves, ms_per_step: +(total / steps).toFixed(2), save_ms_per_save: +(save / Math.max(saves, 1)).toFixed(2), save_share: +(save / total).toFixed(3), load1: os.loadavg()[0] }));
fs.rmSync(runDir, { recursive: true, force: true });
