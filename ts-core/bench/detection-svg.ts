// Two small hand-written SVG plots for docs/detection.md (no plotting dependency).

const COLORS = ['#d62728', '#ff7f0e', '#2ca02c', '#1f77b4', '#9467bd', '#8c564b', '#7f7f7f', '#e377c2'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

export interface Line {
  name: string;
  /** y = null: no alarm within the horizon (drawn at the top, hollow). */
  points: { x: number; y: number | null }[];
  dashed?: boolean;
}

/** Delay (steps after onset) against growth rate, log x. */
export function delayPlot(title: string, xLabel: string, lines: Line[], yMax: number): string {
  const W = 720, H = 420, L = 60, R = 250, T = 36, B = 50;
  const xs = [...new Set(lines.flatMap((l) => l.points.map((p) => p.x)))].sort((a, b) => a - b);
  const lx = (x: number) => L + ((Math.log(x) - Math.log(xs[0])) / (Math.log(xs[xs.length - 1]) - Math.log(xs[0]) || 1)) * (W - L - R);
  const ly = (y: number) => T + (1 - Math.min(y, yMax) / yMax) * (H - T - B);
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  out.push(`<text x="${L}" y="20" font-size="14">${esc(title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const y = (yMax * i) / 5;
    out.push(`<line x1="${L}" x2="${W - R}" y1="${ly(y)}" y2="${ly(y)}" stroke="#ddd"/><text x="${L - 6}" y="${ly(y) + 4}" text-anchor="end">${Math.round(y)}</text>`);
  }
  for (const x of xs) out.push(`<line x1="${lx(x)}" x2="${lx(x)}" y1="${T}" y2="${H - B}" stroke="#eee"/><text x="${lx(x)}" y="${H - B + 16}" text-anchor="middle">${x}</text>`);
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 10}" text-anchor="middle">${esc(xLabel)}</text>`);
  out.push(`<text x="14" y="${(T + H - B) / 2}" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">steps from onset to alarm (median over seeds)</text>`);
  lines.forEach((l, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = l.points.map((p) => [lx(p.x), ly(p.y ?? yMax), p.y === null] as const);
    out.push(`<polyline fill="none" stroke="${c}" stroke-width="2"${l.dashed ? ' stroke-dasharray="5,4"' : ''} points="${pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`);
    for (const [x, y, none] of pts) out.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="${none ? 'white' : c}" stroke="${c}"/>`);
    out.push(`<line x1="${W - R + 14}" x2="${W - R + 40}" y1="${T + 8 + i * 20}" y2="${T + 8 + i * 20}" stroke="${c}" stroke-width="2"${l.dashed ? ' stroke-dasharray="5,4"' : ''}/><text x="${W - R + 46}" y="${T + 12 + i * 20}">${esc(l.name)}</text>`);
  });
  out.push(`<text x="${W - R + 14}" y="${T + 12 + lines.length * 20 + 10}" fill="#555">hollow at top: no alarm ≤ ${yMax}</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Grouped bars: false alarms per 1000 steps per stream family. */
export function barPlot(title: string, groups: string[], series: { name: string; values: number[] }[]): string {
  const W = 720, H = 380, L = 60, R = 250, T = 36, B = 60;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const gw = (W - L - R) / groups.length;
  const bw = (gw * 0.8) / series.length;
  const ly = (y: number) => T + (1 - y / max) * (H - T - B);
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  out.push(`<text x="${L}" y="20" font-size="14">${esc(title)}</text>`);
  for (let i = 0; i <= 4; i++) {
    const y = (max * i) / 4;
    out.push(`<line x1="${L}" x2="${W - R}" y1="${ly(y)}" y2="${ly(y)}" stroke="#ddd"/><text x="${L - 6}" y="${ly(y) + 4}" text-anchor="end">${y.toFixed(1)}</text>`);
  }
  groups.forEach((g, gi) => {
    out.push(`<text x="${L + gi * gw + gw / 2}" y="${H - B + 16}" text-anchor="middle">${esc(g)}</text>`);
    series.forEach((s, si) => {
      const v = s.values[gi];
      const x = L + gi * gw + gw * 0.1 + si * bw;
      out.push(`<rect x="${x.toFixed(1)}" y="${ly(v).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${(ly(0) - ly(v)).toFixed(1)}" fill="${COLORS[si % COLORS.length]}"/>`);
    });
  });
  out.push(`<text x="14" y="${(T + H - B) / 2}" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">alarms per 1000 steps</text>`);
  series.forEach((s, i) => out.push(`<rect x="${W - R + 14}" y="${T + i * 20}" width="14" height="12" fill="${COLORS[i % COLORS.length]}"/><text x="${W - R + 34}" y="${T + 10 + i * 20}">${esc(s.name)}</text>`));
  out.push('</svg>');
  return out.join('\n') + '\n';
}
