// The event lane of a section: detector episodes as shaded bands (one sub-row per detector), directives and
// checkpoints as glyphs. Colour (Okabe-Ito, colour-blind safe, from CSS classes) plus a distinct shape per
// severity and per action, so nothing depends on telling red from green. Every event is an <a> (Tab
// reaches it, its <title> is its accessible name; Enter highlights its step on every chart). Evidence is not repeated here: it is in the table.
import type { AuditEntry } from '../store/index.ts';
import { esc, fmt } from './svg.ts';
import type { DirectiveRow, Episode } from './story.ts';

export type Shape = 'circle' | 'tri' | 'diamond' | 'square' | 'down' | 'back' | 'cross' | 'bar' | 'ring' | 'tick';

export const SEVERITY_SHAPE: Record<string, Shape> = { info: 'circle', warn: 'tri', high: 'diamond', critical: 'square' };
export const ACTION_SHAPE: Record<string, Shape> = { warn: 'ring', tighten: 'down', rollback: 'back', stop: 'cross', curriculum: 'bar' };

export function glyph(shape: Shape, x: number, y: number, r: number, cls: string): string {
  const f = (v: number) => v.toFixed(1);
  switch (shape) {
    case 'circle': return `<circle class="${cls}" cx="${f(x)}" cy="${f(y)}" r="${r * 0.8}"/>`;
    case 'ring': return `<circle class="${cls} ring" cx="${f(x)}" cy="${f(y)}" r="${r * 0.8}"/>`;
    case 'tri': return `<path class="${cls}" d="M${f(x)},${f(y - r)}L${f(x + r)},${f(y + r * 0.8)}L${f(x - r)},${f(y + r * 0.8)}Z"/>`;
    case 'down': return `<path class="${cls}" d="M${f(x - r)},${f(y - r * 0.8)}L${f(x + r)},${f(y - r * 0.8)}L${f(x)},${f(y + r)}Z"/>`;
    case 'diamond': return `<path class="${cls}" d="M${f(x)},${f(y - r)}L${f(x + r)},${f(y)}L${f(x)},${f(y + r)}L${f(x - r)},${f(y)}Z"/>`;
    case 'square': return `<rect class="${cls}" x="${f(x - r * 0.8)}" y="${f(y - r * 0.8)}" width="${f(r * 1.6)}" height="${f(r * 1.6)}"/>`;
    case 'back': return `<path class="${cls}" d="M${f(x + r)},${f(y - r)}L${f(x - r)},${f(y)}L${f(x + r)},${f(y + r)}Z"/>`;
    case 'cross': return `<path class="${cls} cross" d="M${f(x - r)},${f(y - r)}L${f(x + r)},${f(y + r)}M${f(x + r)},${f(y - r)}L${f(x - r)},${f(y + r)}"/>`;
    case 'bar': return `<rect class="${cls}" x="${f(x - r)}" y="${f(y - r * 0.4)}" width="${f(r * 2)}" height="${f(r * 0.8)}"/>`;
    case 'tick': return `<path class="${cls} tickmark" d="M${f(x)},${f(y - r)}L${f(x)},${f(y + r)}"/>`;
  }
}

const L = 110, R = 10; // room for the detector names

export function laneChart(o: { id: string; title: string; episodes: Episode[]; directives: DirectiveRow[]; checkpoints: Extract<AuditEntry, { kind: 'checkpoint' }>[]; xDomain: [number, number]; width?: number }): string {
  const W = o.width ?? 852;
  const detectors = [...new Set(o.episodes.map((e) => e.detector))];
  const rowH = 14, top = 18;
  const dirY = top + detectors.length * rowH + 8, ckY = dirY + 16;
  const H = ckY + 14;
  const [x0, x1] = o.xDomain;
  const sx = (x: number) => L + (x1 > x0 ? ((x - x0) / (x1 - x0)) * (W - L - R) : 0);
  const parts: string[] = [`<text class="ctitle" x="${L}" y="12">${esc(o.title)}</text>`];
  detectors.forEach((d, i) => parts.push(`<text class="tick" x="${L - 4}" y="${top + i * rowH + 10}" text-anchor="end">${esc(d.replace(/_/g, ' ').slice(0, 22))}</text>`));
  for (const e of o.episodes) {
    const y = top + detectors.indexOf(e.detector) * rowH;
    const a = sx(e.first), b = Math.max(a + 2, sx(e.cleared ?? e.last));
    const where = [e.pair, e.slice, e.rank !== undefined ? `rank ${e.rank}` : ''].filter(Boolean).join('/');
    const label = `${e.detector} ${e.peak} episode, steps ${e.first}–${e.cleared ?? e.last}${where ? ` on ${where}` : ''}, peak at step ${e.peakStep}, ${e.count} finding(s)`;
    parts.push(`<a class="ev" href="#step-${e.first}" data-step="${e.first}"><title>${esc(label)}</title><rect class="band sev-${esc(e.peak)}" x="${a.toFixed(1)}" y="${top + (detectors.indexOf(e.detector)) * rowH + 1}" width="${(b - a).toFixed(1)}" height="${rowH - 2}"/>${glyph(SEVERITY_SHAPE[e.peak] ?? 'circle', a, y + rowH / 2, 5, `g sev-${esc(e.peak)}`)}</a>`);
  }
  parts.push(`<text class="tick" x="${L - 4}" y="${dirY + 3}" text-anchor="end">directives</text>`);
  for (const d of o.directives) {
    const x = sx(d.step);
    const label = `directive ${d.action} at step ${d.step} (apply at ${d.apply_at_step}): ${d.params}; ${d.outcome}${d.refused ? ` (${d.refused})` : ''}`;
    const tag = d.action === 'rollback' && d.target ? `<text class="evlabel" x="${(x + 8).toFixed(1)}" y="${dirY + 3}">↺ ${d.target.step}</text>` : '';
    parts.push(`<a class="ev" href="#step-${d.step}" data-step="${d.step}"><title>${esc(label)}</title>${glyph(ACTION_SHAPE[d.action] ?? 'circle', x, dirY, 6, `g act-${esc(d.action)}`)}${tag}</a>`);
  }
  parts.push(`<g class="ckpt"><text class="tick" x="${L - 4}" y="${ckY + 3}" text-anchor="end">checkpoints</text>`);
  for (const c of o.checkpoints) {
    const x = sx(c.step);
    parts.push(`<a class="ev" href="#step-${c.step}" data-step="${c.step}" aria-label="checkpoint step ${c.step} ${c.certified ? 'certified' : esc(String((c as { status?: string }).status ?? ''))}">${glyph('tick', x, ckY, 5, `g ck-${c.certified ? 'ok' : 'no'}`)}</a>`);
  }
  parts.push('</g>');
  const desc = `${o.episodes.length} episode(s), ${o.directives.length} directive(s) between steps ${fmt(x0)} and ${fmt(x1)}`;
  return `<svg xmlns="http://www.w3.org/2000/svg" class="chart lane" id="${esc(o.id)}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="group" aria-label="${esc(`${o.title}: ${desc}`)}" data-box="${L},${W - R},${top},${H - 4}" data-xd="${x0},${x1}"><desc>${esc(desc)}</desc>${parts.join('')}</svg>`;
}

/** The legend: one entry per severity and per action, with its shape and colour class. */
export function legend(): string {
  const items: [Shape, string, string][] = [
    ...Object.entries(SEVERITY_SHAPE).map(([s, sh]) => [sh, `g sev-${s}`, `finding ${s}`] as [Shape, string, string]),
    ...Object.entries(ACTION_SHAPE).map(([a, sh]) => [sh, `g act-${a}`, a] as [Shape, string, string]),
    ['tick', 'g ck-ok', 'certified checkpoint'],
  ];
  const per = 118;
  const body = items.map(([sh, cls, label], i) => `<g>${glyph(sh, 10 + i * per, 10, 5, cls)}<text class="tick" x="${20 + i * per}" y="13">${esc(label)}</text></g>`).join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" class="legendbar" width="${items.length * per}" height="20" role="img" aria-label="legend: shaded bands are detector episodes; shapes: ${items.map((i) => `${i[2]} ${i[0]}`).join(', ')}">${body}</svg>`;
}
