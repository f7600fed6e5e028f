// Public surface of detection + policy.
export { Controller, type Ack, type StepDecision, type ControllerSnapshot } from './controller.ts';
export { loadPolicy, defaultPolicy, validatePolicy, deepMerge, PolicyError, DEFAULT_POLICY_FILE } from './load.ts';
export { planTighten, TIGHTEN_KNOBS } from './tighten.ts';
export { auditRecords, auditAck, type AuditLine } from './audit.ts';
export type { Policy, PolicyOverride } from './types.ts';
export type { CheckpointEvent } from './checkpoints.ts';
export { controlHooks, type ControlHooks } from './hooks.ts';
