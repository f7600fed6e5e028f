// Security in-process: bind policy, key files, CURVE + ZAP allow-list over real tcp sockets, the live
// UI's default bind, run ids as paths. (The engine-process versions are in test/test_security_engine.py.)
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dealer, curveKeyPair } from 'zeromq';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeMessage, encodeHeader } from '../src/protocol/codec.ts';
import { checkBind, curveServerOptions, isLoopback, loadCurve, readKeys, writeKeyPair, z85encode, ZapHandler } from '../src/transport/curve.ts';
import { EngineServer } from '../src/transport/server.ts';
import { silentLogger } from '../src/log.ts';
import { startUi } from '../src/ui/server.ts';
import { RunStore } from '../src/store/index.ts';

const tmp = mkdtempSync(join(tmpdir(), 'tg-sec-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('bind policy', () => {
  it.each([
    ['tcp://127.0.0.1:5599', true], ['tcp://127.8.9.10:1', true], ['tcp://localhost:5599', true], ['tcp://[::1]:5599', true],
    ['ipc:///tmp/x.sock', true], ['inproc://x', true],
    ['tcp://0.0.0.0:5599', false], ['tcp://*:5599', false], ['tcp://10.0.0.1:5599', false], ['tcp://eth0:5599', false],
    ['tcp://[::]:5599', false], ['tcp://127.0.0.1.evil.com:1', false], ['ws://127.0.0.1:1', false],
  ])('%s loopback=%s', (ep, loop) => {
    expect(isLoopback(ep)).toBe(loop);
    if (loop) expect(checkBind(ep, { curve: false })).toBe('loopback');
    else {
      expect(() => checkBind(ep, { curve: false })).toThrow(/E_BIND_INSECURE/);
      expect(checkBind(ep, { curve: false, insecure: true })).toBe('insecure');
      expect(checkBind(ep, { curve: true })).toBe('curve');
    }
  });
});

describe('keys', () => {
  it('keygen files: zcert format, secret 0600; readKeys takes zcert and bare Z85 lines (Z85 may contain #)', () => {
    const k = writeKeyPair(join(tmp, 'eng'));
    expect(statSync(k.secretFile).mode & 0o777).toBe(0o600);
    expect(readKeys(k.publicFile)).toEqual({ public: [k.publicKey], secret: [], bare: [] });
    expect(readKeys(k.secretFile).secret[0]).toHaveLength(40);
    const hashKey = '#' + 'a'.repeat(39);
    writeFileSync(join(tmp, 'allow'), `# comment line\n${hashKey}\n  public-key = "${k.publicKey}"\nnot a key\n`);
    expect(readKeys(join(tmp, 'allow'))).toEqual({ public: [k.publicKey], secret: [], bare: [hashKey] });
    expect(() => loadCurve(k.secretFile, undefined)).toThrow(/E_CURVE_KEY.*--curve-allow/);
    writeFileSync(join(tmp, 'empty'), '# nothing\n');
    expect(() => loadCurve(k.secretFile, join(tmp, 'empty'))).toThrow(/E_CURVE_KEY/);
  });

  it('z85encode matches libzmq (RFC 32 test vector)', () => {
    expect(z85encode(Uint8Array.of(0x86, 0x4f, 0xd2, 0x6f, 0xb5, 0x59, 0xf7, 0x5b))).toBe('HelloWorld');
  });
});

describe('CURVE with a ZAP allow-list (real tcp sockets)', () => {
  it('an allowed key gets a welcome; an unknown key and a plain client get nothing', async () => {
    const server = curveKeyPair();
    const good = curveKeyPair();
    const bad = curveKeyPair();
    const log = silentLogger();
    const zap = new ZapHandler(new Set([good.publicKey]), log);
    await zap.start();
    const engine = new EngineServer({ endpoint: 'tcp://127.0.0.1:*', log, runDir: join(tmp, 'runs'), socketOptions: curveServerOptions({ secretKey: server.secretKey, allow: new Set() }) });
    const ep = await engine.start();
    const hello = (run_id: string) => encodeHeader({ type: 'hello', version: [1, 0], run_id, rank: 0, world_size: 1, trainer: 'x' });
    const ask = async (keys: { publicKey: string; secretKey: string } | null, run: string) => {
      const d = new Dealer({ linger: 0, receiveTimeout: keys === good ? 10_000 : 1500, ...(keys ? { curveServerKey: server.publicKey, curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey } : {}) });
      d.connect(ep);
      await d.send(hello(run));
      try {
        return decodeMessage(await d.receive()).header.type;
      } catch (e) {
        return (e as { code?: string }).code;
      } finally {
        d.close();
      }
    };
    try {
      expect(await ask(good, 'good')).toBe('welcome');
      expect(await ask(bad, 'bad')).toBe('EAGAIN');
      expect(await ask(null, 'plain')).toBe('EAGAIN');
      expect(zap.counters.accepted).toBeGreaterThanOrEqual(1);
      expect(zap.counters.rejected).toBeGreaterThanOrEqual(1);
      expect(engine.registry.get('bad')).toBeUndefined();
      expect(engine.registry.get('plain')).toBeUndefined();
    } finally {
      await engine.close();
      await zap.close();
    }
  });
});

describe('paths and the live UI', () => {
  it('run ids from messages never become paths outside the root', () => {
    const root = join(tmp, 'root');
    for (const id of ['../../etc', '..', '.', 'a/b', '/abs', 'a\\b', '', 'x'.repeat(200), '.hidden'])
      expect(() => RunStore.open(root, id)).toThrow(expect.objectContaining({ code: 'E_RUN_ID' }));
    expect(existsSync(root) ? readdirSync(root) : []).toEqual([]);
  });

  it('the dashboard binds loopback by default', async () => {
    const ui = await startUi({ root: tmp, port: 0 });
    try {
      expect(ui.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    } finally {
      await ui.close();
    }
  });
});
