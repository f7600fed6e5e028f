// `tailguard serve`: bind the engine, write the ready file, run until SIGINT/SIGTERM or the parent dies.
import { renameSync, writeFileSync } from 'node:fs';
import { createLogger } from '../log.ts';
import { buildPipeline } from '../engine/pipeline.ts';
import { DEFAULT_ENDPOINT, EngineServer } from '../transport/server.ts';

export interface ServeOptions {
  endpoint?: string;
  runDir?: string;
  logLevel?: string;
  stepTimeout?: string;
  parentPid?: string;
  readyFile?: string;
  delayMs?: string;
  insecure?: boolean;
  curveSecret?: string;
  [k: string]: unknown;
}

const LOOPBACK = /^tcp:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\]|::1)(:|$)/;

export async function serve(opts: ServeOptions): Promise<void> {
  const log = createLogger({ level: opts.logLevel ?? 'info' });
  const endpoint = opts.endpoint ?? DEFAULT_ENDPOINT;
  if (endpoint.startsWith('tcp://') && !LOOPBACK.test(endpoint) && !opts.insecure) {
    log.fatal({ endpoint }, 'refusing to bind a non-loopback address without CURVE; pass --insecure to do it anyway');
    process.exit(2);
  }
  if (opts.insecure && !LOOPBACK.test(endpoint)) log.warn({ endpoint }, 'INSECURE: anyone who can reach this address can send data and receive directives');
  const stepTimeout = Number(opts.stepTimeout ?? 30000);
  const server = new EngineServer({
    endpoint,
    log,
    runDir: opts.runDir ?? 'runs',
    delayMs: opts.delayMs ? Number(opts.delayMs) : 0,
    limits: Number.isFinite(stepTimeout) ? { step_timeout_ms: stepTimeout } : {},
    factory: buildPipeline,
    options: opts,
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
