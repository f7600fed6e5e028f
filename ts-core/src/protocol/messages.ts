// Header shapes of protocol v1, mirroring proto/v1/*.schema.json. Field names are the wire names.
import type { Action, Knobs, TrainerLogs } from '../types.ts';

export const MESSAGE_TYPES = ['hello', 'welcome', 'step', 'directive', 'ack', 'error', 'bye'] as const;
export type MessageType = (typeof MESSAGE_TYPES)[number];
/** Types an engine accepts from a client; the rest are engine→client only. */
export const CLIENT_TYPES: ReadonlySet<string> = new Set(['hello', 'step', 'ack', 'bye']);

export type Version = [major: number, minor: number];

export interface BufferDesc {
  name: string;
  dtype: Dtype;
  length: number;
}

export type Dtype = 'f32' | 'u8' | 'i32' | 'u16' | 'u32' | 'f64';
export type TypedArray = Float32Array | Float64Array | Uint8Array | Uint16Array | Int32Array | Uint32Array;

interface Base {
  type: MessageType;
  version: Version;
  /** Buffer descriptors; absent means none. Only `step` defines buffer names in v1. */
  buffers?: BufferDesc[];
  [unknown: string]: unknown;
}

export interface Limits {
  max_message_bytes: number;
  max_frame_bytes: number;
  max_frames: number;
  max_header_bytes: number;
  max_tokens_per_step: number;
  step_timeout_ms: number;
  /** v1.1: buffer bytes of one rank's step over all its chunks. */
  max_step_bytes?: number;
  /** v1.1: `chunk.count` of a step. */
  max_step_chunks?: number;
}

export interface HelloHeader extends Base {
  type: 'hello';
  run_id: string;
  rank: number;
  world_size: number;
  trainer: string;
  mode?: 'raw' | 'sketch';
  config?: Record<string, unknown>;
  client?: Record<string, unknown>;
  /** Ask for `received.checksum` in directives (default true; false saves ~2 ns/byte on the engine). */
  checksum?: boolean;
  /** v1.1: false = a new run (E_RUN_EXISTS over stored steps), true = continue; absent = v1.0 (continue). */
  resume?: boolean;
}

export interface WelcomeHeader extends Base {
  type: 'welcome';
  run_id: string;
  rank: number;
  session: string;
  engine: { name: string; version: string };
  limits: Limits;
  resume: { last_step: number | null } | null;
  /** v1.1: D of the directive contract (proto/README.md). */
  directive_lag?: number;
}

export interface StepHeader extends Base {
  type: 'step';
  run_id: string;
  rank: number;
  world_size: number;
  step: number;
  chunk: { index: number; count: number };
  tokens: number;
  n_seqs: number;
  buffers: BufferDesc[];
  implicit?: string[];
  knobs?: Knobs;
  logs?: TrainerLogs;
  slice_names?: string[];
  sent_at?: number;
  sketch?: boolean;
}

export interface SliceCounts {
  all: number;
  pre_tool: number;
  post_tool: number;
  tool_output: number;
}

export interface Received {
  tokens: number;
  n_seqs: number;
  slices: SliceCounts;
  checksum: number | null;
}

export interface WireDirective {
  id: string;
  action: Action;
  step: number;
  apply_at_step: number;
  params: Record<string, unknown>;
  reason: string;
  evidence: Record<string, unknown>;
}

export interface DirectiveHeader extends Base {
  type: 'directive';
  run_id: string;
  rank: number;
  step: number;
  directive: WireDirective;
  received: Received;
  metrics: Record<string, number | null>;
  metrics_step: number | null;
  /** v1.1: highest step of the run durably in the run store (null: none). */
  recorded_through?: number | null;
}

/** Client form: a directive was applied or refused. */
export interface AckHeader extends Base {
  type: 'ack';
  run_id: string;
  rank: number;
  directive_id: string;
  step: number;
  applied: boolean;
  changes?: { knob: string; old: number | null; new: number | null }[];
  refused?: string | null;
}

/** Engine form: acknowledges a client message (v1: only `bye`). */
export interface EngineAckHeader extends Base {
  type: 'ack';
  of: string;
  run_id: string;
  rank: number;
  /** v1.1 (bye ack): as in DirectiveHeader. */
  recorded_through?: number | null;
}

export interface ErrorHeader extends Base {
  type: 'error';
  code: string;
  message: string;
  fatal: boolean;
  ref?: { type?: string; run_id?: string; rank?: number; step?: number; chunk?: number };
}

export interface ByeHeader extends Base {
  type: 'bye';
  run_id: string;
  rank: number;
  last_step?: number | null;
  stats?: Record<string, number>;
}

export type Header =
  | HelloHeader
  | WelcomeHeader
  | StepHeader
  | DirectiveHeader
  | AckHeader
  | EngineAckHeader
  | ErrorHeader
  | ByeHeader;
