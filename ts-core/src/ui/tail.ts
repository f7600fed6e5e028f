// Follows a run directory while the engine writes it: reads only the bytes appended since the last
// refresh, and only whole lines (a line being written is picked up next time).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FILES, LOGS, type LogName, type RunData } from '../store/index.ts';

export class RunTail {
  private offsets: Record<LogName, number> = { metrics: 0, windows: 0, directives: 0, steps: 0 };
  private metaMtime = 0;
  readonly data: RunData;

  constructor(readonly dir: string) {
    const empty = () => ({ records: [] as never[], torn: null, bad: [] });
    this.data = { dir, meta: null, metrics: empty(), windows: empty(), directives: empty(), steps: empty(), state: null };
  }

  /** Pull in what was appended; true when anything changed. */
  refresh(): boolean {
    let changed = false;
    for (const name of LOGS) changed = this.readNew(name) || changed;
    const runFile = path.join(this.dir, FILES.run);
    try {
      const st = fs.statSync(runFile);
      if (st.mtimeMs !== this.metaMtime) {
        this.data.meta = JSON.parse(fs.readFileSync(runFile, 'utf8'));
        this.metaMtime = st.mtimeMs;
        changed = true;
      }
    } catch {
      // run.json not written yet, or replaced mid-read: next refresh.
    }
    return changed;
  }

  private readNew(name: LogName): boolean {
    const file = path.join(this.dir, FILES[name]);
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      return false;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < this.offsets[name]) {
        // Truncated (a torn tail cut on engine restart): start over for this file.
        this.offsets[name] = 0;
        this.data[name].records.length = 0;
      }
      if (size === this.offsets[name]) return false;
      const buf = Buffer.alloc(size - this.offsets[name]);
      fs.readSync(fd, buf, 0, buf.length, this.offsets[name]);
      const end = buf.lastIndexOf(0x0a) + 1;
      if (end === 0) return false;
      const recs = this.data[name].records as unknown[];
      for (const line of buf.subarray(0, end).toString('utf8').split('\n')) {
        if (!line.trim()) continue;
        try {
          recs.push(JSON.parse(line));
        } catch {
          this.data[name].bad.push({ line: -1, error: 'unparsable line' });
        }
      }
      this.offsets[name] += end;
      return true;
    } finally {
      fs.closeSync(fd);
    }
  }
}
