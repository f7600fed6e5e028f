// Live page: node:http + server-sent events over the run store root. It follows each run directory as
// the engine appends to it (ui/tail.ts) and sends each open page only the leaves that changed (a chart, a
// table body), at most once per `pollMs`; a fresh connection gets the whole body. `tailguard serve --ui`
// runs it in a worker thread (ui/worker.ts), `tailguard ui` in its own process: never on the engine's loop.
// Loopback by default; Host/Origin allow-list; a non-loopback bind needs a token (ui/access.ts).
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { page, renderRun, reportHtml } from '../report/index.ts';
import { esc } from '../report/svg.ts';
import { FILES, processAlive, RUN_ID_RE } from '../store/index.ts';
import { access, checkUiBind } from './access.ts';
import { RunTail } from './tail.ts';

export interface UiOptions {
  /** Root of the run stores (the engine's --run-dir). */
  root: string;
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  /** Required for a non-loopback host: pages ask for ?token= once, then a cookie carries it. */
  token?: string;
  /** How often open runs are checked for new lines (and at most how often a page gets an update). */
  pollMs?: number;
  /** No new step for this long: the badge says "idle since". */
  idleMs?: number;
  log?: { info: (o: object, msg: string) => void; warn: (o: object, msg: string) => void };
}

export interface UiServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

type State = 'live' | 'idle' | 'finished';

interface Watch {
  tail: RunTail;
  clients: Set<http.ServerResponse>;
  timer: NodeJS.Timeout | null;
  leaves: Map<string, string>;
  layout: string | null;
  html: string;
  lastStep: number | null;
  state: State | null;
  changedAt: number;
  /** No re-render before this time: renders of a long run take a while, and a page needs no more than ~1/3 of a core. */
  nextRender: number;
}

export async function startUi(opts: UiOptions): Promise<UiServer> {
  const host = opts.host ?? '127.0.0.1';
  checkUiBind(host, opts.token);
  const pollMs = opts.pollMs ?? 1000;
  const idleMs = opts.idleMs ?? 10_000;
  const watches = new Map<string, Watch>();
  let port = 0;
  const guard = access({ host, token: opts.token, port: () => port });

  function watch(runId: string): Watch {
    let w = watches.get(runId);
    if (!w) {
      w = { tail: new RunTail(path.join(opts.root, runId)), clients: new Set(), timer: null, leaves: new Map(), layout: null, html: '', lastStep: null, state: null, changedAt: Date.now(), nextRender: 0 };
      watches.set(runId, w);
    }
    return w;
  }

  /** finished: the engine closed the store (no lock) or died holding it; idle: no new step for idleMs. */
  function stateOf(w: Watch): { state: State; since: string | null } {
    const dir = w.tail.dir;
    let since: number | null = null;
    try {
      since = fs.statSync(path.join(dir, FILES.steps)).mtimeMs;
    } catch {}
    let owner: number | null = null;
    try {
      owner = Number(fs.readFileSync(path.join(dir, FILES.lock), 'utf8'));
    } catch {}
    const alive = owner !== null && owner > 0 && processAlive(owner);
    const iso = since === null ? null : new Date(since).toISOString();
    if (!alive && since !== null) return { state: 'finished', since: iso };
    if (since === null || Date.now() - Math.max(since, w.changedAt) > idleMs) return { state: 'idle', since: iso };
    return { state: 'live', since: iso };
  }

  /** Re-render when the store changed; returns the leaves that differ from the last render. */
  function update(w: Watch, force = false): { full: boolean; leaves: [string, string][] } | null {
    if (!force && Date.now() < w.nextRender) return null;
    if (!w.tail.refresh() && w.layout !== null) return null;
    const t0 = Date.now();
    w.changedAt = t0;
    const r = renderRun(w.tail.data);
    w.nextRender = Date.now() + 2 * (Date.now() - t0);
    const full = r.layout !== w.layout;
    const changed = r.leaves.filter(([id, html]) => w.leaves.get(id) !== html);
    w.leaves = new Map(r.leaves);
    w.layout = r.layout;
    w.html = r.html;
    w.lastStep = r.lastStep;
    return { full, leaves: changed };
  }

  const send = (c: http.ServerResponse, event: string, data: object) => c.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  const fullMsg = (w: Watch, s: ReturnType<typeof stateOf>) => ({ html: w.html, layout: w.layout, lastStep: w.lastStep, ...s });

  function tick(w: Watch, force = false): void {
    try {
      const u = update(w, force);
      const s = stateOf(w);
      if (u && (u.full || u.leaves.length)) {
        for (const c of w.clients) u.full ? send(c, 'full', fullMsg(w, s)) : send(c, 'delta', { leaves: u.leaves, lastStep: w.lastStep, ...s });
      } else if (s.state !== w.state) {
        for (const c of w.clients) send(c, 'status', { lastStep: w.lastStep, ...s });
      }
      w.state = s.state;
    } catch (e) {
      opts.log?.warn({ err: String(e), dir: w.tail.dir }, 'live page render failed');
    }
  }

  const server = http.createServer((req, res) => {
    try {
      if (!guard(req, res)) return;
      route(req, res);
    } catch (e) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`internal error: ${String(e)}`);
    }
  });

  function route(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    if (req.method !== 'GET') return void res.writeHead(405).end();
    if (parts.length === 0) return index(res);
    if (parts[0] === 'api' && parts[1] === 'runs') return json(res, listRuns(opts.root));
    if (parts[0] !== 'run' || !parts[1] || !RUN_ID_RE.test(parts[1])) return void res.writeHead(404).end('not found');
    const runId = parts[1];
    if (!fs.existsSync(path.join(opts.root, runId))) return void res.writeHead(404).end(`no run ${runId}`);
    if (parts.length === 2) {
      if (!url.pathname.endsWith('/')) return void res.writeHead(302, { location: `/run/${runId}/` }).end();
      const w = watch(runId);
      tick(w, true); // never a stale snapshot: read what the store has now (open pages get the change too)
      return html(res, page({ title: `tailguard · ${runId}`, body: w.html, live: true }));
    }
    if (parts[2] === 'events') return events(runId, req, res);
    if (parts[2] === 'report.html') {
      const w = watch(runId);
      w.tail.refresh();
      return html(res, reportHtml(w.tail.data));
    }
    res.writeHead(404).end('not found');
  }

  function events(runId: string, req: http.IncomingMessage, res: http.ServerResponse): void {
    const w = watch(runId);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.write('retry: 1000\n\n');
    tick(w, true); // a new page starts from the store as it is now (open pages get the change too)
    w.clients.add(res);
    send(res, 'full', fullMsg(w, stateOf(w)));
    if (!w.timer) w.timer = setInterval(() => tick(w), pollMs);
    const ping = setInterval(() => res.write(': ping\n\n'), 15000);
    req.on('close', () => {
      clearInterval(ping);
      w.clients.delete(res);
      if (w.clients.size === 0 && w.timer) {
        clearInterval(w.timer);
        w.timer = null;
      }
    });
  }

  function index(res: http.ServerResponse): void {
    const runs = listRuns(opts.root);
    const items = runs.map((r) => `<li><a href="/run/${esc(r.run_id)}/">${esc(r.run_id)}</a> <span class="note">${esc(r.updated ?? '')}</span></li>`).join('');
    const body = `<h1>tailguard runs</h1>${runs.length ? `<ul id="runs">${items}</ul>` : '<p class="note">no runs yet (this page refreshes)</p>'}`;
    html(res, page({ title: 'tailguard runs', body }).replace('<head>', runs.length ? '<head>' : '<head><meta http-equiv="refresh" content="2">'));
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 7860, host, () => resolve());
  });
  port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
  opts.log?.info({ url }, 'dashboard listening');
  return {
    url,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const w of watches.values()) {
          if (w.timer) clearInterval(w.timer);
          for (const c of w.clients) c.end();
        }
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function listRuns(root: string): { run_id: string; updated: string | null }[] {
  let names: string[] = [];
  try {
    names = fs.readdirSync(root).filter((n) => RUN_ID_RE.test(n) && fs.statSync(path.join(root, n)).isDirectory());
  } catch {
    return [];
  }
  return names.sort().map((run_id) => {
    let updated: string | null = null;
    try {
      updated = fs.statSync(path.join(root, run_id, 'steps.jsonl')).mtime.toISOString();
    } catch {}
    return { run_id, updated };
  });
}

function html(res: http.ServerResponse, body: string): void {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(body);
}

function json(res: http.ServerResponse, obj: unknown): void {
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(obj));
}
