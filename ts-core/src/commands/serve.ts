// `tailguard serve`: bind the engine, write the ready file, run until SIGINT/SIGTERM or the parent dies.
import { renameSync, writeFileSync } from 'node:fs';
import { createLogger } from '../log.ts';
import { loadPolicy } from '../policy/load.ts';
import { buildPipeline } from '../engine/pipeline.ts';
import { DEFAULT_ENDPOINT, EngineServer } from '../transport/server.ts';
import { startObservability } from '../ui/serve-hooks.ts';
import { availableParallelism } from 'node:os';
import { IngestPool } from '../stats/ingest-pool.ts';
import { defaultIngestWorkers } from './options.ts';
import { checkBind, curveServerOptions, loadCurve, ZapHandler, type CurveConfig } from '../transport/curve.ts';

export interface ServeOptions {
  endpoint?: string;
  runDir?: string;
  logLevel?: string;
  // Numbers are parsed and checked by the CLI (commands/options.ts); strings still work for in-process callers.
  stepTimeout?: number | string;
  parentPid?: number | string;
  readyFile?: string;
  delayMs?: number | string;
  insecure?: boolean;
  curveSecret?: string;
  curveAllow?: string;
  [k: string]: unknown;
}

export async function serve(opts: ServeOptions): Promise<void> {
  const log = createLogger({ level: opts.logLevel ?? 'info' });
  const endpoint = opts.endpoint ?? DEFAULT_ENDPOINT;
  // Validate --policy before binding: a typo must stop the engine now, not at a run's first hello.
  try {
    loadPolicy(opts.policy as string | undefined);
  } catch (e) {
    log.fatal({ code: (e as { code?: string }).code, policy: opts.policy }, (e as Error).message);
    process.exit(2);
  }
  // Security (transport/curve.ts): loopback, or CURVE with an allow-list, or an explicit --insecure.
  let curve: CurveConfig | null = null;
  try {
    // Half a CURVE configuration is refused either way round (never a silent plaintext bind).
    if (opts.curveAllow && !opts.curveSecret) throw Object.assign(new Error('--curve-allow needs --curve-secret (the server secret key); refusing to serve plaintext'), { code: 'E_CURVE_KEY' });
    if (opts.curveSecret) curve = loadCurve(opts.curveSecret, opts.curveAllow);
    if (checkBind(endpoint, { curve: curve !== null, insecure: opts.insecure }) === 'insecure') {
      process.stderr.write(`\n!!! tailguard: INSECURE bind ${endpoint}: no CURVE, anyone who can reach it can send data and receive directives !!!\n\n`);
      log.warn({ endpoint }, 'INSECURE: anyone who can reach this address can send data and receive directives');
    }
  } catch (e) {
    log.fatal({ endpoint, code: (e as { code?: string }).code }, (e as Error).message);
    process.exit(2);
  }
  const zap = curve ? new ZapHandler(curve.allow, log) : null;
  await zap?.start(); // before bind: libzmq asks it about every CURVE handshake
  if (curve) log.info({ endpoint, allowed_keys: curve.allow.size }, 'CURVE enabled');
  const stepTimeout = Number(opts.stepTimeout ?? 30000);
  const maxRuns = Number(opts.maxRuns ?? 64);
  const runIdleMs = Number(opts.runIdleMs ?? 300_000);
  const stateEvery = Number(opts.stateEvery ?? 10);
  if (!Number.isSafeInteger(maxRuns) || maxRuns < 1 || !Number.isSafeInteger(runIdleMs) || runIdleMs < 0 || !Number.isSafeInteger(stateEvery) || stateEvery < 1) {
    log.fatal({ max_runs: opts.maxRuns, run_idle_ms: opts.runIdleMs, state_every: opts.stateEvery }, '--max-runs and --state-every must be integers >= 1, --run-idle-ms an integer >= 0');
    process.exit(2);
  }
  const workers = opts.ingestWorkers === undefined ? defaultIngestWorkers(availableParallelism()) : Number(opts.ingestWorkers);
  if (!Number.isSafeInteger(workers) || workers < 0) {
    log.fatal({ ingest_workers: opts.ingestWorkers }, '--ingest-workers must be an integer >= 0');
    process.exit(2);
  }
  const ingestPool = workers > 0 ? new IngestPool(workers, { log }) : null; // stats/ingest-pool.ts
  const obs = await startObservability(opts, log); // ui/: --ui dashboard; capture/: --record
  const server = new EngineServer({
    endpoint,
    log,
    runDir: opts.runDir ?? 'runs',
    delayMs: opts.delayMs ? Number(opts.delayMs) : 0,
    limits: Number.isFinite(stepTimeout) ? { step_timeout_ms: stepTimeout } : {},
    factory: buildPipeline,
    maxRuns,
    runIdleMs,
    maxRunsPerConn: opts.maxRunsPerConn === undefined ? undefined : Number(opts.maxRunsPerConn),
    maxPendingBytes: opts.maxPendingBytes === undefined ? undefined : Number(opts.maxPendingBytes),
    maxRunPendingBytes: opts.maxRunPendingBytes === undefined ? undefined : Number(opts.maxRunPendingBytes),
    retain: { runs: Number(opts.retainRuns ?? 0), days: opts.retainDays === undefined ? undefined : Number(opts.retainDays) },
    options: { ...opts, ingestPool },
    socketOptions: curve ? curveServerOptions(curve) : undefined,
    recorder: obs.recorder,
  });
  try {
    await server.start();
  } catch (e) {
    log.fatal({ err: e, endpoint }, 'could not bind');
    process.exit(1);
  }
  if (opts.readyFile) {
    // Atomic: a reader never sees a half-written endpoint.
    writeFileSync(`${opts.readyFile}.tmp`, server.endpoint + '\n');
    renameSync(`${opts.readyFile}.tmp`, opts.readyFile);
  }

  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'shutting down');
    try {
      await server.close();
      await ingestPool?.close();
      await zap?.close();
      await obs.close();
    } catch (e) {
      log.error({ err: e }, 'shutdown failed');
    }
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  const parent = opts.parentPid ? Number(opts.parentPid) : 0;
  if (parent > 0) {
    setInterval(() => {
      try {
        process.kill(parent, 0);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ESRCH') void stop(`parent ${parent} is gone`);
      }
    }, 1000).unref();
  }
}
