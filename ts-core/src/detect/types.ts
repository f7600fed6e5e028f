// Detector contract and option blocks. The option names are the policy file keys (docs/policy.md).
import type { PairName, SliceName, StepResult } from '../types.ts';
import type { HysteresisOptions } from './latch.ts';
import type { Level, Thresholds } from './levels.ts';
import type { History } from './history.ts';

/** Options every detector has. */
export interface DetectorCommon extends HysteresisOptions {
  enabled: boolean;
  pairs: PairName[];
  slices: SliceName[];
  /** A slice with fewer tokens in a step is not judged that step (too noisy). */
  min_tokens: number;
  /** Relative slack on every threshold for holding an active level (hysteresis clear test). */
  clear_margin: number;
}

/** One detector's reading of one key (pair/slice/rank) at one step, before hysteresis. */
export interface Signal {
  key: string;
  pair?: PairName;
  slice?: SliceName;
  rank?: number;
  raise: Level;
  hold: Level;
  message: string;
  evidence: Record<string, unknown>;
}

export interface Detector<C extends DetectorCommon = DetectorCommon> {
  name: string;
  evaluate(h: History, r: StepResult, cfg: C): Signal[];
}

export type { Thresholds };
