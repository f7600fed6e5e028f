// Record shapes of the run directory files (beyond MetricRecord/WindowRecord from ../types.ts).
import type { Action, Directive, Finding, Knobs, RankSummary, TrainerLogs } from '../types.ts';

/** run.json: written atomically, merged on each write. */
export interface RunMeta {
  run_id: string;
  created_at: string; // ISO time
  updated_at: string;
  versions: { tailguard: string; node: string; protocol: readonly number[] };
  trainer?: string;
  world_size?: number;
  window?: number;
  config?: Record<string, unknown>;
  policy?: unknown;
  /** One entry per engine start on this directory (resume history). */
  sessions?: { started_at: string; resumed_from_step: number | null; pid: number }[];
  [k: string]: unknown;
}

/** steps.jsonl: one line per finalised step. */
export interface StepEntry {
  step: number;
  world_size: number;
  tokens: number;
  tokens_per_rank: Record<string, number>;
  ranks_present: number[];
  ranks_missing: number[];
  knobs: Knobs;
  logs: TrainerLogs;
  per_rank?: RankSummary[];
}

/** directives.jsonl: findings, directives, acks and checkpoints, each tagged with `kind`. */
export type AuditEntry =
  | ({ kind: 'finding' } & Finding)
  | ({ kind: 'directive' } & Directive)
  | {
      kind: 'ack';
      step: number;
      rank: number;
      directive_id: string;
      applied: boolean;
      changes: { knob: string; old: unknown; new: unknown }[];
      refused: string | null;
      action?: Action;
    }
  | { kind: 'checkpoint'; step: number; path: string; certified: boolean; reason?: string };

/** state.json: everything needed to resume a run after an engine restart. */
export interface RunState {
  version: 1;
  last_step: number | null;
  stats: unknown; // RunStats.snapshot()
  controller: unknown; // Controller.snapshot()
  certified_checkpoints: { step: number; path: string }[];
  /** --state-every when saved (store/recover.ts tells from it which commit saved the state). */
  state_every?: number;
  saved_at: string;
}
