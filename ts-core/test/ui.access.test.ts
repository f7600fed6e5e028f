// The live page's access rules over real HTTP: Host/Origin allow-list, token for a non-loopback bind.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkUiBind, isLoopback } from '../src/ui/access.ts';
import { startUi } from '../src/ui/server.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-ui-access-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function get(port: number, headers: Record<string, string>, p = '/api/runs'): Promise<{ status: number; cookie?: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p, headers }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? -1, cookie: res.headers['set-cookie']?.[0] });
    }).on('error', reject);
  });
}

describe('live page access', () => {
  it('refuses a non-loopback bind without a token (E_UI_INSECURE)', async () => {
    expect(isLoopback('127.0.0.1') && isLoopback('::1') && isLoopback('localhost')).toBe(true);
    expect(isLoopback('0.0.0.0')).toBe(false);
    expect(() => checkUiBind('0.0.0.0', undefined)).toThrow(expect.objectContaining({ code: 'E_UI_INSECURE' }));
    expect(() => checkUiBind('0.0.0.0', 'short')).toThrow(expect.objectContaining({ code: 'E_UI_INSECURE' }));
    await expect(startUi({ root: tmp, port: 0, host: '0.0.0.0' })).rejects.toMatchObject({ code: 'E_UI_INSECURE' });
  });

  it('allows only its own Host and Origin', async () => {
    const ui = await startUi({ root: tmp, port: 0 });
    try {
      const host = `127.0.0.1:${ui.port}`;
      expect((await get(ui.port, { host })).status).toBe(200);
      expect((await get(ui.port, { host: `localhost:${ui.port}` })).status).toBe(200);
      expect((await get(ui.port, { host: 'attacker.example' })).status).toBe(403); // DNS rebinding
      expect((await get(ui.port, { host: '127.0.0.1:1' })).status).toBe(403);
      expect((await get(ui.port, { host, origin: 'http://attacker.example' })).status).toBe(403);
      expect((await get(ui.port, { host, origin: `http://${host}` })).status).toBe(200);
    } finally {
      await ui.close();
    }
  });

  it('with a token: 401 without it, a cookie after ?token=', async () => {
    const token = 'a-long-enough-token-123';
    const ui = await startUi({ root: tmp, port: 0, token });
    try {
      const host = `127.0.0.1:${ui.port}`;
      expect((await get(ui.port, { host })).status).toBe(401);
      expect((await get(ui.port, { host }, '/api/runs?token=wrong-token-wrong-token')).status).toBe(401);
      const ok = await get(ui.port, { host }, `/api/runs?token=${token}`);
      expect(ok.status).toBe(200);
      expect(ok.cookie).toMatch(/HttpOnly; SameSite=Strict/);
      expect((await get(ui.port, { host, cookie: ok.cookie!.split(';')[0] })).status).toBe(200);
    } finally {
      await ui.close();
    }
  });
});
