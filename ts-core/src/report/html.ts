// The HTML page around the rendered views: inline CSS and script, no external resources, so the report is
// one self-contained file. The live page adds a small SSE script. Colours: Okabe-Ito; dark mode follows the
// system unless the toolbar overrides it.
import { LIVE_SCRIPT, PAGE_SCRIPT } from './script.ts';
import { esc } from './svg.ts';

const LIGHT = '--bg:#fafafa;--fg:#222;--muted:#666;--panel:#fff;--line:#e3e3e3;--grid:#eee;--th:#f0f0f0;--hl:#000';
const DARK = '--bg:#15171a;--fg:#e6e6e6;--muted:#a0a0a0;--panel:#1e2125;--line:#3a3e44;--grid:#2c3036;--th:#262a30;--hl:#fff';

export const CSS = `
:root{${LIGHT};color-scheme:light;font:13px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif}
@media (prefers-color-scheme:dark){:root:not(.light){${DARK};color-scheme:dark}}
:root.dark{${DARK};color-scheme:dark}
body{margin:0 auto;max-width:1760px;padding:12px 20px;color:var(--fg);background:var(--bg)}
a{color:inherit}h1{font-size:20px;margin:4px 0}h2{font-size:16px;margin:18px 0 6px;border-bottom:1px solid var(--line);padding-bottom:2px}
header dl{display:flex;flex-wrap:wrap;gap:4px 18px;margin:4px 0}header dt{color:var(--muted)}header dd{margin:0 0 0 -12px;font-weight:600}
.row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
svg.chart{background:var(--panel);border:1px solid var(--line);border-radius:4px}
svg .plot{fill:var(--panel)}svg .grid{stroke:var(--grid)}svg .tick,svg .axis,svg .legend text,svg .ramp text,svg .evlabel,.legendbar text{font-size:9px;fill:var(--muted)}
svg .evlabel{font-weight:600;fill:var(--fg)}svg .ctitle{font-size:11px;font-weight:600;fill:var(--fg)}svg .empty{fill:var(--muted);font-size:11px}
svg .band{opacity:.16}svg .band.sev-warn{fill:#E69F00}svg .band.sev-high{fill:#D55E00;opacity:.22}svg .band.sev-critical{fill:#000;opacity:.28}svg .band.sev-info{fill:#999}
.lane .band{opacity:.35}.lane .band.sev-high{opacity:.45}
.g{stroke:var(--panel);stroke-width:.8}.sev-info.g{fill:#999}.sev-warn.g{fill:#E69F00}.sev-high.g{fill:#D55E00}.sev-critical.g{fill:var(--fg)}
.act-warn.g{fill:none;stroke:#E69F00;stroke-width:2}.act-tighten.g{fill:#0072B2}.act-rollback.g{fill:#CC79A7}.act-stop.g{stroke:var(--fg);stroke-width:2.5}.act-curriculum.g{fill:#56B4E9}
.g.cross{fill:none}.g.tickmark{stroke-width:2}.ck-ok.g{stroke:#009E73}.ck-no.g{stroke:#999}
.lane .ckpt{display:none}:root.show-ckpt .lane .ckpt{display:inline}
svg a.ev{cursor:pointer}svg a.ev:focus{outline:2px solid var(--hl)}svg a.ev:focus .g,svg a.ev:hover .g{stroke:var(--hl);stroke-width:1.5}
svg .hl{stroke:var(--hl);stroke-width:1.5;stroke-dasharray:3 2}
svg.smoothed path.series{opacity:.25}
.note{color:var(--muted);font-weight:normal;font-size:12px}.warn{color:#8a5a00;background:#fff6db;padding:3px 8px;border-radius:3px}
#defs{max-width:1100px}.verdict{font-size:15px;font-weight:600;margin:4px 0 8px;padding:6px 10px;border-left:4px solid #CC79A7;background:var(--panel)}
table{border-collapse:collapse;font-size:12px;margin:6px 0;background:var(--panel)}td,th{border:1px solid var(--line);padding:2px 6px;text-align:left;vertical-align:top}
caption{text-align:left;font-weight:600;padding:2px 0}th{background:var(--th)}
.sev{padding:0 4px;border-radius:3px;font-weight:600}.sev.sev-warn{background:#E69F0033}.sev.sev-high{background:#D55E0040}.sev.sev-critical{background:#0006;color:#fff}
.outcome.ok{color:#00734f;font-weight:600}.outcome.bad{color:#b00020;font-weight:600}.outcome.part{color:#8a5a00;font-weight:600}
tr.k-directive td{background:#CC79A71a}tr.hlrow td{outline:2px solid var(--hl)}
#audit tr.k-checkpoint,#audit tr.k-ack{color:var(--muted)}#audit code{font-size:11px;word-break:break-all}#audit details summary{cursor:pointer;color:var(--muted)}
.toptok{margin:2px 0 0 16px;padding:0}
.fig{position:relative;display:inline-block}.figtools{position:absolute;right:4px;bottom:4px;display:none;gap:2px}.fig:hover .figtools,.fig:focus-within .figtools{display:flex}
.figtools button{font-size:9px;padding:0 3px}
#toolbar{position:sticky;top:0;background:var(--bg);padding:4px 0;z-index:1}#toolbar label{margin-right:12px}
#live{position:fixed;top:8px;right:16px;font-size:12px;padding:2px 8px;border-radius:10px;background:#ddd;color:#222;z-index:2}
#live.live{background:#c8f0c8}#live.idle{background:#f5e6b8}#live.finished{background:#c8dcf0}#live.off{background:#f6c8c8}
`;

export function page(o: { title: string; body: string; live?: boolean; generated?: string }): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(o.title)}</title><style>${CSS}</style></head>
<body data-updates="0">
${o.live ? '<div id="live" role="status" aria-live="polite">connecting…</div>' : ''}
<main id="main">${o.body}</main>
<footer class="note">${o.generated ? `generated ${esc(o.generated)} by tailguard` : ''}</footer>
<script>${PAGE_SCRIPT}</script>
${o.live ? `<script>${LIVE_SCRIPT}</script>` : ''}
</body></html>
`;
}
