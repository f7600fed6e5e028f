// The flat metrics of a step that every directive reply carries (engine/run.ts), named like the trainer's log keys.
import type { StepResult } from '../types.ts';

/** Headline metrics sent back in each directive reply, flat `"<pair>/<slice>/<metric>"` (implicit pairs
 *  are identically 0 and left out). The shim picks the few it logs by default from these (python-shim/logmetrics.py). */
export const HEADLINE_METRICS = ['n', 'nonfinite', 'abs_mean', 'abs_q95', 'abs_q99', 'abs_q999', 'abs_max', 'ess', 'ess_seq', 'kl_k3', 'exceed_2', 'clip_frac', 'alpha'] as const;

export function headlineMetrics(r: StepResult): Record<string, number> {
  const out: Record<string, number> = {};
  for (const rec of r.records) {
    if (rec.implicit) continue;
    for (const m of HEADLINE_METRICS) {
      const v = rec[m];
      if (typeof v === 'number') out[`${rec.pair}/${rec.slice}/${m}`] = v;
    }
  }
  return out;
}

