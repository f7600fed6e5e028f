// Structured logs with pino: JSON lines by default, pretty when stdout is a TTY (or forced).
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export interface LogOptions {
  /** pino level: trace|debug|info|warn|error|fatal|silent (default info). */
  level?: string;
  /** Pretty output; defaults to whether stdout is a TTY. */
  pretty?: boolean;
  /** Logger name, shown as `name` in every line. */
  name?: string;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? 'info';
  const base = { name: opts.name ?? 'tailguard' };
  if (opts.pretty ?? process.stdout.isTTY) {
    // In-thread pretty stream (no worker): lines are written before exit without a flush dance.
    return pino({ level, ...base }, pretty({ colorize: true, sync: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' }));
  }
  return pino({ level, ...base }, pino.destination({ dest: 1, sync: true }));
}

/** A logger that writes nothing (library use, tests). */
export const silentLogger = (): Logger => pino({ level: 'silent' });
