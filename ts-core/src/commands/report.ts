// `tailguard report RUN_DIR [-o FILE.html]`
import * as fs from 'node:fs';
import * as path from 'node:path';
import { reportFromDir } from '../report/index.ts';
import { runWarnings } from '../store/index.ts';

export async function report(runDir: string, opts: { out?: string }): Promise<void> {
  if (!fs.existsSync(path.join(runDir, 'metrics.jsonl')) && !fs.existsSync(path.join(runDir, 'run.json'))) {
    process.stderr.write(`tailguard report: ${runDir} is not a run directory (no run.json or metrics.jsonl)\n`);
    process.exitCode = 2;
    return;
  }
  const { html, run } = reportFromDir(runDir);
  for (const w of runWarnings(run)) process.stderr.write(`warning: ${w}\n`);
  const out = opts.out ?? path.join(runDir, 'report.html');
  fs.writeFileSync(out, html);
  const steps = run.steps.records.length;
  process.stdout.write(`wrote ${out} (${steps} steps, ${run.windows.records.length} windows, ${(html.length / 1024).toFixed(0)} KiB)\n`);
}
