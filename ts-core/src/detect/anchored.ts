// "A level is not a failure": a level detector may report up to `warn` on its value alone, but a
// higher level needs the value to have changed against the run's own reference (the median of its
// first `anchor_steps` readings) by `change_ratio`. Before the reference exists (a fresh run) the
// level stops at `warn`, so a heavy-tailed but stable pair never escalates the ladder.
import type { History } from './history.ts';
import { minLevel, type Level } from './levels.ts';
import { median } from './series.ts';
import type { Tracked } from './history.ts';

export interface AnchoredChangeOptions {
  /** Readings that make the run's own reference. */
  anchor_steps: number;
  /** Levels above warn need value/reference ≥ this ('above'), or reference/value ≥ this ('below'). */
  change_ratio: number;
}

export interface Anchored {
  reference: number | null;
  change: number | null;
  /** The cap this change allows: 4 with a change, else 2 (warn). */
  cap: Level;
}

export function anchoredChange(h: History, pair: string, slice: string, metric: Tracked, value: number, dir: 'above' | 'below', o: AnchoredChangeOptions): Anchored {
  const early = h.early(pair, slice, metric);
  if (early.length < o.anchor_steps) return { reference: null, change: null, cap: 2 };
  const ref = median(early.slice(0, o.anchor_steps));
  const change = dir === 'above' ? value / Math.max(ref, 1e-12) : Math.max(ref, 0) / Math.max(value, 1e-12);
  return { reference: ref, change, cap: change >= o.change_ratio ? 4 : 2 };
}

/** `level` capped by what the anchored change allows. */
export const capped = (level: Level, a: Anchored): Level => minLevel(level, a.cap);
