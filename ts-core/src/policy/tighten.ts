// `tighten` targets, computed from the live knobs of the step header: beta up by a factor
// (or from 0 to `from_zero`, which a trainer without a reference model refuses), epsilons and
// the IS clip bound down by a factor, the off-policy mask threshold set or lowered. All bounded.
import type { Knobs } from '../types.ts';
import type { Policy } from './types.ts';

export const TIGHTEN_KNOBS = ['beta', 'epsilon_low', 'epsilon_high', 'is_clip_max', 'off_policy_mask_threshold'] as const;

export interface TightenPlan {
  /** knob -> target value (the directive params). */
  targets: Record<string, number>;
  /** knob -> live value it replaces. */
  previous: Record<string, number | null>;
  /** knob -> why it is left alone. */
  skipped: Record<string, string>;
}

const tidy = (x: number) => Number(x.toPrecision(6));

export function planTighten(knobs: Knobs, t: Policy['tighten'], refused: ReadonlySet<string>): TightenPlan {
  const plan: TightenPlan = { targets: {}, previous: {}, skipped: {} };
  const set = (k: string, from: number | null, to: number) => {
    if (from !== null && tidy(to) === tidy(from)) {
      plan.skipped[k] = 'at its bound';
      return;
    }
    plan.targets[k] = tidy(to);
    plan.previous[k] = from;
  };
  const usable = (k: string, enabled: boolean): boolean => {
    if (!enabled) plan.skipped[k] = 'disabled by policy';
    else if (refused.has(k)) plan.skipped[k] = 'refused by the trainer earlier';
    else if (!(k in knobs) || knobs[k] === undefined) plan.skipped[k] = 'not reported by the trainer';
    else return true;
    return false;
  };

  if (usable('beta', t.beta.enabled)) {
    const b = knobs.beta;
    if (typeof b === 'number' && b > 0) set('beta', b, Math.min(b * t.beta.factor, Math.max(t.beta.max, b)));
    else if (t.beta.from_zero !== null && t.beta.from_zero > 0) set('beta', b ?? 0, Math.min(t.beta.from_zero, t.beta.max));
    else plan.skipped.beta = 'beta is 0 and from_zero is off';
  }
  for (const k of ['epsilon_low', 'epsilon_high'] as const) {
    if (!usable(k, t.epsilon.enabled)) continue;
    const e = knobs[k];
    if (typeof e === 'number' && e > 0) set(k, e, Math.max(e * t.epsilon.factor, Math.min(t.epsilon.min, e)));
    else plan.skipped[k] = 'not a positive number';
  }
  if (usable('is_clip_max', t.is_clip_max.enabled)) {
    const c = knobs.is_clip_max;
    if (typeof c === 'number' && c > 0) set('is_clip_max', c, Math.max(c * t.is_clip_max.factor, Math.min(t.is_clip_max.min, c)));
    else plan.skipped.is_clip_max = 'no IS clip bound in use';
  }
  const o = t.off_policy_mask_threshold;
  if (usable('off_policy_mask_threshold', o.enabled)) {
    const v = knobs.off_policy_mask_threshold;
    if (v === null) set('off_policy_mask_threshold', null, o.initial);
    else if (typeof v === 'number' && v > 0) set('off_policy_mask_threshold', v, Math.max(v * o.factor, Math.min(o.min, v)));
    else plan.skipped.off_policy_mask_threshold = 'not a positive number';
  }
  return plan;
}
