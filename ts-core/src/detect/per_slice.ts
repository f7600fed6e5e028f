// The loop most detectors share: one signal per configured pair × slice that has a record with at
// least `min_tokens` tokens this step, keyed `pair/slice`.
import type { MetricRecord, PairName, SliceName, StepResult } from '../types.ts';
import { recordOf } from './history.ts';
import type { DetectorCommon, Signal } from './types.ts';

/** What a detector reads from one pair × slice; undefined means no reading this step. */
export type SliceReading = Omit<Signal, 'key' | 'pair' | 'slice'>;

export function perSlice(
  r: StepResult,
  o: DetectorCommon,
  read: (rec: MetricRecord, pair: PairName, slice: SliceName) => SliceReading | undefined,
): Signal[] {
  const out: Signal[] = [];
  for (const pair of o.pairs)
    for (const slice of o.slices) {
      const rec = recordOf(r, pair, slice, o.min_tokens);
      const reading = rec && read(rec, pair, slice);
      if (reading) out.push({ key: `${pair}/${slice}`, pair, slice, ...reading });
    }
  return out;
}
