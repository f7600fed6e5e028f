// docs/detection.md's generated section: tables, the targets checklist and the SVG plots.
import { NUISANCE, type Family } from './detection-streams.ts';
import { BASELINES, BASELINE_LABEL, ONSET, WEIGHT_RATES, type BaselineName, type Evaluation, type Grid, type Scored } from './detection-grid.ts';
import { basePair, ORACLE_DESIGNS, standardise } from './detection-run.ts';
import { barPlot, delayPlot, type Line } from './detection-svg.ts';

const CAL = ['mean_abs', 'kl_k3', 'q99_drift_aware'] as const;
/** A baseline's label inside a markdown table cell. */
const cell = (b: BaselineName) => BASELINE_LABEL[b].replace(/\|/g, '\\|');
const d = (s: Scored, step: number | null) => (step === null ? null : step - s.r.spec.onset);
const horizon = (s: Scored) => s.r.spec.steps - s.r.spec.onset;
/** Median with "none" counted as +∞. */
function med(xs: (number | null)[]): number | null {
  const v = xs.map((x) => (x === null ? Infinity : x)).sort((a, b) => a - b);
  const m = v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
  return Number.isFinite(m) ? m : null;
}
const fmt = (x: number | null, h: number) => (x === null ? `> ${h}` : String(Math.round(x * 10) / 10));
const per1000 = (n: number, steps: number) => ((n / steps) * 1000).toFixed(2);

/** Alarm episodes of "3 consecutive steps > thr" from step `from` on. */
function episodes(values: number[], thr: number, from: number): number {
  let run = 0;
  let n = 0;
  for (let i = from - 1; i < values.length; i++) {
    run = Number.isFinite(values[i]) && values[i] > thr ? run + 1 : 0;
    if (run === 3) n++;
  }
  return n;
}

const earliestBase = (s: Scored) => {
  const v = CAL.map((b) => d(s, s.base[b])).filter((x): x is number => x !== null);
  return v.length ? Math.min(...v) : null;
};

function growthTable(rows: Scored[], rates: number[], unit: string, highWithin: number | null): { md: string[]; checks: Record<string, boolean> } {
  const md = [
    `| rate (${unit}) | seeds | tailguard warn | tailguard high (median [max]) | oracle | high ÷ oracle (median [max]) | ${CAL.map(cell).join(' | ')} | ${cell('ptt')} | lead of high over the earliest calibrated baseline (min over seeds) | cleared while growing |`,
    `|---|---|---|---|---|---|${CAL.map(() => '---|').join('')}---|---|---|`,
  ];
  const checks = { within: true, lead: true, notLater: true, oracle2x: true, neverCleared: true };
  for (const rate of rates) {
    const rs = rows.filter((s) => s.r.spec.rate === rate);
    if (!rs.length) continue;
    const H = Math.max(...rs.map(horizon));
    const highs = rs.map((s) => d(s, s.tgHigh));
    const ratios = rs.map((s) => (s.tgHigh !== null && s.oracle !== null ? d(s, s.tgHigh)! / Math.max(1, d(s, s.oracle)!) : null));
    const leads = rs.map((s) => {
      const h = d(s, s.tgHigh);
      const b = earliestBase(s);
      if (h === null) return b === null ? null : -Infinity;
      return b === null ? horizon(s) - h : b - h;
    });
    const minLead = leads.some((x) => x === null) ? null : Math.min(...(leads as number[]));
    const anyCensored = rs.some((s) => earliestBase(s) === null);
    const maxRatio = ratios.some((x) => x === null) ? null : Math.max(...(ratios as number[]));
    const cleared = rs.filter((s) => s.clearedWhileGrowing).length;
    if (highWithin !== null && rate >= 0.02 && highs.some((h) => h === null || h > highWithin)) checks.within = false;
    if (rate <= 0.1 && !(minLead !== null && minLead >= 20)) checks.lead = false;
    if (!(minLead !== null && minLead >= 0)) checks.notLater = false;
    if (!(maxRatio !== null && maxRatio <= 2)) checks.oracle2x = false;
    if (cleared) checks.neverCleared = false;
    md.push(
      `| ${rate} | ${rs.length} | ${fmt(med(rs.map((s) => d(s, s.tgWarn))), H)} | ${fmt(med(highs), H)} [${highs.some((x) => x === null) ? `> ${H}` : Math.max(...(highs as number[]))}] | ` +
        `${fmt(med(rs.map((s) => d(s, s.oracle))), H)} | ${fmt(med(ratios), Infinity)} [${maxRatio === null ? '—' : maxRatio.toFixed(2)}] | ` +
        `${CAL.map((b) => fmt(med(rs.map((s) => d(s, s.base[b]))), H)).join(' | ')} | ${fmt(med(rs.map((s) => d(s, s.base.ptt))), H)} | ` +
        `${minLead === null ? '— (no high)' : minLead === -Infinity ? 'later (no high)' : `${anyCensored ? '≥ ' : ''}${minLead}`} | ${cleared ? `${cleared} stream(s)` : 'never'} |`,
    );
  }
  return { md, checks };
}

export function report(ev: Evaluation, grid: Grid, meta: { seconds: number; cpuSeconds?: number; commit: string; machine: string; policy: string }): { markdown: string; svgs: Record<string, string> } {
  const S = ev.scored;
  const fam = (f: Family, group?: string) => S.filter((s) => s.r.spec.family === f && (!group || s.group === group));
  const out: string[] = [];
  out.push(`## Results (generated)`, '');
  out.push(`Command: \`npm run bench:detect\` — ${grid.specs.length} streams, ${grid.seeds} seeds per family, ${S.reduce((a, s) => a + s.r.spec.steps, 0)} steps, ` +
    `${meta.seconds.toFixed(0)} s wall${meta.cpuSeconds ? ` (${meta.cpuSeconds.toFixed(0)} s CPU)` : ''} on ${meta.machine}. Commit ${meta.commit}, policy ${meta.policy}. Stream seeds: ${grid.specs[0].seed}…${grid.specs[grid.specs.length - 1].seed} (per stream in \`buildGrid\`).`, '');
  out.push(`Delays are steps from onset (step ${ONSET}, the first changed step) to the first alarm at or after it; \`> H\`: none within the stream's horizon H.`);
  out.push(`Calibrated baselines raise an alarm after 3 consecutive steps over a threshold set to the lowest value at which they raise no more alarms on the ${ev.nuisanceStepsTotal} nuisance steps than tailguard raised at high or above (${ev.tgNuisanceHigh}):`);
  for (const pair of ['policy_vs_ref', 'old_vs_rollout'] as const)
    out.push(`- ${pair}: mean |ℓ| > μ + ${ev.thresholds[pair].mean_abs.toFixed(2)}σ (μ, σ of the stream's first ${ONSET - 1} steps); k3 KL > ${ev.thresholds[pair].kl_k3.toPrecision(3)}; log(q99 / drift-aware q99) > ${ev.thresholds[pair].q99_drift_aware.toPrecision(3)}.`);
  out.push(`- The oracle: a bank of ${ORACLE_DESIGNS.length} token-level likelihood-ratio CUSUMs on the changed slice, knowing its pre-change law and its law ${ORACLE_DESIGNS.join('/')} steps after onset; threshold h = ln(${ev.nuisanceStepsTotal} × ${ORACLE_DESIGNS.length}) = ${ev.oracleH.toFixed(2)}, so by Lorden's bound its false-alarm rate is at most tailguard's observed 0 in ${ev.nuisanceStepsTotal} steps.`);
  out.push('');

  // False alarms.
  out.push(`### False alarms per 1000 steps (nuisance streams: any alarm is false)`, '');
  out.push(`| stream family | steps | tailguard warn | tailguard high+ | control directives | ${CAL.map((b) => cell(b) + ' (calibrated)').join(' | ')} | mean \\|ℓ\\| + 3σ (uncalibrated) | ${cell('ptt')} |`);
  out.push(`|---|---|---|---|---|${CAL.map(() => '---|').join('')}---|---|`);
  const bars: Record<string, number[]> = { 'tailguard warn': [], 'tailguard high+': [], 'mean |ℓ| + 3σ (uncal.)': [], 'PTT as shipped': [] };
  const tot = { steps: 0, warn: 0, high: 0 };
  for (const f of NUISANCE) {
    const rs = fam(f);
    const steps = rs.reduce((a, s) => a + s.r.spec.steps, 0);
    const warn = rs.reduce((a, s) => a + s.warnRaises, 0);
    const high = rs.reduce((a, s) => a + s.highRaises, 0);
    tot.steps += steps; tot.warn += warn; tot.high += high;
    const cal = CAL.map((b) => rs.reduce((a, s) => a + episodes(b === 'mean_abs' ? standardise(s.r.base[basePair(s.r.spec)].absMean, ONSET - 1) : b === 'kl_k3' ? s.r.base.policy_vs_ref.kl : s.r.base.policy_vs_ref.q99, ev.thresholds.policy_vs_ref[b], ONSET), 0));
    const mean3 = rs.reduce((a, s) => a + episodes(standardise(s.r.base.policy_vs_ref.absMean, ONSET - 1), 3, ONSET), 0);
    const ptt = rs.reduce((a, s) => a + episodes(s.r.base.policy_vs_ref.kl.map((k, i) => (k > 0.3 || s.r.base.policy_vs_ref.ratio[i] < 0.5 ? 1 : 0)), 0.5, ONSET), 0);
    out.push(`| ${f} | ${steps} | ${per1000(warn, steps)} | ${per1000(high, steps)} | ${rs.reduce((a, s) => a + s.controlDirectives, 0)} | ${cal.map((c) => per1000(c, steps)).join(' | ')} | ${per1000(mean3, steps)} | ${per1000(ptt, steps)} |`);
    bars['tailguard warn'].push((warn / steps) * 1000);
    bars['tailguard high+'].push((high / steps) * 1000);
    bars['mean |ℓ| + 3σ (uncal.)'].push((mean3 / steps) * 1000);
    bars['PTT as shipped'].push((ptt / steps) * 1000);
  }
  out.push(`| **all nuisance** | ${tot.steps} | ${per1000(tot.warn, tot.steps)} | ${per1000(tot.high, tot.steps)} | | | | | | |`, '');
  out.push(`![false alarms per 1000 steps](detection-false-alarms.svg)`, '');

  // Growth.
  out.push(`### Post-tool growth of a 10× heavy component (α 0.3, 5k tokens per rank-step; law and ranks by seed: t3×8, normal×1, Laplace×2, t4×4, t5×1)`, '');
  const main = growthTable(fam('weight_growth', 'weight_growth'), WEIGHT_RATES, 'pp/step', 40);
  out.push(...main.md, '', `![delay against growth rate](detection-delay.svg)`, '');
  out.push(`#### The same growth under other conditions (law, α, tokens per rank-step, ranks)`, '');
  out.push(`| rate (pp/step) | law | α | tokens/rank-step | ranks | tailguard high | oracle | earliest calibrated baseline |`, `|---|---|---|---|---|---|---|---|`);
  for (const s of fam('weight_growth', 'conditions')) {
    const sp = s.r.spec;
    out.push(`| ${sp.rate} | ${sp.law} | ${sp.alpha} | ${sp.tokens} | ${sp.ranks} | ${fmt(d(s, s.tgHigh), horizon(s))} | ${fmt(d(s, s.oracle), horizon(s))} | ${fmt(earliestBase(s), horizon(s))} |`);
  }
  out.push('', `### Growth of the tail component's scale (1 % of post_tool tokens at 3σ, scale growing)`, '');
  const ts = growthTable(fam('tail_scale'), [...new Set(fam('tail_scale').map((s) => s.r.spec.rate))], '%/step', null);
  out.push(...ts.md, '', `### old_vs_rollout mismatch growing in post_tool (10× component over a Laplace background on every token; baselines on old_vs_rollout)`, '');
  const mm = growthTable(fam('mismatch'), [...new Set(fam('mismatch').map((s) => s.r.spec.rate))], 'pp/step', null);
  out.push(...mm.md, '');

  // Rank outlier and nonfinite.
  out.push(`### Rank outlier (rank 1's post_tool ℓ × factor from onset)`, '', `| factor | ranks | law | tailguard high naming rank 1 | warn |`, `|---|---|---|---|---|`);
  let rankOk = true;
  for (const s of fam('rank_outlier')) {
    const h = d(s, s.tgHigh);
    if (s.r.spec.rate >= 3 && (h === null || h > 20)) rankOk = false;
    out.push(`| ×${s.r.spec.rate} | ${s.r.spec.ranks} | ${s.r.spec.law} | ${fmt(h, horizon(s))} | ${fmt(d(s, s.tgWarn), horizon(s))} |`);
  }
  const nf = fam('nonfinite');
  const nfOk = nf.every((s) => d(s, s.tgHigh) === 0 && s.r.raises.some((x) => x.detector === 'nonfinite' && x.severity === 'critical' && x.step === s.r.spec.onset));
  out.push('', `NaN/Inf: \`nonfinite\` critical at the non-finite step itself in ${nf.filter((s) => d(s, s.tgHigh) === 0).length}/${nf.length} streams.`, '');

  // Targets.
  const nuisanceWarnRate = (tot.warn / tot.steps) * 1000;
  const t = (ok: boolean) => (ok ? '**met**' : '**not met**');
  out.push(`### Targets`, '');
  out.push(`| target | result |`, `|---|---|`);
  out.push(`| ≥ 0.02 pp/step at α 0.3, ≥ 5k tokens/rank-step: \`high\` within 40 steps | ${t(main.checks.within)} |`);
  out.push(`| ≤ 0.1 pp/step: \`high\` ≥ 20 steps before every calibrated aggregate baseline | ${t(main.checks.lead)} (lead column above) |`);
  out.push(`| nowhere on the grid later than a calibrated baseline | ${t(main.checks.notLater && ts.checks.notLater && mm.checks.notLater)} (heavy-component, tail-scale, mismatch tables) |`);
  out.push(`| delay ≤ 2× the oracle's | ${t(main.checks.oracle2x)} (max ratio per rate above; the oracle reads every token's likelihood, tailguard two quantiles per slice) |`);
  out.push(`| 0 findings at high+ over ≥ 10,000 nuisance steps; ≤ 1 warn per 1000 | ${t(tot.high === 0 && tot.steps >= 10000 && nuisanceWarnRate <= 1)} (${tot.high} high+ and ${tot.warn} warn raises in ${tot.steps} steps: ${nuisanceWarnRate.toFixed(2)} warn/1000) |`);
  out.push(`| a finding never clears while its evidence grows | ${t(main.checks.neverCleared && ts.checks.neverCleared && mm.checks.neverCleared)} |`);
  out.push(`| ×3 (and larger) rank outlier: \`high\` within 20 steps naming the rank | ${t(rankOk)} |`);
  out.push(`| NaN/Inf: critical at its own step | ${t(nfOk)} |`);
  out.push(`| α ramp with stationary slices: no directive | ${t(fam('alpha_ramp').every((s) => s.r.directives.length === 0))} |`);

  const lines: Line[] = [
    { name: 'tailguard high', points: [] },
    { name: 'tailguard warn', points: [], dashed: true },
    { name: 'oracle CUSUM', points: [], dashed: true },
    ...BASELINES.map((b) => ({ name: b === 'ptt' ? 'PTT as shipped' : BASELINE_LABEL[b], points: [] as Line['points'] })),
  ];
  for (const rate of WEIGHT_RATES) {
    const rs = fam('weight_growth', 'weight_growth').filter((s) => s.r.spec.rate === rate);
    if (!rs.length) continue;
    const vals = [rs.map((s) => d(s, s.tgHigh)), rs.map((s) => d(s, s.tgWarn)), rs.map((s) => d(s, s.oracle)), ...BASELINES.map((b) => rs.map((s) => d(s, s.base[b])))];
    vals.forEach((v, i) => lines[i].points.push({ x: rate, y: med(v) }));
  }
  const svgs = {
    'detection-delay.svg': delayPlot('Post-tool 10× component growth: delay to alarm (α 0.3, 5k tokens/rank-step)', 'growth of the heavy component weight (pp/step, log scale)', lines, 300),
    'detection-false-alarms.svg': barPlot('Alarms per 1000 steps on nuisance streams (calibrated baselines: 0 by construction)', NUISANCE, Object.entries(bars).map(([name, values]) => ({ name, values }))),
  };
  return { markdown: out.join('\n'), svgs };
}
