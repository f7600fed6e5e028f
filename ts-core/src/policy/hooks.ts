// The controller as engine pipeline hooks (engine/pipeline.ts): decide on each final step, take
// acks and checkpoint notices, and hand every audit line (finding, directive, ack, checkpoint)
// to `sink` — the run store's appendDirective once the store is wired.
import type { Directive, Finding, Severity, StepResult } from '../types.ts';
import { auditAck, auditRecords, type AuditLine } from './audit.ts';
import { Controller, type Ack, type ControllerSnapshot } from './controller.ts';
import { loadPolicy } from './load.ts';
import type { Policy } from './types.ts';

export interface ControlHooks {
  controller: Controller;
  /** Where audit lines go (RunStore.appendDirective). Settable after construction. */
  sink: ((line: AuditLine) => void) | null;
  /** `minApplyAt`: the earliest apply_at_step every rank can meet (engine/outbox.ts). */
  onStepResult(r: StepResult, o?: { minApplyAt?: number }): Directive | null;
  /** The last onStepResult's findings as reply metrics: `findings/n`, and `findings/severity` (info 0 … critical 3) when n > 0. */
  findingMetrics(): Record<string, number>;
  onAck(a: Ack): void;
  onCheckpoint(step: number, path: string): void;
  /** The no-op reply, carrying the certified checkpoints the shim must protect. */
  noop(step: number): Directive;
  snapshot(): ControllerSnapshot;
}

// The shim's scale too (python-shim events.py): info 0, warn 1, high 2, critical 3.
const SEVERITY_LEVEL: Record<Severity, number> = { info: 0, warn: 1, high: 2, critical: 3 };

export function controlHooks(o: {
  policy?: Policy; policyFile?: string; snapshot?: ControllerSnapshot | null; sink?: (line: AuditLine) => void;
  /** Adds evidence to the step's findings before they are audited (engine/forensics.ts: top tokens). */
  evidence?: (findings: Finding[], r: StepResult) => void;
} = {}): ControlHooks {
  const controller = new Controller(o.policy ?? loadPolicy(o.policyFile));
  if (o.snapshot) controller.restore(o.snapshot);
  const evidence = o.evidence;
  let last: Finding[] = [];
  const hooks: ControlHooks = {
    controller,
    sink: o.sink ?? null,
    onStepResult(r, o) {
      // apply_at_step = max(step, nowStep) + lag: nowStep = minApplyAt - lag makes it max(step + lag, minApplyAt).
      const nowStep = o?.minApplyAt === undefined ? undefined : Math.max(r.step, o.minApplyAt - controller.policy.lag);
      const d = controller.onStepResult(r, { nowStep });
      evidence?.(d.findings, r);
      last = d.findings;
      for (const line of auditRecords(d)) hooks.sink?.(line);
      return d.directive;
    },
    onAck(a) {
      hooks.sink?.(auditAck(a));
      for (const line of controller.onAck(a)) hooks.sink?.(line);
    },
    onCheckpoint(step, path) {
      for (const line of controller.onCheckpoint(step, path)) hooks.sink?.(line);
    },
    // No severity without findings: 0 would read as `info`.
    findingMetrics(): Record<string, number> {
      return last.length ? { 'findings/n': last.length, 'findings/severity': Math.max(...last.map((f) => SEVERITY_LEVEL[f.severity])) } : { 'findings/n': 0 };
    },
    noop: (step) => controller.noop(step),
    snapshot: () => controller.snapshot(),
  };
  return hooks;
}
