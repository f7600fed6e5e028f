// Shared engine types: the contract between transport, stats, detect/policy, store and UI.
// Field names here are the names on the wire, in the run store and in the shim. One idea, one name.

export const PAIRS = ['policy_vs_old', 'policy_vs_ref', 'old_vs_rollout'] as const;
export type PairName = (typeof PAIRS)[number];

/** Built-in slices. User slices from `slice_ids` are named `user:<name>`. */
export const BUILTIN_SLICES = ['all', 'pre_tool', 'post_tool', 'tool_output'] as const;
export type SliceName = (typeof BUILTIN_SLICES)[number] | `user:${string}`;

/** The trainer's live knobs, as the shim reports them in each step header. */
export interface Knobs {
  beta?: number;
  epsilon_low?: number;
  epsilon_high?: number;
  /** Upper bound of the importance-sampling ratio clip (GRPO `vllm_importance_sampling_cap` or delta). */
  is_clip_max?: number;
  off_policy_mask_threshold?: number | null;
  [k: string]: number | null | undefined;
}

/** The trainer's own logged scalars for the step (loss, reward, kl, entropy, ...). */
export type TrainerLogs = Record<string, number>;

/** One rank's fully assembled raw step (all chunks), viewed as typed arrays. */
export interface StepData {
  runId: string;
  rank: number;
  worldSize: number;
  step: number;
  trainer: string;
  /** Length T each; only pairs the trainer has. */
  pairs: Partial<Record<PairName, Float32Array>>;
  /** Pairs that are identically 0 by construction (e.g. GRPO num_iterations=1 policy_vs_old). */
  implicit: PairName[];
  completionMask: Uint8Array; // length T
  toolMask: Uint8Array; // length T; 1 = model token, 0 = tool output (TRL convention)
  offsets: Int32Array; // length nSeqs+1, offsets[0]=0, offsets[nSeqs]=T
  sliceIds?: Uint16Array; // length T
  sliceNames?: string[]; // sliceIds value -> name
  advantages?: Float32Array; // per sequence
  rewards?: Float32Array; // per sequence
  groupIds?: Int32Array; // per sequence
  /** Token ids (`send_token_ids`), length T: they name the top-k tokens of findings (stats/topk.ts). */
  tokenIds?: Int32Array;
  knobs: Knobs;
  logs: TrainerLogs;
  receivedAt: number; // ms epoch
}

/** The per-step statistics, exactly the field names of issue 3. One per step × pair × slice. */
export interface MetricRecord {
  step: number;
  pair: PairName;
  slice: SliceName;
  n: number;
  nonfinite: number;
  mean: number;
  abs_mean: number;
  std: number;
  abs_q50: number;
  abs_q90: number;
  abs_q95: number;
  abs_q99: number;
  abs_q999: number;
  abs_max: number;
  exceed_1_5: number;
  exceed_2: number;
  exceed_3: number;
  ess: number;
  ess_seq: number;
  ess_seq_norm: number;
  chi2: number;
  kl_k1: number;
  kl_k2: number;
  kl_k3: number;
  clip_frac: number;
  alpha: number;
  implicit?: boolean;
}

export interface ShapeChange {
  ks: number;
  w1_log: number;
  dq50: number;
  dq90: number;
  dq95: number;
  dq99: number;
  tail_stretch: number;
}

export interface WindowRecord {
  step: number; // last step in the window
  first_step: number;
  pair: PairName;
  slice: SliceName;
  n: number;
  alpha: number;
  abs_q50: number;
  abs_q90: number;
  abs_q95: number;
  abs_q99: number;
  abs_q999: number;
  cdf: { p: number[]; q: number[] }; // |ℓ| quantiles on a fixed grid
  shape?: { fixed?: ShapeChange; drift_aware?: ShapeChange };
  attribution?: { d_mean: number; alpha_term: number; pre_term: number; post_term: number };
}

export interface RankSummary {
  rank: number;
  tokens: number;
  /** headline per pair: slice -> {n, abs_q99, abs_mean, ess} */
  pairs: Partial<Record<PairName, Record<string, { n: number; abs_q99: number; abs_mean: number; ess: number }>>>;
}

/** What the stats engine produces when a step is final (all ranks in, or timed out). */
export interface StepResult {
  runId: string;
  step: number;
  worldSize: number;
  ranksPresent: number[];
  ranksMissing: number[];
  tokens: number;
  records: MetricRecord[];
  windows: WindowRecord[]; // windows closed/updated at this step
  perRank: RankSummary[];
  knobs: Knobs;
  logs: TrainerLogs;
  /** Forensics: `${pair}/${slice}` → the top-k tokens by |ℓ| of the step, best first (stats/topk.ts). */
  topTokens?: Record<string, TopToken[]>;
  /** The same per trainer rank (rank → key → list), so a rank finding names its own tokens. */
  rankTopTokens?: Record<number, Record<string, TopToken[]>>;
}

/** One token of a top-k |ℓ| list (forensics). `rank` is the trainer rank; list order is the top-k order. */
export interface TopToken {
  rank: number;
  /** Sequence index within that rank's step (the order of `offsets`). */
  seq: number;
  /** Position of the token within its sequence (0 = first completion token). */
  pos: number;
  /** The signed log-ratio ℓ (float32 as sent). */
  value: number;
  token_id?: number;
  /** Decoded text of the token, when the engine has the run's tokenizer (docs/detection.md "Evidence"). */
  text?: string;
}

export type Severity = 'info' | 'warn' | 'high' | 'critical';

export interface Finding {
  detector: string;
  severity: Severity;
  step: number;
  pair?: PairName;
  slice?: SliceName;
  rank?: number;
  message: string;
  evidence: Record<string, unknown>;
}

export type Action = 'noop' | 'warn' | 'tighten' | 'rollback' | 'stop' | 'curriculum';

export interface Directive {
  id: string;
  action: Action;
  step: number; // the step that triggered it
  apply_at_step: number;
  params: Record<string, unknown>;
  reason: string;
  evidence: Record<string, unknown>;
}

// ---- shared by engine/, stats/ and store/ (here so that no lower layer imports engine/) ----

export interface SketchSlice {
  hist: Float64Array; // HIST_BINS counts of finite |ℓ|
  sums: Float64Array; // SUMS_FIELDS in order
}

/** One sketch step: every rank's data for `step`, merged. Arrays are copies (safe to keep). */
export interface SketchStepData {
  runId: string;
  step: number;
  worldSize: number;
  trainer: string;
  tokens: number;
  nSeqs: number;
  sliceCounts: { pre_tool: number; post_tool: number; tool_output: number };
  /** key `${pair}/${slice}` */
  slices: Map<string, SketchSlice>;
  pairs: PairName[];
  implicit: PairName[];
  knobs: Knobs;
  logs: TrainerLogs;
  receivedAt: number;
  /** Each rank's own summary (`sketch/per_rank`), as raw mode's StepResult.perRank; absent when not sent. */
  perRank?: RankSummary[];
}

/** What a run's pipeline is built from (engine/pipeline.ts buildPipeline; store/hooks.ts). */
export interface PipelineContext {
  runId: string;
  worldSize: number;
  trainer: string;
  config: Record<string, unknown>;
  /** Root of run stores (`--run-dir`); a run's store lives in `<runDir>/<runId>`. */
  runDir: string;
  /** The serve options as parsed by the CLI (window, step timeout, policy file, ...). */
  options: Record<string, unknown>;
  log: PipelineLog;
}

/** The log calls a pipeline makes. pino's Logger fits; declared here so the public types need no pino (a dev dependency). */
export interface PipelineLog {
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  error(obj: unknown, msg?: string): void;
}
