// An ingest worker thread (stats/ingest-pool.ts): one rank's step at a time, read from its shared buffer,
// through the same ingestChunk as the main thread, its RankStep packed back (stats/packed.ts). Each worker
// instantiates the WebAssembly kernel itself (kernel-wasm.ts runs at import).
import { parentPort } from 'node:worker_threads';
import type { PairName } from '../types.ts';
import type { Band } from './kernel.ts';
import { packRank } from './packed.ts';
import { BufPool } from './pool.ts';
import { RankStep, SliceState, ingestChunk } from './rankstep.ts';
import { viewsOf, type SharedLayout, type SharedMeta } from './shared-step.ts';
import { WASM_KERNEL } from './kernel-wasm.ts';

export interface IngestJob {
  id: number;
  sab: SharedArrayBuffer;
  layout: SharedLayout;
  meta: SharedMeta;
  bands: [PairName, Band][];
  topK: number;
  /** Fault injection for tests (IngestPool `fault`): the worker exits, never answers, or answers a second late. */
  fault?: 'exit' | 'hang' | 'slow';
}

const pool = new BufPool(); // unused in 'view' mode; ingestChunk's signature wants one
const free: SliceState[] = [];
const alloc = () => free.pop()?.reset() ?? new SliceState();

parentPort!.postMessage({ ready: true, kernel: WASM_KERNEL ? 'wasm' : 'js' }); // modules loaded, kernel instantiated: job timers start now
parentPort!.on('message', (job: IngestJob) => {
  if (job.fault === 'exit') process.exit(70); // ends this thread only
  if (job.fault === 'hang') for (;;);
  if (job.fault === 'slow') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
  try {
    const { data, zeros } = viewsOf(job.sab, job.layout, job.meta);
    const rs = new RankStep(job.meta.rank, alloc);
    rs.topK = job.topK;
    ingestChunk(rs, data, pool, 'view', new Map(job.bands), zeros);
    const nz = new Map<string, number[]>();
    rs.finish(nz);
    const { msg, transfer } = packRank(rs, job.sab, nz);
    for (const s of rs.slices.values()) free.push(s);
    if (free.length > 64) free.length = 64;
    parentPort!.postMessage({ id: job.id, ok: msg }, transfer);
  } catch (e) {
    const err = e as { code?: string; message?: string };
    parentPort!.postMessage({ id: job.id, error: { code: err.code ?? 'E_INTERNAL', message: err.message ?? String(e) } });
  }
});
