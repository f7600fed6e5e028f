// "What happened" in a run, from its store: detector episodes (consecutive findings grouped), one row
// per directive with its ack outcome, the first step each view moved, and a one-line verdict. Pure
// functions over RunData, shared by the report, the live page and `tailguard report A B`.
import type { AuditEntry, RunData, StepEntry } from '../store/index.ts';
import type { Directive, Finding, MetricRecord, Severity } from '../types.ts';

export const SEVERITY_RANK: Record<string, number> = { info: 0, warn: 1, high: 2, critical: 3 };

/** Findings of one detector on one pair/slice/rank, no more than EPISODE_GAP steps apart. */
export interface Episode {
  id: string;
  detector: string;
  pair?: string;
  slice?: string;
  rank?: number;
  first: number;
  last: number;
  /** Step of the detector's "cleared" finding, when it cleared. */
  cleared: number | null;
  peak: Severity;
  peakStep: number;
  count: number;
  message: string; // the peak finding's
}

export const EPISODE_GAP = 10;

export interface DirectiveRow {
  id: string;
  step: number;
  apply_at_step: number;
  action: string;
  params: string;
  target: { step: number; path: string } | null;
  outcome: 'applied' | 'refused' | 'partly applied' | 'no ack';
  refused: string | null;
  reason: string;
}

export interface Onset {
  view: string;
  step: number | null;
}

export interface Story {
  steps: number;
  firstStep: number | null;
  lastStep: number | null;
  episodes: Episode[];
  directives: DirectiveRow[];
  onsets: Onset[];
  baseline: [number, number] | null;
  verdict: string;
}

const isCleared = (f: Finding) => f.severity === 'info' && /^cleared\b/.test(f.message);

export function episodes(audit: readonly AuditEntry[]): Episode[] {
  const open = new Map<string, Episode>();
  const out: Episode[] = [];
  const findings = audit.filter((e): e is { kind: 'finding' } & Finding => e.kind === 'finding').sort((a, b) => a.step - b.step);
  for (const f of findings) {
    const key = `${f.detector}|${f.pair ?? ''}|${f.slice ?? ''}|${f.rank ?? ''}`;
    let ep = open.get(key);
    if (isCleared(f)) {
      if (ep && ep.cleared === null) ep.cleared = f.step;
      continue;
    }
    if (!ep || ep.cleared !== null || f.step - ep.last > EPISODE_GAP) {
      ep = { id: `ep-${out.length}`, detector: f.detector, pair: f.pair, slice: f.slice, rank: f.rank, first: f.step, last: f.step, cleared: null, peak: f.severity, peakStep: f.step, count: 0, message: f.message };
      open.set(key, ep);
      out.push(ep);
    }
    ep.last = f.step;
    ep.count++;
    if ((SEVERITY_RANK[f.severity] ?? 0) > (SEVERITY_RANK[ep.peak] ?? 0)) {
      ep.peak = f.severity;
      ep.peakStep = f.step;
      ep.message = f.message;
    }
  }
  return out;
}

const KNOB_PARAMS = new Set(['beta', 'epsilon', 'epsilon_low', 'epsilon_high', 'is_clip_max', 'off_policy_mask_threshold', 'alpha_ceiling']);

function paramText(d: Directive): string {
  const p = d.params ?? {};
  if (d.action === 'rollback') {
    const ck = p.checkpoint as { step?: number; path?: string } | undefined;
    const skip = Array.isArray(p.skip_steps) ? `, skip data of steps ${p.skip_steps[0]}–${p.skip_steps[1]}` : '';
    return ck ? `to checkpoint step ${ck.step} (${ck.path})${skip}` : 'no checkpoint';
  }
  if (d.action === 'stop') return `${p.cause ?? 'stop'}${p.resume_from_checkpoint ? `; resume from ${p.resume_from_checkpoint}` : ''}`;
  if (d.action === 'warn') return `severity ${p.severity ?? '?'}: ${Array.isArray(p.detectors) ? p.detectors.join(', ') : ''}`;
  return Object.entries(p).filter(([k]) => KNOB_PARAMS.has(k)).map(([k, v]) => `${k} → ${typeof v === 'number' ? +v.toPrecision(4) : JSON.stringify(v)}`).join(', ');
}

/** One row per directive (no-ops left out), with what the trainer's acks say took effect. */
export function directiveRows(audit: readonly AuditEntry[]): DirectiveRow[] {
  const acks = new Map<string, Extract<AuditEntry, { kind: 'ack' }>[]>();
  for (const e of audit) if (e.kind === 'ack') (acks.get(e.directive_id) ?? acks.set(e.directive_id, []).get(e.directive_id)!).push(e);
  const rows: DirectiveRow[] = [];
  for (const e of audit) {
    if (e.kind !== 'directive' || e.action === 'noop') continue;
    const a = acks.get(e.id) ?? [];
    let outcome: DirectiveRow['outcome'] = 'no ack';
    let refused: string | null = null;
    if (a.length) {
      const changed = new Set(a.flatMap((x) => (x.changes ?? []).map((c) => c.knob)));
      const why = a.map((x) => x.refused).find((r) => r) ?? null;
      if (a.every((x) => !x.applied)) {
        outcome = 'refused';
        refused = why ?? 'refused';
      } else if (why) {
        outcome = 'partly applied';
        const knobs = Object.keys(e.params ?? {}).filter((k) => KNOB_PARAMS.has(k) && !changed.has(k));
        refused = `${knobs.length ? `${knobs.join(', ')} not changed: ` : ''}${why}`;
      } else outcome = 'applied';
    }
    const ck = e.action === 'rollback' || e.action === 'stop' ? (e.params?.checkpoint as { step: number; path: string } | null | undefined) ?? null : null;
    rows.push({ id: e.id, step: e.step, apply_at_step: e.apply_at_step, action: e.action, params: paramText(e), target: ck && typeof ck.step === 'number' ? { step: ck.step, path: ck.path } : null, outcome, refused, reason: e.reason });
  }
  return rows;
}

// ---- the first step each view moved (the demo summary's rule, on any run) ----

/**
 * First step (after the baseline) from which `run` consecutive steps sit outside the baseline band:
 * median ± max(4·MAD, 25% of |median|, 0.01), in the worsening direction only (`dir` 0: either).
 */
export function onsetOf(series: Map<number, number>, base: [number, number], dir: 1 | -1 | 0, run = 3): number | null {
  const b = [...series].filter(([s, v]) => s >= base[0] && s < base[1] && Number.isFinite(v)).map(([, v]) => v);
  if (b.length < 3) return null;
  const med = median(b);
  const band = Math.max(4 * median(b.map((v) => Math.abs(v - med))), 0.25 * Math.abs(med), 0.01);
  let streak = 0, start = 0;
  for (const s of [...series.keys()].filter((s) => s >= base[1]).sort((a, b) => a - b)) {
    const v = series.get(s)!;
    const out = Number.isFinite(v) && (dir === 0 ? Math.abs(v - med) > band : dir > 0 ? v - med > band : med - v > band);
    if (!out) { streak = 0; continue; }
    if (streak++ === 0) start = s;
    if (streak >= run) return start;
  }
  return null;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Baseline steps [first+2, first+2+B): B = 5% of the run, 5..50 steps, ending before the first warn. */
export function baselineOf(steps: readonly number[], firstWarn: number | null): [number, number] | null {
  if (steps.length < 8) return null;
  const b0 = steps[0] + 2;
  let b1 = b0 + Math.min(50, Math.max(5, Math.round(steps.length / 20)));
  if (firstWarn !== null && firstWarn - b0 >= 3) b1 = Math.min(b1, firstWarn);
  return [b0, b1];
}

const VIEWS: [slice: string, field: keyof MetricRecord, label: string, dir: 1 | -1][] = [
  ['post_tool', 'abs_q99', 'post_tool q99 |ℓ|', 1],
  ['post_tool', 'ess', 'post_tool ESS/N', -1],
  ['pre_tool', 'abs_q99', 'pre_tool q99 |ℓ|', 1],
  ['all', 'abs_mean', 'all-token mean |ℓ|', 1],
];
const TRAINER_VIEWS: [string, 1 | -1 | 0][] = [['loss', 0], ['reward', -1], ['entropy', 0], ['kl', 1]];

export function onsets(run: RunData, pairs: readonly string[], base: [number, number] | null): Onset[] {
  const out: Onset[] = [];
  if (!base) return out;
  for (const pair of pairs) {
    for (const [slice, field, label, dir] of VIEWS) {
      const s = new Map<number, number>();
      for (const r of run.metrics.records) if (r.pair === pair && r.slice === slice && r.n > 0 && typeof r[field] === 'number') s.set(r.step, r[field] as number);
      if (s.size) out.push({ view: `${pair} · ${label}`, step: onsetOf(s, base, dir) });
    }
  }
  for (const [key, dir] of TRAINER_VIEWS) {
    const s = new Map<number, number>();
    for (const st of run.steps.records) if (typeof st.logs?.[key] === 'number') s.set(st.step, st.logs[key] as number);
    if (s.size) out.push({ view: `trainer ${key}${dir === 0 ? ' (|change|)' : dir < 0 ? ' (drop)' : ''}`, step: onsetOf(s, base, dir) });
  }
  return out;
}

/** Pairs with signal, those with the most (and most severe) findings first; identically-0 pairs last. */
export function pairOrder(run: RunData): string[] {
  const score = new Map<string, number>();
  for (const r of run.metrics.records) if (!score.has(r.pair)) score.set(r.pair, 0);
  for (const e of run.directives.records) if (e.kind === 'finding' && e.pair && score.has(e.pair)) score.set(e.pair, score.get(e.pair)! + 1 + 10 * (SEVERITY_RANK[e.severity] ?? 0));
  const flat = new Set([...score.keys()].filter((p) => isFlatPair(run, p)));
  return [...score.keys()].sort((a, b) => Number(flat.has(a)) - Number(flat.has(b)) || score.get(b)! - score.get(a)! || a.localeCompare(b));
}

/** Flagged implicit by the shim, or identically 0 in every record (nothing to draw). */
export function isFlatPair(run: RunData, pair: string): boolean {
  let any = false;
  for (const r of run.metrics.records) {
    if (r.pair !== pair) continue;
    any = true;
    if (!r.implicit && r.n > 0 && (r.abs_max ?? 0) !== 0) return false;
  }
  return any;
}


export function story(run: RunData): Story {
  const steps = [...new Set(run.steps.records.map((s: StepEntry) => s.step))].sort((a, b) => a - b);
  const eps = episodes(run.directives.records);
  const rows = directiveRows(run.directives.records);
  const firstWarn = eps.filter((e) => SEVERITY_RANK[e.peak] >= 1).reduce<number | null>((m, e) => (m === null ? e.first : Math.min(m, e.first)), null);
  const base = baselineOf(steps, firstWarn);
  const pairs = pairOrder(run).filter((p) => !isFlatPair(run, p));
  const lastStep = steps.at(-1) ?? null;
  return { steps: steps.length, firstStep: steps[0] ?? null, lastStep, episodes: eps, directives: rows, onsets: onsets(run, pairs, base), baseline: base, verdict: verdict(eps, rows, lastStep) };
}

function verdict(eps: Episode[], rows: DirectiveRow[], lastStep: number | null): string {
  const real = eps.filter((e) => SEVERITY_RANK[e.peak] >= 1);
  if (lastStep === null) return 'No finalised step yet.';
  if (!real.length) return `Healthy: no finding at warn or above through step ${lastStep}.`;
  const first = real[0];
  const where = [first.pair, first.slice].filter(Boolean).join('/');
  const parts = [`${first.detector}${where ? ` on ${where}` : ''} from step ${first.first} (peak ${first.peak} at step ${first.peakStep})`];
  const control = rows.filter((r) => r.action !== 'warn');
  for (const r of control.sort((a, b) => a.step - b.step)) {
    const verb = { tighten: 'tightened', rollback: 'rolled back', stop: 'stopped', curriculum: 'capped α' }[r.action] ?? r.action;
    parts.push(`${verb} at step ${r.step}${r.target && r.action === 'rollback' ? ` to checkpoint step ${r.target.step}` : ''} (${r.outcome})`);
  }
  const active = real.filter((e) => e.cleared === null && lastStep - e.last <= EPISODE_GAP);
  const worst = active.reduce((m, e) => Math.max(m, SEVERITY_RANK[e.peak]), -1);
  const lastFinding = real.reduce((m, e) => Math.max(m, e.last), -Infinity);
  parts.push(
    active.length
      ? `${active.length} episode(s) still active at step ${lastStep}${worst >= 2 ? ' (high or worse)' : ''}`
      : `quiet since step ${lastFinding} (last step ${lastStep})`,
  );
  return parts.join('; ') + '.';
}
