// Generated sections of docs/benchmarks.md: each benchmark that writes figures owns the text between
// `<!-- generated:NAME -->` and `<!-- /generated:NAME -->` and replaces only that, so hand-written
// sections and other generators' sections (e.g. the live page's) stay as they are. A missing section is
// appended at the end. Every section carries the commit and the load average of the run that wrote it.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';

export const BENCH_DOC = join(import.meta.dirname, '..', '..', 'docs', 'benchmarks.md');

/** Short commit id of the tree being measured, `+dirty` with uncommitted changes (the generated doc itself aside). */
export function commitId(): string {
  try {
    const root = join(import.meta.dirname, '..', '..');
    const id = execFileSync('git', ['-C', root, 'rev-parse', '--short=10', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no', '--', '.', ':!docs/benchmarks.md'], { encoding: 'utf8' }).trim() !== '';
    return dirty ? `${id}+dirty` : id;
  } catch {
    return 'unknown';
  }
}

export const loadAvg = (): string => loadavg().map((v) => v.toFixed(2)).join(' ');

/** Replace (or append) the generated section `name` of `file` with `body` (markdown, no markers). */
export function writeSection(name: string, body: string, file = BENCH_DOC): void {
  const open = `<!-- generated:${name} -->`, close = `<!-- /generated:${name} -->`;
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const block = `${open}\n${body.trim()}\n${close}`;
  const a = text.indexOf(open), b = text.indexOf(close);
  const out = a >= 0 && b > a ? text.slice(0, a) + block + text.slice(b + close.length) : `${text.trimEnd()}\n\n${block}\n`;
  writeFileSync(file, out);
}

/** One line for a generated section: commit, node, CPUs, load average at the start and now, date. */
export function runLine(loadAtStart: string): string {
  const day = new Date().toISOString().slice(0, 10);
  return `Commit \`${commitId()}\`, Node ${process.version}, ${availableParallelism()} CPUs, load average ${loadAtStart} at the start and ${loadAvg()} at the end, ${day}.`;
}
