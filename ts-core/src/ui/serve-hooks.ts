// What `tailguard serve` starts besides the engine: the live page (--ui [port], --ui-host, --ui-token) in a
// worker thread, and the recorder (--record FILE). One call in serve.ts, one close on shutdown.
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { RecordingWriter } from '../record/index.ts';
import type { UiOptions } from './server.ts';

export const DEFAULT_UI_PORT = 7860;

declare const __TAILGUARD_BUNDLED__: boolean | undefined;
// From source the worker needs tsx's loader (worker-entry.mjs registers it); the bundle (scripts/build-engine.mjs)
// builds ui/worker.ts into ui-worker.mjs beside the CLI.
const WORKER = typeof __TAILGUARD_BUNDLED__ !== 'undefined' ? new URL('./ui-worker.mjs', import.meta.url) : new URL('./worker-entry.mjs', import.meta.url);

export interface UiHandle {
  url: string;
  port: number;
  close(): Promise<void>;
}

export interface Observability {
  /** Pass to EngineServer as `recorder`: every received message (identity frame excluded). */
  recorder: { write(frames: readonly Uint8Array[]): void } | null;
  ui: UiHandle | null;
  close(): Promise<void>;
}

/** The live page in a worker thread: rendering never runs on the engine's event loop. */
export function startUiWorker(opts: UiOptions, log: Logger): Promise<UiHandle> {
  const { log: _ignored, ...data } = opts;
  const w = new Worker(WORKER, { workerData: data });
  w.unref();
  return new Promise((resolve, reject) => {
    w.on('error', reject);
    w.on('message', (m: { ready?: boolean; url?: string; port?: number; error?: boolean; message?: string; code?: string; log?: 'info' | 'warn'; o?: object; msg?: string }) => {
      if (m.log) log[m.log](m.o ?? {}, m.msg ?? '');
      else if (m.error) reject(Object.assign(new Error(m.message), { code: m.code }));
      else if (m.ready) {
        resolve({
          url: m.url!,
          port: m.port!,
          close: () =>
            new Promise<void>((done) => {
              const t = setTimeout(() => void w.terminate().then(() => done()), 2000);
              w.once('exit', () => { clearTimeout(t); done(); });
              w.postMessage({ close: true });
            }),
        });
      }
    });
  });
}

export async function startObservability(opts: { ui?: string | boolean; uiHost?: string; uiToken?: string; record?: string; runDir?: string }, log: Logger): Promise<Observability> {
  let recorder: RecordingWriter | null = null;
  if (opts.record) {
    recorder = new RecordingWriter(opts.record);
    log.info({ file: opts.record }, 'recording received messages');
  }
  let ui: UiHandle | null = null;
  if (opts.ui !== undefined && opts.ui !== false) {
    const port = opts.ui === true ? DEFAULT_UI_PORT : Number(opts.ui);
    try {
      ui = await startUiWorker({ root: opts.runDir ?? 'runs', port, host: opts.uiHost ?? '127.0.0.1', token: opts.uiToken ?? process.env.TAILGUARD_UI_TOKEN }, log);
    } catch (e) {
      // The dashboard is a convenience: the engine keeps serving trainers without it.
      log.error({ err: e, port, code: (e as { code?: string }).code }, 'dashboard could not start');
      if ((e as { code?: string }).code === 'E_UI_INSECURE') process.stderr.write(`\n!!! tailguard: live page NOT started: ${(e as Error).message} !!!\n\n`);
    }
  }
  const rec = recorder;
  let failed = false;
  return {
    recorder: rec && {
      write(frames) {
        if (failed) return;
        try {
          rec.write(frames);
        } catch (e) {
          failed = true; // e.g. disk full: stop recording, keep serving
          log.error({ err: e }, 'recording write failed; recording stopped');
        }
      },
    },
    ui,
    async close() {
      recorder?.close();
      await ui?.close();
    },
  };
}
