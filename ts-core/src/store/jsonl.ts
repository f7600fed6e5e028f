// JSON Lines with crash tolerance. Writers never emit NaN/Infinity literals (JSON.stringify turns
// non-finite numbers into null), so `pd.read_json(path, lines=True)` always parses the files.
// Readers tolerate a torn last line (a crash mid-append) and report it instead of throwing.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** One JSON line. Non-finite numbers become null (documented in docs/observability.md). */
export function toJsonLine(obj: unknown): string {
  return JSON.stringify(obj, (_k, v) => (typeof v === 'bigint' ? Number(v) : v)) + '\n';
}

export interface TornLine {
  /** Byte offset where the incomplete last line starts. */
  offset: number;
  bytes: number;
  /** First 200 characters of the fragment, for the log. */
  preview: string;
}

export interface BadLine {
  line: number; // 1-based
  error: string;
}

export interface JsonlRead<T> {
  records: T[];
  /** Set when the file does not end in a newline: the last line was torn by a crash. */
  torn: TornLine | null;
  /** Complete lines that did not parse (skipped). Expected to be empty. */
  bad: BadLine[];
}

/** Read a JSONL file; a missing file reads as empty. Never throws on content. */
export function readJsonl<T = Record<string, unknown>>(file: string): JsonlRead<T> {
  const buf = readIfExists(file);
  return buf ? parseJsonl<T>(buf) : { records: [], torn: null, bad: [] };
}

/** A file's bytes; null when it does not exist (other errors throw). */
export function readIfExists(file: string): Buffer | null {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/** The bytes after the last newline, if any: a line torn by a crash mid-append. */
function tornTail(buf: Buffer): TornLine | null {
  const end = buf.lastIndexOf(0x0a) + 1;
  if (end === buf.length) return null;
  return { offset: end, bytes: buf.length - end, preview: buf.subarray(end).toString('utf8').slice(0, 200) };
}

export function parseJsonl<T>(buf: Buffer): JsonlRead<T> {
  const records: T[] = [];
  const bad: BadLine[] = [];
  const torn = tornTail(buf);
  const end = torn?.offset ?? buf.length; // bytes up to and including the last newline
  const lines = buf.subarray(0, end).toString('utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === '') continue;
    try {
      records.push(JSON.parse(line) as T);
    } catch (e) {
      bad.push({ line: i + 1, error: (e as Error).message });
    }
  }
  return { records, torn, bad };
}

/**
 * Fault injection for tests (docs/reliability.md, fault table): called before each write / fsync of a
 * store file. Return an Error to fail the call; `{ partial: n, error }` on a write first writes n bytes
 * (a short write on a full disk), then fails. Production code never sets it.
 */
export const storeFaults: { hook: ((op: 'write' | 'fsync', file: string, bytes: number) => Error | { partial: number; error: Error } | null) | null } = { hook: null };

/**
 * An append-only JSONL file. Lines are written with one write() each; `sync()` fsyncs. The appender keeps
 * the offset of the last commit (`markCommitted`): after any failed write or fsync, `rollback()` truncates
 * the file back to it, so a line is never appended after a partial one and nothing uncommitted stays.
 */
export class JsonlAppender {
  private fd: number;
  private dirty = false;
  /** Bytes written so far (always a line boundary after a successful append). */
  private end: number;
  /** Offset of the last successful commit. */
  private committed: number;

  constructor(
    readonly file: string,
    private readonly durable = true,
  ) {
    this.fd = fs.openSync(file, 'a');
    this.end = this.committed = fs.fstatSync(this.fd).size;
  }

  append(records: readonly unknown[]): void {
    if (records.length === 0) return;
    let s = '';
    for (const r of records) s += toJsonLine(r);
    const buf = Buffer.from(s, 'utf8');
    const fault = storeFaults.hook?.('write', this.file, buf.length) ?? null;
    if (fault && 'partial' in fault) fs.writeSync(this.fd, buf, 0, Math.min(fault.partial, buf.length));
    if (fault) throw 'partial' in fault ? fault.error : fault;
    let at = 0;
    while (at < buf.length) at += fs.writeSync(this.fd, buf, at, buf.length - at); // a short write goes on, or throws
    this.end += buf.length;
    this.dirty = true;
  }

  sync(): void {
    if (!this.dirty) return;
    const fault = storeFaults.hook?.('fsync', this.file, 0) ?? null;
    if (fault) throw 'partial' in fault ? fault.error : fault;
    if (this.durable) fs.fsyncSync(this.fd);
    this.dirty = false;
  }

  /** Everything appended so far (or up to `at`, an earlier `offset`) belongs to a complete commit. */
  markCommitted(at = this.end): void {
    this.committed = Math.max(this.committed, at);
  }

  /** Bytes appended so far (a line boundary). */
  get offset(): number {
    return this.end;
  }

  /** fsync on the libuv thread pool (the event loop, and so replies, go on meanwhile). */
  syncAsync(): Promise<void> {
    const fault = storeFaults.hook?.('fsync', this.file, 0) ?? null;
    if (fault) return Promise.reject('partial' in fault ? fault.error : fault);
    if (!this.durable || this.fd < 0) return Promise.resolve();
    this.dirty = false;
    const fd = this.fd;
    return new Promise((resolve, reject) => fs.fsync(fd, (e) => (e ? reject(e) : resolve())));
  }

  /** Drop what was appended since the last commit (after a failure); best effort, the caller closes the run. */
  rollback(): void {
    try {
      const to = Math.min(this.committed, fs.fstatSync(this.fd).size); // never extends a file
      fs.ftruncateSync(this.fd, to);
      this.end = this.committed = to;
      this.dirty = false;
    } catch {
      // the file keeps a tail the next open repairs (repairJsonl)
    }
  }

  close(): void {
    if (this.fd < 0) return;
    try {
      this.sync();
    } finally {
      fs.closeSync(this.fd);
      this.fd = -1;
    }
  }
}

/** What repairJsonl removed from a file. */
export interface Repair {
  /** Lines that did not parse (a torn line anywhere, or a torn tail). */
  torn: TornLine[];
  /** Complete lines removed by the `drop` rule (e.g. a step that was never committed). */
  dropped: number;
}

/**
 * Scan a whole JSONL file: lines that do not parse (torn by a crash or a full disk, anywhere in the file)
 * and lines `drop` selects are moved to `<file>.torn`; the file is rewritten atomically when anything moved.
 */
export function repairJsonl(file: string, drop?: (rec: Record<string, unknown>) => boolean, durable = true): Repair {
  const buf = readIfExists(file);
  const out: Repair = { torn: [], dropped: 0 };
  if (!buf || buf.length === 0) return out;
  const keep: Buffer[] = [];
  const moved: Buffer[] = [];
  let at = 0;
  while (at < buf.length) {
    const nl = buf.indexOf(0x0a, at);
    const stop = nl < 0 ? buf.length : nl;
    const line = buf.subarray(at, stop);
    let rec: unknown = undefined;
    let ok = nl >= 0; // a tail without a newline is torn even if it parses
    if (ok && line.length > 0) {
      try {
        rec = JSON.parse(line.toString('utf8'));
        ok = typeof rec === 'object' && rec !== null && !Array.isArray(rec);
      } catch {
        ok = false;
      }
    }
    if (line.length === 0 && nl >= 0) {
      // blank line: harmless, dropped
    } else if (!ok) {
      out.torn.push({ offset: at, bytes: stop - at, preview: line.toString('utf8').slice(0, 200) });
      moved.push(line, NL);
    } else if (drop?.(rec as Record<string, unknown>)) {
      out.dropped++;
      moved.push(line, NL);
    } else keep.push(line, NL);
    at = stop + 1;
  }
  if (moved.length) {
    fs.appendFileSync(file + '.torn', Buffer.concat(moved));
    writeFileAtomic(file, Buffer.concat(keep), durable);
  }
  return out;
}

const NL = Buffer.from('\n');

/** The last complete line of a file, read backwards in chunks (null: no complete line, or no file). */
export function lastLine(file: string): string | null {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  try {
    const size = fs.fstatSync(fd).size;
    let end = size; // exclusive end of the region still to search; the file ends with '\n' after repairJsonl
    let tail = Buffer.alloc(0);
    for (let chunk = 65536; end > 0; chunk *= 2) {
      const start = Math.max(0, end - chunk);
      const buf = Buffer.alloc(end - start);
      fs.readSync(fd, buf, 0, buf.length, start);
      tail = Buffer.concat([buf, tail]);
      end = start;
      const last = tail.lastIndexOf(0x0a);
      if (last < 0) continue; // no complete line yet
      const prev = tail.lastIndexOf(0x0a, last - 1);
      if (prev >= 0 || end === 0) return tail.subarray(prev + 1, last).toString('utf8');
    }
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

/** Write a file atomically: temp file, fsync, rename, fsync the directory. */
export function writeFileAtomic(file: string, data: string | Buffer, durable = true): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    const fault = storeFaults.hook?.('write', file, data.length) ?? null;
    if (fault) throw 'partial' in fault ? fault.error : fault;
    fs.writeFileSync(fd, data);
    if (durable) fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true }); // no temp file left on a full disk
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  if (durable) fsyncDir(path.dirname(file));
}

function fsyncDir(dir: string): void {
  let fd = -1;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}
