// Severities as ordered levels, so detectors can compare and take maxima. 0 = nothing to report.
import type { Severity } from '../types.ts';

export const SEVERITIES: readonly Severity[] = ['info', 'warn', 'high', 'critical'];
export type Level = 0 | 1 | 2 | 3 | 4;

export function levelOf(s: Severity): Level {
  return (SEVERITIES.indexOf(s) + 1) as Level;
}

export function severityOf(l: Level): Severity {
  if (l < 1) throw new RangeError('level 0 has no severity');
  return SEVERITIES[l - 1];
}

/** Thresholds per severity; null (or absent) disables that severity. */
export interface Thresholds {
  info?: number | null;
  warn?: number | null;
  high?: number | null;
  critical?: number | null;
}

/**
 * The highest level whose threshold `value` crosses. `dir` says which way is bad.
 * `margin` relaxes every threshold (the hysteresis "hold" test): a level stays held while
 * the value is within `margin` (relative) of its raise threshold.
 */
export function levelFor(value: number | undefined, t: Thresholds, dir: 'above' | 'below', margin = 0): Level {
  if (value === undefined || !Number.isFinite(value)) return 0;
  let out: Level = 0;
  const keys = ['info', 'warn', 'high', 'critical'] as const;
  for (let i = 0; i < keys.length; i++) {
    const th = t[keys[i]];
    if (th === null || th === undefined) continue;
    const crossed = dir === 'above' ? value >= th * (1 - margin) : value <= th * (1 + margin);
    if (crossed) out = (i + 1) as Level;
  }
  return out;
}

export function maxLevel(...ls: Level[]): Level {
  let m: Level = 0;
  for (const l of ls) if (l > m) m = l;
  return m;
}

export function minLevel(...ls: Level[]): Level {
  let m: Level = 4;
  for (const l of ls) if (l < m) m = l;
  return ls.length ? m : 0;
}
