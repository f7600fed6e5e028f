// The HTML page around the rendered views: inline CSS, no external resources, so the report is one
// self-contained file. The live dashboard adds a small inline script (EventSource) to the same page.
import { esc } from './svg.ts';

export const CSS = `
:root{color-scheme:light;font:13px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222;background:#fafafa}
body{margin:0 auto;max-width:1760px;padding:12px 20px}
h1{font-size:20px;margin:4px 0}h2{font-size:16px;margin:18px 0 6px;border-bottom:1px solid #ddd;padding-bottom:2px}
header dl{display:flex;flex-wrap:wrap;gap:4px 18px;margin:4px 0}header dt{color:#777}header dd{margin:0 0 0 -12px;font-weight:600}
.row{display:flex;flex-wrap:wrap;gap:8px}
svg.chart{background:#fff;border:1px solid #e3e3e3;border-radius:4px}
svg .plot{fill:#fff}svg .grid{stroke:#eee}svg .tick,svg .axis,svg .legend text,svg .ramp text{font-size:9px;fill:#666}
svg .ctitle{font-size:11px;font-weight:600;fill:#333}svg .empty{fill:#aaa;font-size:11px}
svg .marker line{stroke-width:1;stroke-dasharray:2 2;opacity:.75}svg .marker:hover line{stroke-width:3;opacity:1}
svg .series:hover{stroke-width:3}
.note{color:#777;font-weight:normal;font-size:12px}.warn{color:#8a5a00;background:#fff6db;padding:3px 8px;border-radius:3px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}td,th{border:1px solid #e3e3e3;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr.directive td{background:#fff3e6}tr.finding td:nth-child(3){color:#8a5a00}
#live{position:fixed;top:8px;right:16px;font-size:12px;padding:2px 8px;border-radius:10px;background:#ddd}
#live.on{background:#c8f0c8}#live.off{background:#f6c8c8}
`;

const LIVE_SCRIPT = `
const main = document.getElementById('main');
const badge = document.getElementById('live');
let updates = 0;
function connect() {
  const es = new EventSource(location.pathname.replace(/\\/?$/, '/events'));
  es.addEventListener('render', (ev) => {
    const msg = JSON.parse(ev.data);
    main.innerHTML = msg.html;
    updates++;
    document.body.dataset.updates = String(updates);
    document.body.dataset.lastStep = msg.lastStep == null ? '' : String(msg.lastStep);
    badge.textContent = 'live · step ' + (msg.lastStep ?? '–');
    badge.className = 'on';
  });
  es.onerror = () => { badge.textContent = 'reconnecting…'; badge.className = 'off'; };
}
connect();
`;

export function page(o: { title: string; body: string; live?: boolean; generated?: string }): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(o.title)}</title><style>${CSS}</style></head>
<body data-updates="0">
${o.live ? '<div id="live">connecting…</div>' : ''}
<main id="main">${o.body}</main>
<footer class="note">${o.generated ? `generated ${esc(o.generated)} by tailguard` : ''}</footer>
${o.live ? `<script>${LIVE_SCRIPT}</script>` : ''}
</body></html>
`;
}
