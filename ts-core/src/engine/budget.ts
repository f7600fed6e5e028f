// The engine's memory budget for data it holds between messages (docs/reliability.md, "Bounded
// resources"): chunks of incomplete steps, and rank steps the statistics keep until the step's last rank
// is in. Each run has its own cap and all runs share one; a message that would pass either gets E_BUDGET.
import { ProtocolError } from '../protocol/errors.ts';

export const DEFAULT_MAX_PENDING_BYTES = 2 * 1024 ** 3;
export const DEFAULT_MAX_RUN_PENDING_BYTES = 1024 ** 3;
/** What one rank step costs while it waits in the statistics for the other ranks, beyond its own bytes
 *  (per-step histograms and sums: 0.6-0.75 MB measured, issue 14). */
export const PENDING_STEP_OVERHEAD = 1024 * 1024;

export class PendingBudget {
  private total = 0;
  private readonly perRun = new Map<string, number>();

  constructor(
    readonly maxTotal = DEFAULT_MAX_PENDING_BYTES,
    readonly maxPerRun = DEFAULT_MAX_RUN_PENDING_BYTES,
  ) {}

  /** Reserve `bytes` for `runId`, or throw E_BUDGET (nothing reserved). */
  take(runId: string, bytes: number, what: string): void {
    const run = this.perRun.get(runId) ?? 0;
    if (run + bytes > this.maxPerRun)
      throw new ProtocolError('E_BUDGET', `run ${runId} holds ${mib(run)} MiB of incomplete steps; ${what} (${mib(bytes)} MiB) would pass the run's budget of ${mib(this.maxPerRun)} MiB (--max-run-pending-bytes): dropped`);
    if (this.total + bytes > this.maxTotal)
      throw new ProtocolError('E_BUDGET', `the engine holds ${mib(this.total)} MiB of incomplete steps; ${what} (${mib(bytes)} MiB) would pass its budget of ${mib(this.maxTotal)} MiB (--max-pending-bytes): dropped`);
    this.perRun.set(runId, run + bytes);
    this.total += bytes;
  }

  give(runId: string, bytes: number): void {
    const run = (this.perRun.get(runId) ?? 0) - bytes;
    if (run <= 0) this.perRun.delete(runId);
    else this.perRun.set(runId, run);
    this.total = Math.max(0, this.total - bytes);
  }

  /** A run closed: everything it held is released. */
  release(runId: string): void {
    this.give(runId, this.perRun.get(runId) ?? 0);
  }

  held(runId?: string): number {
    return runId === undefined ? this.total : (this.perRun.get(runId) ?? 0);
  }
}

const mib = (n: number) => (n / 1024 ** 2).toFixed(1);
