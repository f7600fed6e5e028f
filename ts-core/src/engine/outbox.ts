// The directive contract (proto/README.md "Directive contract"): every rank receives every non-noop
// directive, once, in one of its replies, and `apply_at_step` leaves every rank room to meet it.
import type { Directive } from '../types.ts';

/** D: a directive reaches each rank in its reply to a step <= apply_at_step - D (announced in welcome). */
export const DIRECTIVE_LAG = 1;
/** Directives kept for ranks that never collect them (a dead rank): the oldest beyond this are dropped. */
const OUTBOX_MAX = 64;

interface Entry {
  d: Directive;
  delivered: Set<number>;
}

export class DirectiveOutbox {
  private entries: Entry[] = [];
  /** Highest step answered per rank. */
  private readonly replied = new Map<number, number>();
  /** Directives dropped for ranks that did not collect them (logs, tests). */
  dropped = 0;

  /** `recipients()`: the ranks that read replies (all ranks; rank 0 alone in sketch mode). */
  constructor(private readonly recipients: () => number) {}

  /**
   * The earliest `apply_at_step` every rank can meet: one past the highest answered step of any rank (or
   * the step being handled), plus D, plus one reply per directive still on its way to some rank.
   */
  minApplyAt(current: number | null): number {
    let q = current ?? 0;
    for (const s of this.replied.values()) q = Math.max(q, s + 1);
    const waiting = this.entries.filter((e, i) => !(i === this.entries.length - 1 && e.delivered.size === 0)).length;
    return Math.min(q + DIRECTIVE_LAG + waiting, Number.MAX_SAFE_INTEGER);
  }

  /**
   * Queue a decision. One no rank has received yet is replaced by a newer one (a warn never replaces a
   * control action: it is dropped instead); once any rank has it, every rank gets it.
   */
  push(d: Directive): void {
    const last = this.entries.at(-1);
    if (last && last.delivered.size === 0) {
      if (d.action === 'warn' && last.d.action !== 'warn') return;
      this.entries[this.entries.length - 1] = { d, delivered: new Set() };
      return;
    }
    this.entries.push({ d, delivered: new Set() });
    while (this.entries.length > OUTBOX_MAX) {
      this.entries.shift();
      this.dropped++;
    }
  }

  /** The directive for `rank`'s reply to `step` (oldest it has not received), or null; records the reply. */
  take(rank: number, step: number): Directive | null {
    this.replied.set(rank, Math.max(this.replied.get(rank) ?? -1, step));
    const e = this.entries.find((x) => !x.delivered.has(rank));
    if (!e) return null;
    e.delivered.add(rank);
    const n = this.recipients();
    while (this.entries.length && this.entries[0].delivered.size >= n) this.entries.shift();
    return e.d;
  }

  /** A rank's step history restarted (hello): its answered step is forgotten. */
  forget(rank: number): void {
    this.replied.delete(rank);
  }

  get size(): number {
    return this.entries.length;
  }
}
