// Certified-good checkpoints. A checkpoint the shim reports is certified once the steps of the
// window covering it and the `certify_after` steps after it are all healthy (no detector latched
// at warn or above); one unhealthy step in that span rejects it. Rollback only targets certified ones.
import type { Policy } from './types.ts';

export type CheckpointStatus = 'pending' | 'certified' | 'rejected' | 'invalidated';

export interface CheckpointEntry {
  step: number;
  path: string;
  status: CheckpointStatus;
  /** The step at which the status was decided. */
  decided_at?: number;
  reason?: string;
}

/** An audit-log line about a checkpoint (kind "checkpoint" in directives.jsonl). */
export interface CheckpointEvent {
  kind: 'checkpoint';
  step: number;
  path: string;
  status: CheckpointStatus | 'registered';
  certified: boolean;
  at_step: number | null;
  reason?: string;
}

export interface CheckpointBookState {
  entries: CheckpointEntry[];
  /** step -> worst latched level after that step (only steps still needed). */
  health: Record<string, number>;
  lastStep: number | null;
}

const MAX_ENTRIES = 64;

export class CheckpointBook {
  s: CheckpointBookState = { entries: [], health: {}, lastStep: null };

  constructor(private readonly o: Policy['checkpoints']) {}

  register(step: number, path: string): CheckpointEvent[] {
    const old = this.s.entries.find((e) => e.step === step);
    if (old && old.path === path && old.status !== 'invalidated') return []; // a repeated notice
    if (old) {
      old.path = path;
      old.status = 'pending';
      delete old.reason;
    } else this.s.entries.push({ step, path, status: 'pending' });
    this.s.entries.sort((a, b) => a.step - b.step);
    while (this.s.entries.length > MAX_ENTRIES) this.s.entries.shift();
    return [{ kind: 'checkpoint', step, path, status: 'registered', certified: false, at_step: this.s.lastStep }, ...this.decide()];
  }

  /** Record the health of a finished step and decide whatever can now be decided. */
  observe(step: number, level: number): CheckpointEvent[] {
    this.s.health[step] = level;
    this.s.lastStep = step;
    const ev = this.decide();
    this.prune();
    return ev;
  }

  private decide(): CheckpointEvent[] {
    const out: CheckpointEvent[] = [];
    const last = this.s.lastStep;
    if (last === null) return out;
    for (const e of this.s.entries) {
      if (e.status !== 'pending') continue;
      const lo = e.step - this.o.window + 1;
      const hi = e.step + this.o.certify_after;
      const bad = Object.entries(this.s.health).find(([k, lv]) => +k >= lo && +k <= Math.min(hi, last) && lv >= 2);
      if (bad) {
        e.status = 'rejected';
        e.reason = `step ${bad[0]} unhealthy (window ${lo}..${hi})`;
      } else if (last >= hi) {
        e.status = 'certified';
        e.reason = `steps ${lo}..${hi} healthy`;
      } else continue;
      e.decided_at = last;
      out.push({ kind: 'checkpoint', step: e.step, path: e.path, status: e.status, certified: e.status === 'certified', at_step: last, reason: e.reason });
    }
    return out;
  }

  private prune(): void {
    const pending = this.s.entries.filter((e) => e.status === 'pending').map((e) => e.step);
    const keepFrom = Math.min(this.s.lastStep ?? 0, ...pending) - this.o.window;
    for (const k of Object.keys(this.s.health)) if (+k < keepFrom) delete this.s.health[k];
  }

  /** After a rollback to `step`: later checkpoints and health belong to an abandoned trajectory. */
  invalidateAfter(step: number, atStep: number | null): CheckpointEvent[] {
    const out: CheckpointEvent[] = [];
    for (const e of this.s.entries)
      if (e.step > step && e.status !== 'invalidated' && e.status !== 'rejected') {
        e.status = 'invalidated';
        e.reason = `rolled back to step ${step}`;
        e.decided_at = atStep ?? undefined;
        out.push({ kind: 'checkpoint', step: e.step, path: e.path, status: 'invalidated', certified: false, at_step: atStep, reason: e.reason });
      }
    for (const k of Object.keys(this.s.health)) if (+k > step) delete this.s.health[k];
    this.s.lastStep = step;
    return out;
  }

  certified(): { step: number; path: string }[] {
    return this.s.entries.filter((e) => e.status === 'certified').map(({ step, path }) => ({ step, path }));
  }

  /** The newest certified checkpoint, or null. */
  latest(): { step: number; path: string } | null {
    const c = this.certified();
    return c.length ? c[c.length - 1] : null;
  }

  /** The newest `keep` certified checkpoints: the shim protects these from rotation. */
  protectedList(): { step: number; path: string }[] {
    return this.certified().slice(-this.o.keep);
  }

  snapshot(): CheckpointBookState {
    return structuredClone(this.s);
  }

  restore(s: CheckpointBookState): void {
    this.s = structuredClone(s);
  }
}
