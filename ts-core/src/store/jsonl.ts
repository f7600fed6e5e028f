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
 * An append-only JSONL file. Lines are written with one write() each; `sync()` fsyncs.
 * On open, a torn tail left by a crash is cut off (and returned) so new lines never glue onto it.
 */
export class JsonlAppender {
  private fd: number;
  private dirty = false;
  readonly recovered: TornLine | null;

  constructor(
    readonly file: string,
    private readonly durable = true,
  ) {
    this.recovered = cutTornTail(file);
    this.fd = fs.openSync(file, 'a');
  }

  append(records: readonly unknown[]): void {
    if (records.length === 0) return;
    let s = '';
    for (const r of records) s += toJsonLine(r);
    fs.writeSync(this.fd, s);
    this.dirty = true;
  }

  sync(): void {
    if (!this.dirty) return;
    if (this.durable) fs.fsyncSync(this.fd);
    this.dirty = false;
  }

  close(): void {
    if (this.fd < 0) return;
    this.sync();
    fs.closeSync(this.fd);
    this.fd = -1;
  }
}

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
    let end = size; // exclusive end of the region still to search; the file ends with '\n' after cutTornTail
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

/** Truncate an incomplete last line; keep the fragment in `<file>.torn` for forensics. */
function cutTornTail(file: string): TornLine | null {
  const buf = readIfExists(file);
  const torn = buf && tornTail(buf);
  if (!torn) return null;
  fs.appendFileSync(file + '.torn', Buffer.concat([buf.subarray(torn.offset), Buffer.from('\n')]));
  fs.truncateSync(file, torn.offset);
  return torn;
}

/** Write a file atomically: temp file, fsync, rename, fsync the directory. */
export function writeFileAtomic(file: string, data: string | Buffer, durable = true): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeFileSync(fd, data);
    if (durable) fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
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
