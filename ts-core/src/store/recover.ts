// Reopening a run directory (engine restart, --max-runs eviction, hello after E_STORE): make the files
// agree with each other before anything is appended (proto/README.md "Run store", "Reopen").
//  1. every log is scanned whole: torn or unparsable lines anywhere go to `<file>.torn`;
//  2. L = the last step of steps.jsonl (a step's commit record, written last): lines of later steps in the
//     other logs were never committed and go to `.torn` too;
//  3. state.json must parse and must not be ahead of L, else the run is refused (E_STATE → wire E_STORE);
//  4. a step after state.json whose commit was one that saves the state was never answered (the reply comes
//     after the save): it is removed so its resend is accepted and the windows do not shift.
import { FILES, LOGS, StoreError, type LogName } from './layout.ts';
import { readIfExists, repairJsonl, type Repair } from './jsonl.ts';
import type { RunState } from './types.ts';
import * as path from 'node:path';

export interface Recovered {
  repairs: { file: string; repair: Repair }[];
  /** The last committed step (null: none). */
  lastStep: number | null;
  state: RunState | null;
  /** Steps removed by rule 4 (logged). */
  unanswered: number[];
}

const stepOf = (rec: Record<string, unknown>): number | null => (Number.isSafeInteger(rec.step) ? (rec.step as number) : null);
/** Lines that belong to the commit of a step (audit lines of findings and directives; acks stand alone). */
const committedWith = (name: LogName, rec: Record<string, unknown>): boolean =>
  name !== 'directives' || rec.kind === 'finding' || rec.kind === 'directive';

export function recoverRunDir(dir: string, durable: boolean): Recovered {
  const file = (n: keyof typeof FILES) => path.join(dir, FILES[n]);
  const repairs: Recovered['repairs'] = [];
  const note = (name: LogName, repair: Repair) => {
    if (repair.torn.length || repair.dropped) repairs.push({ file: FILES[name], repair });
  };
  const state = readState(file('state'));
  // Step lines are read once for L and for the count of steps after the state.
  const steps: number[] = [];
  note('steps', repairJsonl(file('steps'), (rec) => (steps.push(stepOf(rec) ?? -1), false), durable));
  let last = steps.length ? Math.max(...steps) : null;
  const unanswered: number[] = [];
  if (state && state.last_step !== null && last !== null && last > state.last_step) {
    const after = steps.filter((s) => s > state.last_step!).length;
    const every = typeof state.state_every === 'number' ? state.state_every : Infinity;
    if (after >= every || hasDirectiveAt(file('directives'), last)) unanswered.push(last);
  }
  if (unanswered.length) {
    const cut = last!;
    note('steps', repairJsonl(file('steps'), (rec) => stepOf(rec) === cut, durable));
    const rest = steps.filter((s) => s < cut);
    last = rest.length ? Math.max(...rest) : null;
  }
  for (const name of LOGS) {
    if (name === 'steps') continue;
    const limit = last ?? -1;
    note(name, repairJsonl(file(name), (rec) => committedWith(name, rec) && (stepOf(rec) ?? -1) > limit, durable));
  }
  if (state && state.last_step !== null && (last === null || state.last_step > last))
    throw new StoreError('E_STATE', `${file('state')} is at step ${state.last_step} but steps.jsonl ends at ${last ?? 'no step'}: the logs lost committed steps. Move state.json away to restart the windows from the logs' end, or use a new run id`);
  return { repairs, lastStep: last, state, unanswered };
}

function readState(file: string): RunState | null {
  const buf = readIfExists(file);
  if (buf === null) return null;
  let s: RunState;
  try {
    s = JSON.parse(buf.toString('utf8')) as RunState;
  } catch (e) {
    throw new StoreError('E_STATE', `${file} is ${buf.length === 0 ? 'empty' : `not JSON (${(e as Error).message})`}: this run's windows cannot be restored. Move state.json away to restart the windows from the logs' end (metrics stay), or use a new run id`);
  }
  if (typeof s !== 'object' || s === null || s.version !== 1) throw new StoreError('E_STATE', `${file}: version ${(s as RunState | null)?.version} is not supported`);
  return s;
}

function hasDirectiveAt(file: string, step: number): boolean {
  const buf = readIfExists(file);
  if (!buf) return false;
  // The directive of step L is among the last lines: scan backwards a little.
  const tail = buf.subarray(Math.max(0, buf.length - (1 << 20))).toString('utf8').split('\n');
  for (let i = tail.length - 1; i >= 0; i--) {
    try {
      const rec = JSON.parse(tail[i]) as Record<string, unknown>;
      if (rec.kind === 'directive' && rec.step === step) return true;
      if (typeof rec.step === 'number' && rec.step < step && rec.kind !== 'ack' && rec.kind !== 'checkpoint') return false;
    } catch {
      // torn fragment or partial first line of the window
    }
  }
  return false;
}
