// The run directory's layout: file names, the append-only logs, and the store's error type. Its own
// file so that index.ts and recover.ts both import it without importing each other.
export const FILES = {
  run: 'run.json',
  metrics: 'metrics.jsonl',
  windows: 'windows.jsonl',
  directives: 'directives.jsonl',
  steps: 'steps.jsonl',
  state: 'state.json',
  lock: 'engine.lock',
} as const;

/** The append-only JSONL logs of a run directory. */
export type LogName = 'metrics' | 'windows' | 'directives' | 'steps';
export const LOGS: readonly LogName[] = ['metrics', 'windows', 'directives', 'steps'];

export class StoreError extends Error {
  constructor(
    readonly code: 'E_RUN_ID' | 'E_RUN_LOCKED' | 'E_STATE',
    message: string,
  ) {
    super(message);
    this.name = 'StoreError';
  }
}
