// An in-process engine (real sockets, the real pipeline, a store in `runDir`) and raw DEALER clients that
// see every reply as a header; both closed after each test of the file that calls inprocEngines().
import { Dealer } from 'zeromq';
import { afterEach } from 'vitest';
import { buildPipeline } from '../src/engine/pipeline.ts';
import { silentLogger } from '../src/log.ts';
import { decodeHeader } from '../src/protocol/index.ts';
import { EngineServer, type ServerOptions } from '../src/transport/server.ts';

export function inprocEngines() {
  const servers: EngineServer[] = [];
  const socks: Dealer[] = [];
  afterEach(async () => {
    for (const s of socks.splice(0)) s.close();
    for (const s of servers.splice(0)) await s.close();
  });
  async function engine(runDir: string, o: Partial<ServerOptions> = {}) {
    const server = new EngineServer({ endpoint: 'tcp://127.0.0.1:*', log: silentLogger(), factory: buildPipeline, runDir, options: { window: 4 }, tickMs: 60_000, ...o });
    servers.push(server);
    await server.start();
    return server;
  }
  async function dealer(endpoint: string) {
    const sock = new Dealer({ linger: 0, receiveTimeout: 20_000 });
    socks.push(sock);
    sock.connect(endpoint);
    const send = (frames: Buffer[]) => sock.send(frames);
    const recv = async () => decodeHeader((await sock.receive())[0]) as Record<string, any>;
    return { send, recv, req: async (f: Buffer[]) => (await send(f), recv()) };
  }
  /** Close an engine before the test ends (a restart); afterEach then leaves it alone. */
  async function stop(server: EngineServer) {
    servers.splice(servers.indexOf(server), 1);
    await server.close();
  }
  return { engine, dealer, stop };
}
