// The policy object, exactly the keys of ts-core/policy/default.yaml (documented in docs/policy.md).
import type { DetectorsOptions } from '../detect/index.ts';

export interface Policy {
  mode: 'observe' | 'control';
  lag: number;
  min_steps_between_directives: number;
  ack_timeout_steps: number;
  warn_cooldown_steps: number;
  escalate_on: 'warn' | 'high' | 'critical';
  tighten: {
    max_tightens: number;
    beta: { enabled: boolean; factor: number; from_zero: number | null; max: number };
    epsilon: { enabled: boolean; factor: number; min: number };
    is_clip_max: { enabled: boolean; factor: number; min: number };
    off_policy_mask_threshold: { enabled: boolean; initial: number; factor: number; min: number };
  };
  rollback: { max_rollbacks: number; skip_data: boolean; when_unavailable: 'stop' | 'warn' };
  checkpoints: { certify_after: number; window: number; keep: number };
  curriculum: { enabled: boolean; min_severity: 'info' | 'warn' | 'high' | 'critical'; margin: number; min_alpha_max: number };
  stop: { enabled: boolean };
  detectors: DetectorsOptions;
}

/** Recursive partial, for overrides. */
export type PolicyOverride = { [K in keyof Policy]?: Policy[K] extends object ? DeepPartial<Policy[K]> : Policy[K] };
export type DeepPartial<T> = T extends (infer U)[] ? U[] : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;
