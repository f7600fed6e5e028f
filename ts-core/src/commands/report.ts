// `tailguard report RUN_DIR [-o FILE.html]`, or `tailguard report A B` (two runs overlaid).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { compareHtml } from '../report/compare.ts';
import { reportFromDir } from '../report/index.ts';
import { readRun, runWarnings } from '../store/index.ts';

function isRunDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'metrics.jsonl')) || fs.existsSync(path.join(dir, 'run.json'));
}

export async function report(runDir: string, other: string | undefined, opts: { out?: string }): Promise<void> {
  for (const d of [runDir, other]) {
    if (d !== undefined && !isRunDir(d)) {
      process.stderr.write(`tailguard report: ${d} is not a run directory (no run.json or metrics.jsonl)\n`);
      process.exitCode = 2;
      return;
    }
  }
  if (other !== undefined) {
    const a = readRun(runDir), b = readRun(other);
    for (const w of [...runWarnings(a), ...runWarnings(b)]) process.stderr.write(`warning: ${w}\n`);
    const html = compareHtml(a, b);
    const out = opts.out ?? path.join(path.dirname(path.resolve(runDir)), `compare-${path.basename(runDir)}-${path.basename(other)}.html`);
    fs.writeFileSync(out, html);
    process.stdout.write(`wrote ${out} (${a.steps.records.length} vs ${b.steps.records.length} steps, ${(html.length / 1024).toFixed(0)} KiB)\n`);
    return;
  }
  const { html, run } = reportFromDir(runDir);
  for (const w of runWarnings(run)) process.stderr.write(`warning: ${w}\n`);
  const out = opts.out ?? path.join(runDir, 'report.html');
  fs.writeFileSync(out, html);
  const steps = run.steps.records.length;
  process.stdout.write(`wrote ${out} (${steps} steps, ${run.windows.records.length} windows, ${(html.length / 1024).toFixed(0)} KiB)\n`);
}
