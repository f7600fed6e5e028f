// All runs of one engine, by run id. Creates a Run (and its pipeline) on the first hello.
import type { Logger } from 'pino';
import type { HelloHeader, Limits } from '../protocol/messages.ts';
import type { PipelineFactory } from './pipeline.ts';
import { Run } from './run.ts';

export interface RegistryOptions {
  limits: Limits;
  log: Logger;
  factory: PipelineFactory;
  runDir: string;
  options?: Record<string, unknown>;
}

export class RunRegistry {
  private readonly runs = new Map<string, Run>();
  constructor(private readonly opts: RegistryOptions) {}

  get(runId: string): Run | undefined {
    return this.runs.get(runId);
  }

  /** The run for this hello, created (with its pipeline) on first sight. */
  forHello(h: HelloHeader): Run {
    let run = this.runs.get(h.run_id);
    if (!run) {
      const log = this.opts.log.child({ run_id: h.run_id });
      const pipeline = this.opts.factory({
        runId: h.run_id, worldSize: h.world_size, trainer: h.trainer, config: h.config ?? {},
        runDir: this.opts.runDir, options: this.opts.options ?? {}, log,
      });
      run = new Run(h.run_id, h, pipeline, this.opts.limits, log);
      this.runs.set(h.run_id, run);
    }
    return run;
  }

  /** Periodic: finalise steps whose missing ranks timed out. */
  tick(nowMs: number): void {
    for (const run of this.runs.values()) {
      try {
        run.finalize(nowMs);
      } catch (e) {
        this.opts.log.error({ err: e, run_id: run.runId }, 'finalize failed');
      }
    }
  }

  get size(): number {
    return this.runs.size;
  }

  async close(): Promise<void> {
    for (const run of this.runs.values()) {
      try {
        await run.close();
      } catch (e) {
        this.opts.log.error({ err: e, run_id: run.runId }, 'closing run failed');
      }
    }
    this.runs.clear();
  }
}
