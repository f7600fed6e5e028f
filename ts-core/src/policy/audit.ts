// directives.jsonl lines: every finding, directive, ack and checkpoint decision, tagged by `kind`,
// in the order they happened, so the file alone tells the story of a run.
import type { Directive, Finding } from '../types.ts';
import type { CheckpointEvent } from './checkpoints.ts';
import type { Ack } from './controller.ts';

export type AuditLine =
  | ({ kind: 'finding' } & Finding)
  | ({ kind: 'directive' } & Directive)
  | CheckpointEvent
  | { kind: 'ack'; step: number; rank: number; directive_id: string; applied: boolean; changes: { knob: string; old: unknown; new: unknown }[]; refused: string | null };

/** The audit lines of one step decision: checkpoint events first, then findings, then the directive. */
export function auditRecords(d: { findings: Finding[]; directive: Directive | null; events?: CheckpointEvent[] }): AuditLine[] {
  return [
    ...(d.events ?? []),
    ...d.findings.map((f) => ({ kind: 'finding' as const, ...f })),
    ...(d.directive && d.directive.action !== 'noop' ? [{ kind: 'directive' as const, ...d.directive }] : []),
  ];
}

export function auditAck(a: Ack): AuditLine {
  return { kind: 'ack', step: a.step ?? -1, rank: a.rank ?? 0, directive_id: a.directive_id, applied: a.applied, changes: a.changes ?? [], refused: a.refused ?? null };
}
