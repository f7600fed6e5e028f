// `tailguard ui [--run-dir DIR] [--port N] [--host H] [--token T]`: the live page as its own process,
// reading the run store that an engine (or several) writes. Costs the engine nothing.
import { createLogger } from '../log.ts';
import { startUi } from '../ui/server.ts';

export async function ui(opts: { runDir?: string; port?: string; host?: string; token?: string; logLevel?: string }): Promise<void> {
  const log = createLogger({ level: opts.logLevel ?? 'info' });
  try {
    const s = await startUi({ root: opts.runDir ?? 'runs', port: Number(opts.port ?? 7860), host: opts.host ?? '127.0.0.1', token: opts.token ?? process.env.TAILGUARD_UI_TOKEN, log });
    const stop = () => void s.close().then(() => process.exit(0));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  } catch (e) {
    log.fatal({ code: (e as { code?: string }).code }, (e as Error).message);
    process.exit(2);
  }
}
