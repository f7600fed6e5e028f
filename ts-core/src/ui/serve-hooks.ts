// What `tailguard serve` starts besides the engine: the live dashboard (--ui [port], --ui-host) and
// the capture recorder (--record FILE). One call in serve.ts, one close on shutdown.
import type { Logger } from 'pino';
import { CaptureWriter } from '../capture/index.ts';
import { startUi, type UiServer } from './server.ts';

export const DEFAULT_UI_PORT = 7860;

export interface Observability {
  /** Pass to EngineServer as `recorder`: every received message (identity frame excluded). */
  recorder: { write(frames: readonly Uint8Array[]): void } | null;
  ui: UiServer | null;
  close(): Promise<void>;
}

export async function startObservability(opts: { ui?: string | boolean; uiHost?: string; record?: string; runDir?: string }, log: Logger): Promise<Observability> {
  let recorder: CaptureWriter | null = null;
  if (opts.record) {
    recorder = new CaptureWriter(opts.record);
    log.info({ file: opts.record }, 'recording received messages');
  }
  let ui: UiServer | null = null;
  if (opts.ui !== undefined && opts.ui !== false) {
    const port = opts.ui === true ? DEFAULT_UI_PORT : Number(opts.ui);
    try {
      ui = await startUi({ root: opts.runDir ?? 'runs', port, host: opts.uiHost ?? '127.0.0.1', log });
    } catch (e) {
      // The dashboard is a convenience: the engine keeps serving trainers without it.
      log.error({ err: e, port }, 'dashboard could not start');
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
          log.error({ err: e }, 'capture write failed; recording stopped');
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
