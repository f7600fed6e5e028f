// Hysteresis for one detector key: raise on k-of-n steps, clear only after `clear_steps`
// consecutive steps below the (relaxed) hold level, re-emit an active level after a cooldown.
// So one noisy step never fires, and a persisting problem is reported again for escalation.
import type { Level } from './levels.ts';

export interface HysteresisOptions {
  raise_k: number;
  raise_n: number;
  clear_steps: number;
  cooldown_steps: number;
}

export interface LatchState {
  recent: Level[];
  level: Level;
  below: number;
  onset: number | null;
  lastEmitStep: number | null;
  lastStep: number | null;
}

export type LatchEvent = 'raise' | 'repeat' | 'clear' | null;

export function newLatch(): LatchState {
  return { recent: [], level: 0, below: 0, onset: null, lastEmitStep: null, lastStep: null };
}

/**
 * Feed one step. `raise` is the level this step's values reach at the raise thresholds,
 * `hold` the level they reach at the relaxed clear thresholds (hold ≥ raise).
 */
export function updateLatch(s: LatchState, step: number, raise: Level, hold: Level, o: HysteresisOptions): LatchEvent {
  if (s.lastStep !== null && step <= s.lastStep) Object.assign(s, newLatch()); // time went back (rollback)
  s.lastStep = step;
  s.recent.push(raise);
  while (s.recent.length > o.raise_n) s.recent.shift();

  let candidate: Level = 0;
  for (let l = 4; l >= 1; l--) {
    let c = 0;
    for (const r of s.recent) if (r >= l) c++;
    if (c >= Math.min(o.raise_k, o.raise_n)) {
      candidate = l as Level;
      break;
    }
  }
  if (candidate > s.level) {
    if (s.level === 0) s.onset = step;
    s.level = candidate;
    s.below = 0;
    s.lastEmitStep = step;
    return 'raise';
  }
  if (s.level > 0 && Math.max(hold, candidate) < s.level) {
    s.below++;
    if (s.below >= o.clear_steps) {
      s.level = Math.max(hold, candidate) as Level;
      s.below = 0;
      if (s.level === 0) s.onset = null;
      s.lastEmitStep = step;
      return 'clear';
    }
    return null;
  }
  s.below = 0;
  if (s.level > 0 && s.lastEmitStep !== null && step - s.lastEmitStep >= o.cooldown_steps) {
    s.lastEmitStep = step;
    return 'repeat';
  }
  return null;
}
