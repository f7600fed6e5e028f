// Who may talk to the live page. Host and Origin must name this server (a page on another site cannot
// read it through DNS rebinding); a non-loopback bind is refused unless a token is set, and then every
// request carries it (?token= once, then an HttpOnly SameSite=Strict cookie).
import { timingSafeEqual } from 'node:crypto';
import type * as http from 'node:http';

export class UiAccessError extends Error {
  readonly code = 'E_UI_INSECURE';
  constructor(message: string) {
    super(message);
    this.name = 'UiAccessError';
  }
}

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** Throws E_UI_INSECURE for a non-loopback --ui-host without a token. */
export function checkUiBind(host: string, token: string | undefined): void {
  if (isLoopback(host)) return;
  if (!token || token.length < 16) {
    throw new UiAccessError(`--ui-host ${host} is not loopback: anyone who can reach it would read your runs. Set --ui-token (16+ characters, or TAILGUARD_UI_TOKEN), or keep 127.0.0.1 and use an SSH tunnel`);
  }
}

const COOKIE = 'tailguard_ui';

export function access(o: { host: string; token?: string; port: () => number }): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  const names = new Set(['localhost', '127.0.0.1', '[::1]', o.host.includes(':') ? `[${o.host}]` : o.host].map((h) => h.toLowerCase()));
  const okHost = (v: string | undefined) => {
    if (!v) return false;
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(v.toLowerCase());
    return !!m && names.has(m[1]) && (m[2] === undefined || Number(m[2]) === o.port());
  };
  const same = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
  return (req, res) => {
    if (!okHost(req.headers.host)) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end('E_UI_HOST: Host header not allowed\n');
      return false;
    }
    const origin = req.headers.origin;
    if (origin && origin !== 'null') {
      let ok = false;
      try {
        ok = okHost(new URL(origin).host);
      } catch {}
      if (!ok) {
        res.writeHead(403, { 'content-type': 'text/plain' }).end('E_UI_ORIGIN: cross-origin request refused\n');
        return false;
      }
    }
    if (!o.token) return true;
    const q = new URL(req.url ?? '/', 'http://x').searchParams.get('token');
    const c = /(?:^|;\s*)tailguard_ui=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
    if (q && same(q, o.token)) {
      res.setHeader('set-cookie', `${COOKIE}=${encodeURIComponent(q)}; HttpOnly; SameSite=Strict; Path=/`);
      return true;
    }
    if (c && same(decodeURIComponent(c), o.token)) return true;
    res.writeHead(401, { 'content-type': 'text/plain' }).end('E_UI_TOKEN: open the URL with ?token=<the --ui-token value>\n');
    return false;
  };
}
