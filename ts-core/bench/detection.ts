// Detection quality on synthetic streams: per detector, steps from onset to the first warn and
// the first high, false alarms per 1000 healthy (or benign) steps, and the lead over an
// aggregate-only detector (global KL k3, or mean |ℓ| over all tokens, crossing a threshold
// calibrated on a separate healthy stream).
// Run: npx tsx ts-core/bench/detection.ts [--healthy-steps N] [--steps N] [--onset S] [--seed N] [--policy FILE]
import { DetectorSet, levelOf } from '../src/detect/index.ts';
import { loadPolicy } from '../src/policy/load.ts';
import type { Finding, StepResult } from '../src/types.ts';
import { GEN_DEFAULTS, statsStream as stream, type ScenarioName } from './synthetic.ts';

const args = process.argv.slice(2);
const arg = (name: string, dflt: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const HEALTHY_STEPS = arg('--healthy-steps', 2000);
const EVENT_STEPS = arg('--steps', 200);
const ONSET = arg('--onset', 60);
const SEED = arg('--seed', 7);
const POLICY_FILE = args.includes('--policy') ? args[args.indexOf('--policy') + 1] : undefined;
const POLICY = loadPolicy(POLICY_FILE);

interface Run {
  findings: Finding[];
  agg: { kl: number[]; absMean: number[] };
  steps: number;
}

function run(results: Iterable<StepResult>): Run {
  const set = new DetectorSet(POLICY.detectors);
  const out: Run = { findings: [], agg: { kl: [], absMean: [] }, steps: 0 };
  for (const r of results) {
    out.steps++;
    out.findings.push(...set.evaluate(r));
    const all = r.records.find((x) => x.pair === 'policy_vs_ref' && x.slice === 'all');
    out.agg.kl.push(all?.kl_k3 ?? NaN);
    out.agg.absMean.push(all?.abs_mean ?? NaN);
  }
  return out;
}

/** Aggregate-only detector: 3 of the last 4 steps above a threshold (the same hysteresis as ours). */
function aggregateFirst(values: number[], threshold: number, from = 0): number | null {
  for (let i = Math.max(3, from); i < values.length; i++) {
    let c = 0;
    for (let j = i - 3; j <= i; j++) if (values[j] > threshold) c++;
    if (c >= 3) return i + 1; // steps are 1-based
  }
  return null;
}

function aggregateAlarms(values: number[], threshold: number): number {
  let alarms = 0;
  let on = false;
  for (let i = 3; i < values.length; i++) {
    let c = 0;
    for (let j = i - 3; j <= i; j++) if (values[j] > threshold) c++;
    if (c >= 3 && !on) alarms++;
    on = c >= 3 ? true : c === 0 ? false : on;
  }
  return alarms;
}

const raises = (fs: Finding[], det?: string, min = 'warn') =>
  fs.filter((f) => (!det || f.detector === det) && (f.evidence as any)?.event === 'raise' && levelOf(f.severity) >= levelOf(min as any));
const first = (fs: Finding[], det: string, sev: string) => raises(fs, det, sev).find((f) => f.step >= ONSET)?.step ?? null;

function calibrate(vals: number[]): number {
  const v = vals.filter(Number.isFinite);
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  const sd = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length);
  return Math.max(...v, m + 4 * sd);
}

const t0 = Date.now();
const DETS = ['post_tool_tail_growth', 'ess_collapse', 'exceedance', 'nonfinite', 'alpha_ramp', 'mismatch_growth', 'rank_outlier'];

// Healthy: false alarms, and the calibration of the aggregate-only detectors (separate seed).
const calib = run(stream('healthy', HEALTHY_STEPS, 0, SEED + 1000));
const thrKl = calibrate(calib.agg.kl);
const thrAbs = calibrate(calib.agg.absMean);
const healthy = run(stream('healthy', HEALTHY_STEPS, 0, SEED));
const benign = run(stream('benign_drift', HEALTHY_STEPS, 0, SEED + 1));
const SMALL = 16;
const small = run(stream('healthy', HEALTHY_STEPS, 0, SEED + 3, { seqsPerRank: SMALL }));
const per1000 = (r: Run, det?: string) => ((raises(r.findings, det).length / r.steps) * 1000).toFixed(2);

console.log(`# tailguard detection quality\n`);
console.log(`statistics: ts-core/src/stats RunStats (window 20)`);
console.log(`stream: ${GEN_DEFAULTS.seqsPerRank} sequences × ${GEN_DEFAULTS.seqLen} tokens per rank per step (tool output ${GEN_DEFAULTS.toolLen}), seed ${SEED}, policy ${POLICY_FILE ?? 'default'}`);
console.log(`aggregate-only thresholds (calibrated on ${HEALTHY_STEPS} healthy steps, seed ${SEED + 1000}): global KL k3 > ${thrKl.toPrecision(4)}, mean |ℓ| > ${thrAbs.toPrecision(4)}\n`);

console.log(`## False alarms per 1000 steps (raises at warn or above)\n`);
console.log(`| detector | healthy (${HEALTHY_STEPS} steps) | benign slow drift (${HEALTHY_STEPS} steps) | small healthy: ${SMALL} seqs/step (${HEALTHY_STEPS} steps) |`);
console.log(`|---|---|---|---|`);
for (const d of DETS) console.log(`| ${d} | ${per1000(healthy, d)} | ${per1000(benign, d)} | ${per1000(small, d)} |`);
const aggRow = (name: string, key: 'kl' | 'absMean', thr: number) =>
  console.log(`| aggregate-only: ${name} | ${((aggregateAlarms(healthy.agg[key], thr) / healthy.steps) * 1000).toFixed(2)} | ${((aggregateAlarms(benign.agg[key], thr) / benign.steps) * 1000).toFixed(2)} | (not calibrated for this size) |`);
aggRow('global KL k3', 'kl', thrKl);
aggRow('mean |ℓ| (all tokens)', 'absMean', thrAbs);

const events: { name: ScenarioName; expect: string[] }[] = [
  { name: 'tail_growth', expect: ['post_tool_tail_growth', 'ess_collapse', 'exceedance'] },
  { name: 'alpha_ramp', expect: ['alpha_ramp'] },
  { name: 'mismatch_growth', expect: ['mismatch_growth'] },
  { name: 'rank_outlier', expect: ['rank_outlier'] },
  { name: 'nonfinite', expect: ['nonfinite'] },
];
console.log(`\n## Event streams (onset at step ${ONSET}, ${EVENT_STEPS} steps)\n`);
console.log(`Steps from onset to the first finding (— = none). Lead = aggregate-only first alarm minus this detector's first warn (positive: earlier).\n`);
console.log(`| stream | detector | first warn | first high / critical | lead vs global KL | lead vs mean abs ℓ | other detectors raised (warn+) |`);
console.log(`|---|---|---|---|---|---|---|`);
for (const ev of events) {
  const r = run(stream(ev.name, EVENT_STEPS, ONSET, SEED + 2));
  const aggKl = aggregateFirst(r.agg.kl, thrKl, ONSET - 1);
  const aggAbs = aggregateFirst(r.agg.absMean, thrAbs, ONSET - 1);
  const others = [...new Set(raises(r.findings).filter((f) => !ev.expect.includes(f.detector)).map((f) => `${f.detector}@${f.step - ONSET >= 0 ? '+' : ''}${f.step - ONSET}`))];
  for (const d of ev.expect) {
    const w = first(r.findings, d, 'warn');
    const h = first(r.findings, d, 'high');
    const rel = (s: number | null) => (s === null ? '—' : String(s - ONSET));
    const lead = (agg: number | null) => (w === null ? '—' : agg === null ? `> ${EVENT_STEPS - w} (aggregate never fired)` : String(agg - w));
    console.log(`| ${ev.name} | ${d} | ${rel(w)} | ${rel(h)} | ${lead(aggKl)} | ${lead(aggAbs)} | ${d === ev.expect[0] ? others.join(', ') || 'none' : ''} |`);
  }
  if (ev.name === 'alpha_ramp') {
    const fp = raises(r.findings, 'post_tool_tail_growth').length;
    console.log(`| alpha_ramp | post_tool_tail_growth (must stay silent) | ${fp ? `${fp} raise(s)` : 'silent'} | | aggregate KL ${aggKl === null ? 'silent' : `fired at +${aggKl - ONSET}`} | aggregate mean abs ℓ ${aggAbs === null ? 'silent' : `fired at +${aggAbs - ONSET}`} | |`);
  }
}
console.error(`\n(${((Date.now() - t0) / 1000).toFixed(1)} s)`);
