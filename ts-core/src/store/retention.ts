// Retention of run directories (docs/reliability.md, "Bounded resources"): `--retain-runs N` keeps the N
// most recently updated runs, `--retain-days D` removes runs not updated for D days. A run that is open
// (here or in another live engine: engine.lock) is never removed. Off unless one of them is given.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FILES, RUN_ID_RE } from './index.ts';

export interface Retention {
  /** Keep at most this many run directories (0 or absent: no count limit). */
  runs?: number;
  /** Remove run directories whose last update is older than this many days. */
  days?: number;
}

/** Apply `r` under `root`; returns the run ids removed. `open`: run ids this engine has open. */
export function applyRetention(root: string, r: Retention, open: ReadonlySet<string>, now = Date.now()): string[] {
  if (!r.runs && !r.days) return [];
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return [];
  }
  const runs: { id: string; dir: string; updated: number }[] = [];
  for (const id of names) {
    if (!RUN_ID_RE.test(id)) continue;
    const dir = path.join(root, id);
    try {
      const st = fs.statSync(path.join(dir, FILES.run)); // only run directories (a run.json) are candidates
      const steps = statOr(path.join(dir, FILES.steps));
      runs.push({ id, dir, updated: Math.max(st.mtimeMs, steps) });
    } catch {
      continue;
    }
  }
  runs.sort((a, b) => b.updated - a.updated);
  const removed: string[] = [];
  runs.forEach((run, i) => {
    const tooMany = !!r.runs && i >= r.runs;
    const tooOld = !!r.days && now - run.updated > r.days * 86_400_000;
    if (!(tooMany || tooOld) || open.has(run.id) || locked(run.dir)) return;
    fs.rmSync(run.dir, { recursive: true, force: true });
    removed.push(run.id);
  });
  return removed;
}

function statOr(file: string): number {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return 0;
  }
}

function locked(dir: string): boolean {
  try {
    const pid = Number(fs.readFileSync(path.join(dir, FILES.lock), 'utf8'));
    if (!Number.isInteger(pid) || pid <= 0) return false;
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
