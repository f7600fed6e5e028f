// The closed loop's brain: StepResult → detectors → findings → one graded directive per step.
// Ladder: warn → tighten (≤ max_tightens) → rollback to a certified checkpoint (≤ max_rollbacks)
// → stop. Acks move it on: a refused knob is never re-sent, a refused rollback leads to stop with
// a resume-from-checkpoint hint. Deterministic: the same inputs give the same directive ids.
import type { Directive, Finding, StepResult } from '../types.ts';
import { DetectorSet, type DetectorSetState } from '../detect/index.ts';
import { levelOf } from '../detect/levels.ts';
import { CheckpointBook, type CheckpointBookState, type CheckpointEvent } from './checkpoints.ts';
import { planTighten } from './tighten.ts';
import type { Policy } from './types.ts';

/** An `ack` header from the shim (proto/README.md). */
export interface Ack {
  run_id?: string;
  rank?: number;
  directive_id: string;
  step?: number;
  applied: boolean;
  changes?: { knob: string; old: unknown; new: unknown }[];
  refused?: string | null;
}

export interface StepDecision {
  findings: Finding[];
  directive: Directive | null;
  /** Checkpoint bookkeeping lines for the audit log. */
  events: CheckpointEvent[];
}

interface Issued {
  action: Directive['action'];
  step: number;
  apply_at_step: number;
  params: Record<string, unknown>;
  status: 'sent' | 'applied' | 'refused';
  ranks: number[];
}

interface ControllerState {
  seq: number;
  lastStep: number | null;
  lastControlStep: number | null;
  lastWarnStep: number | null;
  /** Curriculum directives are spaced among themselves: they never hold back an escalation. */
  lastCurriculumStep?: number | null;
  tightens: number;
  rollbacks: number;
  stopped: boolean;
  refusedKnobs: string[];
  rollbackRefused: string | null;
  curriculumRefused: boolean;
  alphaMax: number | null;
  /** Rollback or stop sent and not yet acknowledged: hold further control until it lands. */
  pending: string | null;
  /**
   * Steps that predate an acked rollback but finalise after its ack (in DDP one rank's data can
   * arrive after another rank's ack): skipped, so they neither escalate nor seed the reset detectors.
   */
  stale?: { from: number; through: number } | null;
  issued: Record<string, Issued>;
}

export interface ControllerSnapshot {
  version: 1;
  state: ControllerState;
  detectors: DetectorSetState;
  checkpoints: CheckpointBookState;
}

const ISSUED_KEEP = 64;

function summarize(f: Finding) {
  const { detector, severity, step, pair, slice, rank, message } = f;
  return { detector, severity, step, pair, slice, rank, message, values: (f.evidence as any)?.values };
}

export class Controller {
  readonly detectors: DetectorSet;
  readonly checkpoints: CheckpointBook;
  private s: ControllerState = {
    seq: 0,
    lastStep: null,
    lastControlStep: null,
    lastWarnStep: null,
    tightens: 0,
    rollbacks: 0,
    stopped: false,
    refusedKnobs: [],
    rollbackRefused: null,
    curriculumRefused: false,
    alphaMax: null,
    pending: null,
    stale: null,
    issued: {},
  };
  private runId = 'run';

  constructor(readonly policy: Policy) {
    this.detectors = new DetectorSet(policy.detectors);
    this.checkpoints = new CheckpointBook(policy.checkpoints);
  }

  onStepResult(r: StepResult, opts: { nowStep?: number } = {}): StepDecision {
    this.runId = r.runId || this.runId;
    const stale = this.s.stale;
    if (stale && r.step >= stale.from && r.step <= stale.through) return { findings: [], directive: null, events: [] };
    this.s.stale = null; // a step from after the rollback (or a rewound trainer): back to normal
    const events: CheckpointEvent[] = [];
    if (this.s.lastStep !== null && r.step <= this.s.lastStep) events.push(...this.wentBack(r.step));
    this.s.lastStep = r.step;
    const findings = this.detectors.evaluate(r);
    const worst = Math.max(0, ...this.detectors.active(2).map((a) => a.level));
    events.push(...this.checkpoints.observe(r.step, worst));
    const directive = this.decide(r, findings, opts.nowStep ?? r.step);
    return { findings, directive, events };
  }

  /** The shim saved a checkpoint at `step`. Returns the audit events (registered, maybe decided). */
  onCheckpoint(step: number, path: string): CheckpointEvent[] {
    return this.checkpoints.register(step, path);
  }

  /** An ack from one rank. Effects apply once per directive, however many ranks ack. */
  onAck(ack: Ack): CheckpointEvent[] {
    const d = Object.hasOwn(this.s.issued, ack.directive_id) ? this.s.issued[ack.directive_id] : undefined; // ids come from the client
    if (!d) return [];
    if (ack.rank !== undefined && !d.ranks.includes(ack.rank)) d.ranks.push(ack.rank);
    const refused = !ack.applied || !!ack.refused;
    if (d.status !== 'sent' && !(refused && d.status === 'applied')) return [];
    if (this.s.pending === ack.directive_id) this.s.pending = null;
    if (refused) return this.onRefused(d, ack);
    d.status = 'applied';
    if (d.action === 'rollback') {
      const step = (d.params.checkpoint as { step: number }).step;
      const seen = this.s.lastStep ?? step;
      this.detectors.reset();
      this.s.lastControlStep = null;
      this.s.lastWarnStep = null;
      this.s.lastCurriculumStep = null;
      this.s.lastStep = step;
      // Applied at ack.step's end: steps up to it not yet finalised hold pre-rollback data.
      this.s.stale = typeof ack.step === 'number' && ack.step > seen ? { from: seen + 1, through: ack.step } : null;
      return this.checkpoints.invalidateAfter(step, ack.step ?? null);
    }
    if (d.action === 'curriculum') this.s.alphaMax = d.params.alpha_ceiling as number;
    if (d.action === 'stop') this.s.stopped = true;
    return [];
  }

  certifiedCheckpoints(): { step: number; path: string }[] {
    return this.checkpoints.certified();
  }

  /** The reply when there is nothing to apply; carries the checkpoints the shim must keep, or may drop. */
  noop(step: number): Directive {
    const certified = this.checkpoints.protectedList();
    const newest = certified.length ? certified[certified.length - 1].step : -1;
    // The shim keeps its copies newer than `newest` until they are decided: say which never will be.
    const rejected = this.checkpoints.s.entries
      .filter((e) => e.step > newest && (e.status === 'rejected' || e.status === 'invalidated'))
      .map(({ step, path }) => ({ step, path }));
    const params: Record<string, unknown> = {};
    if (certified.length) params.certified_checkpoints = certified;
    if (rejected.length) params.rejected_checkpoints = rejected;
    return {
      id: `${this.runId}/${step}/noop`,
      action: 'noop',
      step,
      apply_at_step: step + this.policy.lag,
      params,
      reason: '',
      evidence: {},
    };
  }

  snapshot(): ControllerSnapshot {
    return { version: 1, state: structuredClone(this.s), detectors: this.detectors.snapshot(), checkpoints: this.checkpoints.snapshot() };
  }

  restore(snap: ControllerSnapshot): this {
    if (snap?.version !== 1) throw new Error(`unsupported controller snapshot version ${String(snap?.version)}`);
    this.s = structuredClone(snap.state);
    this.detectors.restore(snap.detectors);
    this.checkpoints.restore(snap.checkpoints);
    return this;
  }

  static fromSnapshot(policy: Policy, snap: ControllerSnapshot): Controller {
    return new Controller(policy).restore(snap);
  }

  // -- ladder ---------------------------------------------------------------------------------

  private decide(r: StepResult, findings: Finding[], nowStep: number): Directive | null {
    if (this.s.stopped) return null;
    const p = this.policy;
    const raised = findings.filter((f) => f.severity !== 'info');
    const ramp = this.rampFinding(findings);
    if (!raised.length && !ramp) return null;
    const warnOk = this.s.lastWarnStep === null || r.step - this.s.lastWarnStep >= p.warn_cooldown_steps;
    const warn = () => {
      if (!warnOk) return null;
      this.s.lastWarnStep = r.step;
      const worst = raised.reduce((a, f) => (levelOf(f.severity) > levelOf(a.severity) ? f : a));
      return this.issue(r, nowStep, 'warn', { severity: worst.severity, detectors: [...new Set(raised.map((f) => f.detector))] }, worst.message, raised);
    };
    if (p.mode === 'observe') return warn();

    const floor = levelOf(p.escalate_on);
    const escalating = raised.filter((f) => f.detector !== 'alpha_ramp' && levelOf(f.severity) >= floor);
    const critical = escalating.some((f) => f.severity === 'critical');
    // Until the ack: the trainer may apply it several steps after apply_at_step (it runs ahead of a
    // busy engine and applies what has arrived), and the steps before that still show the old failure.
    const pendingLive = this.s.pending !== null && r.step <= (this.s.issued[this.s.pending]?.apply_at_step ?? 0) + p.ack_timeout_steps;
    if (!pendingLive) this.s.pending = null;
    const spaced = this.s.lastControlStep === null || r.step - this.s.lastControlStep >= p.min_steps_between_directives;
    if (escalating.length && !pendingLive && (spaced || critical)) {
      const d = this.escalate(r, nowStep, escalating, critical);
      if (d) return d;
    }
    // α rising is learning unless something else is wrong: a ceiling only while no other detector
    // is latched at warn or above, so it never takes the place of a higher-severity directive.
    const others = this.detectors.active(2).some((a) => a.detector !== 'alpha_ramp');
    const curriculumSpaced = this.s.lastCurriculumStep == null || r.step - this.s.lastCurriculumStep >= p.min_steps_between_directives;
    if (ramp && !others && curriculumSpaced && !pendingLive && p.curriculum.enabled && !this.s.curriculumRefused) {
      const d = this.curriculum(r, nowStep, ramp);
      if (d) return d;
    }
    return raised.length ? warn() : null;
  }

  /** An alpha_ramp raise or repeat at curriculum.min_severity or above (info by default: none). */
  private rampFinding(findings: Finding[]): Finding | undefined {
    const min = levelOf(this.policy.curriculum.min_severity ?? 'warn');
    return findings.find((f) => f.detector === 'alpha_ramp' && levelOf(f.severity) >= min && (f.evidence as any)?.event !== 'clear');
  }

  private escalate(r: StepResult, nowStep: number, why: Finding[], critical: boolean): Directive | null {
    const p = this.policy;
    const reason = why.map((f) => `${f.detector} ${f.severity}: ${f.message}`).join('; ');
    if (!critical && this.s.tightens < p.tighten.max_tightens) {
      const plan = planTighten(r.knobs ?? {}, p.tighten, new Set(this.s.refusedKnobs));
      if (Object.keys(plan.targets).length) {
        this.s.tightens++;
        return this.control(r, nowStep, 'tighten', plan.targets, reason, why, { previous: plan.previous, skipped: plan.skipped });
      }
    }
    const ckpt = this.checkpoints.latest();
    if (this.s.rollbacks < p.rollback.max_rollbacks) {
      if (ckpt && !this.s.rollbackRefused) {
        this.s.rollbacks++;
        const params: Record<string, unknown> = { checkpoint: { step: ckpt.step, path: ckpt.path } };
        const onset = Math.min(...this.detectors.active(2).map((a) => a.onset ?? r.step), r.step);
        if (p.rollback.skip_data) params.skip_steps = [Math.max(onset, ckpt.step + 1), r.step];
        const d = this.control(r, nowStep, 'rollback', params, reason, why);
        this.s.pending = d.id;
        return d;
      }
      if (p.rollback.when_unavailable === 'warn') return null;
    }
    if (!p.stop.enabled) return null;
    const cause =
      this.s.rollbacks >= p.rollback.max_rollbacks
        ? `rollback budget spent (${this.s.rollbacks}/${p.rollback.max_rollbacks})`
        : this.s.rollbackRefused
          ? `rollback refused by the trainer (${this.s.rollbackRefused}); resume from the checkpoint instead`
          : 'no certified checkpoint to roll back to';
    const d = this.control(r, nowStep, 'stop', { resume_from_checkpoint: ckpt?.path ?? null, checkpoint: ckpt, cause }, `${cause}: ${reason}`, why);
    this.s.pending = d.id;
    return d;
  }

  private curriculum(r: StepResult, nowStep: number, f: Finding): Directive | null {
    const c = this.policy.curriculum;
    const alpha = Number((f.evidence as any)?.values?.alpha);
    if (!Number.isFinite(alpha)) return null;
    let ceiling = Math.max(c.min_alpha_max, Math.round((alpha + c.margin) * 1000) / 1000);
    if (this.s.alphaMax !== null) ceiling = Math.min(ceiling, this.s.alphaMax);
    if (ceiling === this.s.alphaMax) return null; // already in force
    this.s.lastCurriculumStep = r.step;
    return this.issue(r, nowStep, 'curriculum', { alpha_ceiling: ceiling }, `${f.detector}: ${f.message}`, [f]);
  }

  private control(r: StepResult, nowStep: number, action: Directive['action'], params: Record<string, unknown>, reason: string, why: Finding[], extra: Record<string, unknown> = {}): Directive {
    this.s.lastControlStep = r.step;
    return this.issue(r, nowStep, action, params, reason, why, extra);
  }

  private issue(r: StepResult, nowStep: number, action: Directive['action'], params: Record<string, unknown>, reason: string, why: Finding[], extra: Record<string, unknown> = {}): Directive {
    const p = this.policy;
    const d: Directive = {
      id: `${this.runId}/${r.step}/${++this.s.seq}`,
      action,
      step: r.step,
      apply_at_step: Math.max(r.step, nowStep) + p.lag,
      params,
      reason,
      evidence: {
        findings: why.map(summarize),
        knobs: r.knobs ?? {},
        ladder: { mode: p.mode, tightens: this.s.tightens, max_tightens: p.tighten.max_tightens, rollbacks: this.s.rollbacks, max_rollbacks: p.rollback.max_rollbacks },
        ...extra,
      },
    };
    if (action !== 'warn') {
      this.s.issued[d.id] = { action, step: d.step, apply_at_step: d.apply_at_step, params, status: 'sent', ranks: [] };
      const ids = Object.keys(this.s.issued);
      for (const id of ids.slice(0, Math.max(0, ids.length - ISSUED_KEEP))) delete this.s.issued[id];
    }
    return d;
  }

  private onRefused(d: Issued, ack: Ack): CheckpointEvent[] {
    d.status = 'refused';
    // Nothing took effect: the ladder moves on at the next finding, without waiting. A partly applied
    // tighten keeps the spacing, so the knobs it did change get time to act before a rollback.
    const changed = new Set((ack.changes ?? []).map((c) => c.knob));
    if (!changed.size) this.s.lastControlStep = null;
    if (d.action === 'tighten') {
      const refused = Object.keys(d.params).filter((k) => !changed.has(k));
      for (const k of refused) if (!this.s.refusedKnobs.includes(k)) this.s.refusedKnobs.push(k);
      if (!changed.size) this.s.tightens = Math.max(0, this.s.tightens - 1); // nothing took effect
    } else if (d.action === 'rollback') {
      this.s.rollbackRefused = ack.refused || 'refused';
      this.s.rollbacks = Math.max(0, this.s.rollbacks - 1);
    } else if (d.action === 'curriculum') {
      this.s.curriculumRefused = true;
    }
    return [];
  }

  private wentBack(step: number): CheckpointEvent[] {
    // The trainer restored an earlier state (rollback or resume) without an ack reaching us.
    this.s.lastControlStep = null;
    this.s.lastWarnStep = null;
    this.s.pending = null;
    return this.checkpoints.invalidateAfter(step - 1, step);
  }
}
