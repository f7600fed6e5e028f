// Network security for the engine socket: which endpoints may be bound, CURVE key files, and a
// ZAP handler (ZeroMQ RFC 27) that admits only allow-listed client public keys.
//
// libzmq asks a ZAP handler about every CURVE handshake when one is bound at
// `inproc://zeromq.zap.01` in the socket's context; zeromq.js v6 has no ZAP helper, so this is a
// plain Reply socket in the default context (the one the engine's Router uses).
import { readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { Reply, curveKeyPair } from 'zeromq';
import type { Logger } from 'pino';

export const ZAP_ENDPOINT = 'inproc://zeromq.zap.01';
const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

export class SecurityError extends Error {
  constructor(
    readonly code: 'E_BIND_INSECURE' | 'E_CURVE_KEY' | 'E_CURVE_UNAVAILABLE',
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = 'SecurityError';
  }
}

/** True for ipc/inproc and tcp on 127.0.0.0/8, ::1 or localhost. `*`, 0.0.0.0 and interface names are not. */
export function isLoopback(endpoint: string): boolean {
  if (!endpoint.startsWith('tcp://')) return /^(ipc|inproc):\/\//.test(endpoint);
  const host = endpoint.slice(6).replace(/:[^:\]]*$/, ''); // strip :port
  // A tcp endpoint may name a source address first (`tcp://src;dst`); servers bind, so none is expected.
  return /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\]|::1)$/.test(host);
}

/**
 * The bind policy: loopback is always allowed; anything else needs CURVE, or `insecure` (then the
 * caller must log a loud warning). Returns which case applies; throws E_BIND_INSECURE otherwise.
 */
export function checkBind(endpoint: string, o: { curve: boolean; insecure?: boolean }): 'loopback' | 'curve' | 'insecure' {
  if (o.curve) return 'curve';
  if (isLoopback(endpoint)) return 'loopback';
  if (o.insecure) return 'insecure';
  throw new SecurityError('E_BIND_INSECURE', `refusing to bind non-loopback ${endpoint} without CURVE (--curve-secret and --curve-allow); pass --insecure to do it anyway`);
}

/**
 * Keys in a file: bare Z85 lines, or zcert lines `public-key = "..."` / `secret-key = "..."`
 * (what `tailguard keygen` and pyzmq's `zmq.auth.create_certificates` write).
 */
export function readKeys(file: string): { public: string[]; secret: string[]; bare: string[] } {
  const out = { public: [] as string[], secret: [] as string[], bare: [] as string[] };
  for (const raw of readFileSync(file, 'utf8').split(/\r?\n/)) {
    const line = raw.trim();
    const m = /^(public|secret)-key\s*=\s*"(.{40})"$/.exec(line);
    if (m && Z85_KEY.test(m[2])) out[m[1] as 'public' | 'secret'].push(m[2]);
    else if (Z85_KEY.test(line)) out.bare.push(line); // Z85 may contain '#': test the key before treating it as a comment
  }
  return out;
}

export interface CurveConfig {
  secretKey: string;
  allow: Set<string>;
}

/** Load the server secret key and the client allow-list; both are required for CURVE. */
export function loadCurve(secretFile: string, allowFile: string | undefined): CurveConfig {
  if (!curveAvailable()) throw new SecurityError('E_CURVE_UNAVAILABLE', 'this libzmq build has no CURVE support');
  if (!allowFile) throw new SecurityError('E_CURVE_KEY', '--curve-secret needs --curve-allow (the client public keys allowed to connect)');
  const s = readKeys(secretFile);
  const secret = s.secret[0] ?? s.bare[0];
  if (!secret) throw new SecurityError('E_CURVE_KEY', `${secretFile} holds no Z85 secret key`);
  const a = readKeys(allowFile);
  const allow = new Set([...a.public, ...a.bare]);
  if (allow.size === 0) throw new SecurityError('E_CURVE_KEY', `${allowFile} lists no client public key`);
  return { secretKey: secret, allow };
}

export function curveAvailable(): boolean {
  try {
    return curveKeyPair().publicKey.length === 40;
  } catch {
    return false;
  }
}

/** Socket options that make a Router a CURVE server. */
export const curveServerOptions = (c: CurveConfig) => ({ curveServer: true, curveSecretKey: c.secretKey, zapDomain: 'tailguard' });

/** Answers ZAP requests: 200 for an allow-listed CURVE client key, 400 for anything else. */
export class ZapHandler {
  readonly counters = { accepted: 0, rejected: 0 };
  private sock: Reply | null = null;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly allow: ReadonlySet<string>,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const sock = new Reply({ linger: 0 });
    await sock.bind(ZAP_ENDPOINT);
    this.sock = sock;
    this.loop = this.serve(sock);
  }

  private async serve(sock: Reply): Promise<void> {
    try {
      for await (const req of sock) await sock.send(this.answer(req));
    } catch (e) {
      if (!sock.closed) this.log.error({ err: e }, 'ZAP handler failed');
    }
  }

  // Request: version, request id, domain, address, identity, mechanism, credentials... (RFC 27).
  private answer(req: Buffer[]): (Buffer | string)[] {
    const [version, id, , address, , mechanism, cred] = req;
    const mech = mechanism?.toString() ?? '';
    const key = mech === 'CURVE' && cred?.length === 32 ? z85encode(cred) : null;
    const ok = key !== null && this.allow.has(key);
    if (ok) this.counters.accepted++;
    else this.counters.rejected++;
    this.log[ok ? 'info' : 'warn']({ address: address?.toString(), mechanism: mech, client_key: key }, ok ? 'client admitted (CURVE)' : 'client rejected: key not in --curve-allow');
    return [version ?? '1.0', id ?? '', ok ? '200' : '400', ok ? 'OK' : 'key not allowed', ok ? key! : '', ''];
  }

  async close(): Promise<void> {
    const s = this.sock;
    this.sock = null;
    if (!s) return;
    s.close();
    await this.loop;
  }
}

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';

/** Z85 (ZeroMQ RFC 32) of a byte string whose length is a multiple of 4. */
export function z85encode(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i += 4) {
    let v = ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
    let chunk = '';
    for (let k = 0; k < 5; k++) {
      chunk = Z85[v % 85] + chunk;
      v = Math.floor(v / 85);
    }
    s += chunk;
  }
  return s;
}

/** Write a key pair as zcert files: PREFIX.key (public + secret, mode 0600) and PREFIX.pub (public only). */
export function writeKeyPair(prefix: string): { publicKey: string; secretFile: string; publicFile: string } {
  const { publicKey, secretKey } = curveKeyPair();
  const head = (what: string) => `#   ****  Generated by tailguard keygen  ****\n#   ZeroMQ CURVE ${what} Certificate\n`;
  const secretFile = `${prefix}.key`;
  const publicFile = `${prefix}.pub`;
  // Create with 0600 (and chmod, in case the file existed with wider permissions).
  writeFileSync(secretFile, `${head('**Secret**')}#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\nmetadata\ncurve\n    public-key = "${publicKey}"\n    secret-key = "${secretKey}"\n`, { mode: 0o600 });
  chmodSync(secretFile, 0o600);
  writeFileSync(publicFile, `${head('Public')}#   Share this file with the peer (add it to the engine's --curve-allow list).\n\nmetadata\ncurve\n    public-key = "${publicKey}"\n`, { mode: 0o644 });
  return { publicKey, secretFile, publicFile };
}
