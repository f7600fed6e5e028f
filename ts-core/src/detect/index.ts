// Runs every enabled detector on a StepResult, passes each key through its hysteresis latch,
// and turns latch events into Findings. State is JSON for snapshot/restore.
import type { Finding, StepResult } from '../types.ts';
import { History, type HistoryState } from './history.ts';
import { newLatch, updateLatch, type LatchState } from './latch.ts';
import { severityOf, type Level } from './levels.ts';
import { alphaRamp, type AlphaRampOptions } from './detectors/alpha_ramp.ts';
import { essCollapse, type EssCollapseOptions } from './detectors/ess_collapse.ts';
import { exceedance, type ExceedanceOptions } from './detectors/exceedance.ts';
import { mismatchGrowth, type MismatchGrowthOptions } from './detectors/mismatch_growth.ts';
import { nonfinite, type NonfiniteOptions } from './detectors/nonfinite.ts';
import { postToolTailGrowth, type PostToolTailGrowthOptions } from './detectors/post_tool_tail_growth.ts';
import { rankMissing } from './detectors/rank_missing.ts';
import { rankOutlier, type RankOutlierOptions } from './detectors/rank_outlier.ts';
import type { Detector, DetectorCommon } from './types.ts';

export interface DetectorsOptions {
  post_tool_tail_growth: PostToolTailGrowthOptions;
  ess_collapse: EssCollapseOptions;
  exceedance: ExceedanceOptions;
  nonfinite: NonfiniteOptions;
  alpha_ramp: AlphaRampOptions;
  mismatch_growth: MismatchGrowthOptions;
  rank_outlier: RankOutlierOptions;
  rank_missing: DetectorCommon;
}

export type DetectorName = keyof DetectorsOptions;

export const DETECTORS: Record<DetectorName, Detector<any>> = {
  post_tool_tail_growth: postToolTailGrowth,
  ess_collapse: essCollapse,
  exceedance,
  nonfinite,
  alpha_ramp: alphaRamp,
  mismatch_growth: mismatchGrowth,
  rank_outlier: rankOutlier,
  rank_missing: rankMissing,
};

/** A detector key currently latched at warn or above (or info). */
export interface ActiveFinding {
  detector: DetectorName;
  key: string;
  level: Level;
  onset: number | null;
}

export interface DetectorSetState {
  history: HistoryState;
  latches: Record<string, LatchState>;
}

export class DetectorSet {
  readonly history = new History();
  private latches: Record<string, LatchState> = {};

  constructor(private readonly opts: DetectorsOptions) {}

  evaluate(r: StepResult): Finding[] {
    this.history.push(r);
    const findings: Finding[] = [];
    for (const name of Object.keys(DETECTORS) as DetectorName[]) {
      const o = this.opts[name];
      if (!o?.enabled) continue;
      let signals;
      try {
        signals = DETECTORS[name].evaluate(this.history, r, o);
      } catch (err) {
        // A detector bug must not take the engine down; report it once per step instead.
        findings.push({ detector: name, severity: 'info', step: r.step, message: `detector failed: ${(err as Error).message}`, evidence: { error: String(err) } });
        continue;
      }
      for (const s of signals) {
        const id = `${name}:${s.key}`;
        const latch = (this.latches[id] ??= newLatch());
        const before = latch.level;
        const ev = updateLatch(latch, r.step, s.raise, s.hold, o);
        if (!ev) continue;
        const base = { detector: name, step: r.step, ...(s.pair && { pair: s.pair }), ...(s.slice && { slice: s.slice }), ...(s.rank !== undefined && { rank: s.rank }) };
        const hysteresis = { raise_k: o.raise_k, raise_n: o.raise_n, clear_steps: o.clear_steps, cooldown_steps: o.cooldown_steps, onset_step: latch.onset };
        if (ev === 'clear') {
          findings.push({
            ...base,
            severity: 'info',
            message: `cleared (was ${severityOf(before)}): ${s.message}`,
            evidence: { ...s.evidence, event: 'clear', cleared_from: severityOf(before), level: latch.level ? severityOf(latch.level) : null, hysteresis },
          });
        } else {
          findings.push({ ...base, severity: severityOf(latch.level), message: s.message, evidence: { ...s.evidence, event: ev, hysteresis } });
        }
      }
    }
    return findings;
  }

  /** Keys latched at `min` or above right now. */
  active(min: Level = 2): ActiveFinding[] {
    const out: ActiveFinding[] = [];
    for (const [id, l] of Object.entries(this.latches)) {
      if (l.level < min) continue;
      const i = id.indexOf(':');
      out.push({ detector: id.slice(0, i) as DetectorName, key: id.slice(i + 1), level: l.level, onset: l.onset });
    }
    return out;
  }

  /** Forget trends and latched levels (after a rollback the trajectory they described is gone). */
  reset(): void {
    this.history.reset();
    this.latches = {};
  }

  snapshot(): DetectorSetState {
    return { history: this.history.snapshot(), latches: structuredClone(this.latches) };
  }

  restore(s: DetectorSetState): void {
    this.history.restore(s.history);
    this.latches = structuredClone(s.latches);
  }
}

export { History } from './history.ts';
export { levelOf, severityOf, type Level } from './levels.ts';
export type { DetectorCommon, Signal, Detector } from './types.ts';
