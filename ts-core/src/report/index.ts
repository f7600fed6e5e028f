// Self-contained HTML report of a run directory.
import { readRun, type RunData } from '../store/index.ts';
import { page } from './html.ts';
import { renderRun } from './views.ts';

export { renderRun, type Rendered } from './views.ts';
export { page } from './html.ts';
export { story, type Story } from './story.ts';

export function reportHtml(run: RunData): string {
  const { html } = renderRun(run);
  return page({ title: `tailguard report · ${run.meta?.run_id ?? run.dir}`, body: html, generated: new Date().toISOString() });
}

export function reportFromDir(dir: string): { html: string; run: RunData } {
  const run = readRun(dir);
  return { html: reportHtml(run), run };
}
