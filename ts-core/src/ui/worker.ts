// The live page in a worker thread of `tailguard serve`: reading the store and rendering run here, so the
// engine's event loop never waits on a page. Messages: in {close}; out {ready,url,port} | {error,message,code}.
import { parentPort, workerData } from 'node:worker_threads';
import { startUi, type UiOptions } from './server.ts';

const port = parentPort!;
const log = {
  info: (o: object, msg: string) => port.postMessage({ log: 'info', o, msg }),
  warn: (o: object, msg: string) => port.postMessage({ log: 'warn', o, msg }),
};
try {
  const ui = await startUi({ ...(workerData as UiOptions), log });
  port.postMessage({ ready: true, url: ui.url, port: ui.port });
  port.on('message', async (m: { close?: boolean }) => {
    if (!m.close) return;
    await ui.close();
    port.postMessage({ closed: true });
    port.close();
  });
} catch (e) {
  port.postMessage({ error: true, message: (e as Error).message, code: (e as { code?: string }).code });
}
