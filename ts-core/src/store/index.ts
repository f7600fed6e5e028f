// Run store: one directory per run id under a root. Append-only JSONL files plus atomically
// replaced run.json and state.json. See docs/observability.md for the layout and guarantees.
//
// Durability: every append* call writes its lines immediately (one write() per call); `commitStep()`
// fsyncs all files written since the previous commit, then (optionally) replaces state.json. A failure
// anywhere rolls every log back to the previous commit (no partial line stays) and is rethrown.
// Opening repairs the directory first (store/recover.ts).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { RUN_ID_RE } from '../protocol/validate.ts';
import { PROTOCOL_VERSION, VERSION } from '../version.ts';
import type { MetricRecord, StepResult, WindowRecord } from '../types.ts';
import { JsonlAppender, lastLine, readIfExists, readJsonl, writeFileAtomic, type JsonlRead, type TornLine } from './jsonl.ts';
import { FILES, LOGS, StoreError, type LogName } from './layout.ts';
import { recoverRunDir, type Recovered } from './recover.ts';
import type { AuditEntry, RunMeta, RunState, StepEntry } from './types.ts';

export * from './types.ts';
export { readJsonl, storeFaults, toJsonLine, type JsonlRead, type TornLine } from './jsonl.ts';

export { RUN_ID_RE }; // one pattern for the wire (E_RUN_ID) and the run directory name
export { FILES, LOGS, StoreError, type LogName } from './layout.ts';

/** Throws E_RUN_ID unless `runId` is safe to use as a single path component. */
export function checkRunId(runId: unknown): string {
  if (typeof runId !== 'string' || !RUN_ID_RE.test(runId) || runId === '.' || runId === '..') {
    throw new StoreError('E_RUN_ID', `run id ${JSON.stringify(runId)} must match ${RUN_ID_RE}`);
  }
  return runId;
}

/** A torn line found (and moved to `<file>.torn`) when the store was opened. */
export interface Recovery {
  file: string;
  torn: TornLine;
}

export interface OpenOptions {
  /** Skip the single-writer lock (tests that open a store next to a live engine for reading only). */
  noLock?: boolean;
  /** false: skip fsync (replay, tests); files are still written in the same order. Default true. */
  durable?: boolean;
}

/** Text that is already JSON (a snapshot serialised by its owner, caching what did not change). */
export class RawJson {
  constructor(readonly text: string) {}
}
// A per-process nonce: no string of the state's own can be taken for a placeholder.
const RAW_MARK = `tg-raw-${randomBytes(8).toString('hex')}:`;
const RAW_RE = new RegExp(`"${RAW_MARK}(\\d+)"`, 'g');

export class RunStore {
  readonly dir: string;
  readonly recovery: Recovery[] = [];
  /** What opening repaired: torn lines, uncommitted lines, unanswered steps (store/recover.ts). */
  readonly recovered: Recovered;
  private logs: Record<LogName, JsonlAppender>;
  private closed = false;

  private constructor(
    readonly root: string,
    readonly runId: string,
    private readonly opts: OpenOptions,
  ) {
    this.dir = path.join(path.resolve(root), runId);
    fs.mkdirSync(this.dir, { recursive: true });
    if (!opts.noLock) this.lock();
    try {
      this.recovered = recoverRunDir(this.dir, opts.durable !== false);
    } catch (e) {
      if (!opts.noLock) fs.rmSync(this.path('lock'), { force: true });
      throw e;
    }
    for (const r of this.recovered.repairs) for (const t of r.repair.torn) this.recovery.push({ file: r.file, torn: t });
    this.logs = {} as Record<LogName, JsonlAppender>;
    for (const name of LOGS) this.logs[name] = new JsonlAppender(path.join(this.dir, FILES[name]), opts.durable !== false);
  }

  /** Open (create or resume) the run directory `rootDir/runId`. */
  static open(rootDir: string, runId: string, opts: OpenOptions = {}): RunStore {
    return new RunStore(rootDir, checkRunId(runId), opts);
  }

  path(name: keyof typeof FILES): string {
    return path.join(this.dir, FILES[name]);
  }

  // ---- run.json ----

  readRunJson(): RunMeta | null {
    return readJsonFile<RunMeta>(this.path('run'));
  }

  /** Merge `patch` into run.json (created with versions on first write) and replace it atomically. */
  writeRunJson(patch: Partial<RunMeta>): RunMeta {
    const now = new Date().toISOString();
    const prev = this.readRunJson();
    const meta: RunMeta = {
      run_id: this.runId,
      created_at: prev?.created_at ?? now,
      ...prev,
      ...patch,
      versions: { tailguard: VERSION, node: process.version, protocol: PROTOCOL_VERSION },
      updated_at: now,
    };
    writeFileAtomic(this.path('run'), JSON.stringify(meta, null, 2) + '\n', this.opts.durable !== false);
    return meta;
  }

  // ---- append-only logs ----

  appendMetrics(records: readonly MetricRecord[]): void {
    this.logs.metrics.append(records);
  }

  appendWindows(records: readonly WindowRecord[]): void {
    this.logs.windows.append(records);
  }

  appendSteps(entries: readonly StepEntry[]): void {
    this.logs.steps.append(entries);
  }

  /** Findings, directives, acks, checkpoints: the audit log. */
  appendDirective(entry: AuditEntry): void {
    this.logs.directives.append([entry]);
  }

  /** Append everything a finalised step produced (no fsync; call commitStep()). */
  appendStepResult(r: StepResult): void {
    this.appendMetrics(r.records);
    this.appendWindows(r.windows);
    this.appendSteps([stepEntry(r)]);
  }

  /** Make every append so far durable; then replace state.json when given. On failure nothing of this commit stays. */
  commitStep(state?: Omit<RunState, 'version' | 'saved_at'>): void {
    try {
      for (const name of LOGS) this.logs[name].sync();
      if (state) this.saveState(state);
    } catch (e) {
      this.rollback();
      throw e;
    }
    for (const name of LOGS) this.logs[name].markCommitted();
  }

  /**
   * `--commit async`: the same commit off the reply path. Appends are already written; their fsyncs run on the
   * thread pool, then `state` (serialised now, so it matches the logs) is replaced, then the commit counts.
   * Commits must be chained by the caller (one at a time); a failure rolls back like commitStep.
   */
  async commitStepAsync(stateJson?: string, aborted: () => boolean = () => false): Promise<boolean> {
    const at = LOGS.map((name) => this.logs[name].offset);
    try {
      for (const name of LOGS) await this.logs[name].syncAsync();
      // A fault elsewhere rolled the logs back meanwhile: this commit no longer exists.
      if (aborted() || this.closed) return false;
      if (stateJson !== undefined) writeFileAtomic(this.path('state'), stateJson, this.opts.durable !== false);
    } catch (e) {
      this.rollback();
      throw e;
    }
    LOGS.forEach((name, i) => this.logs[name].markCommitted(at[i]));
    return true;
  }

  /** state.json's text for `state` (what saveState writes). A RawJson value (a snapshot its owner serialised,
   *  e.g. RunStats.snapshotText) is spliced in as its text: the same file as JSON.stringify of the object. */
  stateJson(state: Omit<RunState, 'version' | 'saved_at'>): string {
    const raws: string[] = [];
    const json = JSON.stringify({ version: 1, ...state, saved_at: new Date().toISOString() } satisfies RunState, (_k, v) =>
      v instanceof RawJson ? `${RAW_MARK}${raws.push(v.text) - 1}` : v);
    return raws.length ? json.replace(RAW_RE, (_m, i: string) => raws[Number(i)]) : json;
  }

  /** Truncate every log back to the last commit (after a failed append or commit). */
  rollback(): void {
    for (const name of LOGS) this.logs[name].rollback();
  }

  /** The last step in steps.jsonl (null: none). state.json may be older (it is saved every K steps). */
  lastLoggedStep(): number | null {
    const line = lastLine(this.path('steps'));
    if (line === null) return null;
    try {
      const step = (JSON.parse(line) as StepEntry).step;
      return Number.isSafeInteger(step) ? step : null;
    } catch {
      return null;
    }
  }

  // ---- state.json (resume) ----

  saveState(state: Omit<RunState, 'version' | 'saved_at'>): void {
    writeFileAtomic(this.path('state'), this.stateJson(state), this.opts.durable !== false);
  }

  /** state.json as checked when the store was opened (a corrupt one refused the open). */
  loadState(): RunState | null {
    return this.recovered.state;
  }

  /** Close the files. `discard`: after a fault, roll back what was not committed instead of syncing it. */
  close(discard = false): void {
    if (this.closed) return;
    this.closed = true;
    if (discard) this.rollback();
    try {
      for (const name of LOGS) {
        try {
          this.logs[name].close();
        } catch (e) {
          if (!discard) throw e;
        }
      }
    } finally {
      if (!this.opts.noLock) fs.rmSync(this.path('lock'), { force: true });
    }
  }

  /** One writer per run directory; a lock left by a dead process (kill -9) is taken over. */
  private lock(): void {
    const file = this.path('lock');
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const pid = Number(fs.readFileSync(file, 'utf8'));
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
      throw new StoreError('E_RUN_LOCKED', `run directory ${this.dir} is in use by process ${pid}`);
    }
    fs.writeFileSync(file, String(process.pid));
  }
}

export function stepEntry(r: StepResult): StepEntry {
  const tokensPerRank: Record<string, number> = {};
  for (const p of r.perRank) tokensPerRank[String(p.rank)] = p.tokens;
  return {
    step: r.step,
    world_size: r.worldSize,
    tokens: r.tokens,
    tokens_per_rank: tokensPerRank,
    ranks_present: r.ranksPresent,
    ranks_missing: r.ranksMissing,
    knobs: r.knobs,
    logs: r.logs,
    per_rank: r.perRank,
  };
}

/** Whether `pid` is a live process (EPERM: alive, owned by someone else); the lock owner check of the store and the UI. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readJsonFile<T>(file: string): T | null {
  const buf = readIfExists(file);
  return buf ? (JSON.parse(buf.toString('utf8')) as T) : null;
}

// ---- readers over a run directory (no lock; safe next to a live engine) ----

export interface RunData {
  dir: string;
  meta: RunMeta | null;
  metrics: JsonlRead<MetricRecord>;
  windows: JsonlRead<WindowRecord>;
  directives: JsonlRead<AuditEntry>;
  steps: JsonlRead<StepEntry>;
  state: RunState | null;
}

/** Read a whole run directory. Torn last lines are reported in each file's `torn`, never thrown. */
export function readRun(dir: string): RunData {
  const meta = readJsonFile<RunMeta>(path.join(dir, FILES.run));
  let state: RunState | null = null;
  try {
    state = readJsonFile<RunState>(path.join(dir, FILES.state));
  } catch {
    state = null; // a partially written state.json cannot exist (atomic rename); bad JSON is ignored
  }
  return {
    dir,
    meta,
    metrics: readJsonl<MetricRecord>(path.join(dir, FILES.metrics)),
    windows: readJsonl<WindowRecord>(path.join(dir, FILES.windows)),
    directives: readJsonl<AuditEntry>(path.join(dir, FILES.directives)),
    steps: readJsonl<StepEntry>(path.join(dir, FILES.steps)),
    state,
  };
}

/** Human-readable warnings for torn or bad lines in a run read by readRun(). */
export function runWarnings(run: RunData): string[] {
  const out: string[] = [];
  for (const name of LOGS) {
    const r = run[name];
    if (r.torn) out.push(`${FILES[name]}: torn last line (${r.torn.bytes} bytes at offset ${r.torn.offset}) ignored`);
    for (const b of r.bad) out.push(`${FILES[name]}: line ${b.line} is not valid JSON (${b.error}); skipped`);
  }
  return out;
}
