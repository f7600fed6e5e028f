// Live dashboard: node:http + server-sent events over the run store root. It follows each run
// directory as the engine appends to it, renders the same views as the HTML report, and pushes the
// re-rendered body to every open page. Loopback by default.
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { page, renderRun, reportHtml } from '../report/index.ts';
import { esc } from '../report/svg.ts';
import { RUN_ID_RE } from '../store/index.ts';
import { RunTail } from './tail.ts';

export interface UiOptions {
  /** Root of the run stores (the engine's --run-dir). */
  root: string;
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  /** How often open runs are checked for new lines. */
  pollMs?: number;
  log?: { info: (o: object, msg: string) => void; warn: (o: object, msg: string) => void };
}

export interface UiServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

interface Watch {
  tail: RunTail;
  clients: Set<http.ServerResponse>;
  timer: NodeJS.Timeout | null;
  last: string | null; // last SSE payload, sent to new clients at once
}

export async function startUi(opts: UiOptions): Promise<UiServer> {
  const host = opts.host ?? '127.0.0.1';
  const pollMs = opts.pollMs ?? 500;
  const watches = new Map<string, Watch>();

  function render(w: Watch): string {
    const { html, lastStep } = renderRun(w.tail.data);
    return `event: render\ndata: ${JSON.stringify({ html, lastStep })}\n\n`;
  }

  function watch(runId: string): Watch {
    let w = watches.get(runId);
    if (!w) {
      w = { tail: new RunTail(path.join(opts.root, runId)), clients: new Set(), timer: null, last: null };
      watches.set(runId, w);
    }
    return w;
  }

  function tick(w: Watch): void {
    try {
      if (!w.tail.refresh() && w.last) return;
      w.last = render(w);
      for (const c of w.clients) c.write(w.last);
    } catch (e) {
      opts.log?.warn({ err: String(e), dir: w.tail.dir }, 'dashboard render failed');
    }
  }

  const server = http.createServer((req, res) => {
    try {
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
      w.tail.refresh();
      const body = renderRun(w.tail.data).html;
      return html(res, page({ title: `tailguard · ${runId}`, body, live: true }));
    }
    if (parts[2] === 'events') return events(runId, req, res);
    if (parts[2] === 'report.html') return html(res, reportHtml(watch(runId).tail.data));
    res.writeHead(404).end('not found');
  }

  function events(runId: string, req: http.IncomingMessage, res: http.ServerResponse): void {
    const w = watch(runId);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.write('retry: 1000\n\n');
    tick(w); // brings w.last up to date (and pushes it to the pages already open)
    w.clients.add(res);
    if (w.last) res.write(w.last);
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
  const port = (server.address() as AddressInfo).port;
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
