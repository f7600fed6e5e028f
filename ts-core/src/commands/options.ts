// Command-line values checked at parse time: a bad value stops the command with exit code 2 and a message
// that names the option, what it expects and what it got (never a silent default, never E_INTERNAL later).
import { InvalidArgumentError } from 'commander';

/** An integer in [min, max] (commander argParser). */
export function int(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = /^[+]?\d+$/.test(v.trim()) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`}, got "${v}"`);
    return n;
  };
}

/** A positive number (may be fractional), e.g. days. */
export function positive(v: string): number {
  const n = /^\s*[+]?(\d+\.?\d*|\.\d+)\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a number > 0, got "${v}"`);
  return n;
}

/** `--ui [port]`: bare flag (true) or a TCP port. */
export function port(v: string): number {
  return int(0, 65535)(v);
}

/** Exit status for usage errors (bad option value, unknown option, missing argument). */
export const USAGE_EXIT = 2;

/** `--ingest-workers` default: none on one core (workers only add a copy there), else one per core, at most 8. */
export function defaultIngestWorkers(cores: number): number {
  return cores > 1 ? Math.min(cores, 8) : 0;
}
