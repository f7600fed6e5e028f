import { describe, expect, it } from 'vitest';
import { Controller, type ControllerSnapshot } from '../src/policy/controller.ts';
import { auditRecords } from '../src/policy/audit.ts';
import { controlHooks } from '../src/policy/hooks.ts';
import { loadPolicy } from '../src/policy/load.ts';
import type { PolicyOverride } from '../src/policy/types.ts';
import type { Directive, StepResult } from '../src/types.ts';
import { statsStream } from '../bench/synthetic.ts';
import { bad, step } from './detect-helpers.ts';

const ctl = (o?: PolicyOverride) => new Controller(loadPolicy(undefined, o));
const feed = (c: Controller, steps: StepResult[]) => steps.map((r) => c.onStepResult(r)).map((d) => d.directive).filter((d): d is Directive => !!d);
const range = (a: number, b: number, f: (n: number) => StepResult) => Array.from({ length: b - a + 1 }, (_, i) => f(a + i));

/** Healthy 1..30 with a checkpoint at 10 (certified at 20) and one at 25 (pending). */
function healthyWithCheckpoints(c: Controller) {
  const out: Directive[] = [];
  for (const r of range(1, 30, step)) {
    out.push(...feed(c, [r]));
    if (r.step === 10) c.onCheckpoint(10, '/ck/10');
    if (r.step === 25) c.onCheckpoint(25, '/ck/25');
  }
  return out;
}
/** healthyWithCheckpoints, then ESS collapse from 31. */
const ladderRun = (c: Controller) => [...healthyWithCheckpoints(c), ...feed(c, range(31, 43, (n) => bad(n)))];

describe('Controller ladder', () => {
  it('healthy synthetic stream (real statistics, small steps): no directive beyond warn', () => {
    const c = ctl();
    const ds = feed(c, [...statsStream('healthy', 120, 0, 4, { seqsPerRank: 16 })]);
    expect(ds.filter((d) => d.action !== 'warn')).toEqual([]);
  });

  it('warn → tighten → tighten → rollback to the certified checkpoint → stop once the budget is spent', () => {
    const c = ctl();
    const ds = ladderRun(c);
    expect(c.certifiedCheckpoints()).toEqual([{ step: 10, path: '/ck/10' }]); // 25 was rejected: step 31 unhealthy
    expect(ds.map((d) => [d.action, d.step])).toEqual([
      ['tighten', 33],
      ['tighten', 38],
      ['rollback', 43],
    ]);
    expect(ds[0]).toMatchObject({ id: 'r1/33/1', apply_at_step: 34, params: { beta: 0.08, epsilon_low: 0.15, epsilon_high: 0.21, off_policy_mask_threshold: 0.5 } });
    expect(ds[0].evidence).toMatchObject({ previous: { beta: 0.04 }, ladder: { tightens: 1, max_tightens: 2 } });
    expect(ds[2].params).toEqual({ checkpoint: { step: 10, path: '/ck/10' }, skip_steps: [33, 43] });
    expect(ds[2].reason).toMatch(/ess_collapse high/);

    // The shim rolls back: steps resume at 11, the detectors start over, and failure returns.
    c.onAck({ directive_id: ds[2].id, rank: 0, step: 44, applied: true, changes: [{ knob: 'checkpoint', old: 44, new: 10 }], refused: null });
    const after = feed(c, [...range(11, 15, step), ...range(16, 18, (n) => bad(n))]);
    expect(after).toHaveLength(1);
    expect(after[0]).toMatchObject({ action: 'stop', step: 18, params: { resume_from_checkpoint: '/ck/10', checkpoint: { step: 10, path: '/ck/10' } } });
    expect(after[0].params.cause).toMatch(/rollback budget spent/);
    c.onAck({ directive_id: after[0].id, rank: 0, step: 19, applied: true, changes: [], refused: null });
    expect(feed(c, range(19, 30, (n) => bad(n)))).toEqual([]);
  });

  it('the same inputs give the same directives and ids (replay), and snapshot/restore resumes exactly', () => {
    const a = ladderRun(ctl());
    expect(ladderRun(ctl())).toEqual(a);

    const c1 = ctl();
    const first = [...healthyWithCheckpoints(c1), ...feed(c1, range(31, 36, (n) => bad(n)))];
    const snap = JSON.parse(JSON.stringify(c1.snapshot())) as ControllerSnapshot;
    const c2 = Controller.fromSnapshot(loadPolicy(), snap);
    first.push(...feed(c2, range(37, 43, (n) => bad(n))));
    expect(first).toEqual(a);
  });

  it('a refused knob is not sent again; a fully refused tighten does not spend the budget and the ladder moves on', () => {
    const c = ctl();
    feed(c, range(1, 10, step)); // the run's own reference: a level needs a change against it to escalate
    const zeroBeta = (n: number) => bad(n, { knobs: { beta: 0, epsilon_low: 0.2, epsilon_high: 0.28 } });
    const [t1] = feed(c, range(11, 13, zeroBeta));
    expect(t1).toMatchObject({ action: 'tighten', params: { beta: 0.04, epsilon_low: 0.15, epsilon_high: 0.21 } });
    c.onAck({
      directive_id: t1.id, rank: 0, step: 14, applied: true,
      changes: [{ knob: 'epsilon_low', old: 0.2, new: 0.15 }, { knob: 'epsilon_high', old: 0.28, new: 0.21 }],
      refused: 'E_NO_REF_MODEL: cannot raise beta from 0: the trainer built no reference model',
    });
    const [t2] = feed(c, range(14, 18, (n) => bad(n, { knobs: { beta: 0, epsilon_low: 0.15, epsilon_high: 0.21 } })));
    expect(t2.action).toBe('tighten');
    expect(t2.params).toEqual({ epsilon_low: 0.1125, epsilon_high: 0.1575 });
    expect(t2.evidence).toMatchObject({ skipped: { beta: 'refused by the trainer earlier' } });
    // all refused: the budget is refunded and the ladder moves on at once
    c.onAck({ directive_id: t2.id, rank: 0, step: 19, applied: false, changes: [], refused: 'E_KNOB_ABSENT' });
    const rest = feed(c, range(19, 23, (n) => bad(n, { knobs: { beta: 0, epsilon_low: 0.15, epsilon_high: 0.21 } })));
    expect(c.snapshot().state.tightens).toBe(1);
    expect(c.snapshot().state.refusedKnobs).toEqual(['beta', 'epsilon_low', 'epsilon_high']);
    // nothing left to tighten and no certified checkpoint: the next finding goes to stop
    expect(rest).toHaveLength(1);
    expect(rest[0]).toMatchObject({ action: 'stop', step: 23, params: { cause: 'no certified checkpoint to roll back to' } });
  });

  it('tighten with nothing left to tighten escalates; no certified checkpoint means stop', () => {
    const c = ctl();
    feed(c, range(1, 10, (n) => step(n, { knobs: {} } as any)));
    const ds = feed(c, range(11, 13, (n) => bad(n, { knobs: {} })));
    expect(ds).toHaveLength(1);
    expect(ds[0]).toMatchObject({ action: 'stop', params: { resume_from_checkpoint: null, cause: 'no certified checkpoint to roll back to' } });
  });

  it('a level alone never escalates: a fresh run that is heavy-tailed from step 1 gets warns, never tighten/rollback/stop', () => {
    const c = ctl();
    const ds = feed(c, range(1, 40, (n) => bad(n, { knobs: {} })));
    expect(ds.length).toBeGreaterThan(0);
    expect(ds.every((d) => d.action === 'warn')).toBe(true);
    expect(ds[0]).toMatchObject({ step: 3, params: { severity: 'warn' } });
  });

  it('a refused rollback (e.g. ZeRO-3) leads to stop with a resume-from-checkpoint hint', () => {
    const c = ctl({ tighten: { max_tightens: 0 } });
    feed(c, range(1, 20, step));
    c.onCheckpoint(5, '/ck/5');
    feed(c, range(21, 30, step));
    expect(c.certifiedCheckpoints()).toEqual([{ step: 5, path: '/ck/5' }]);
    const [rb] = feed(c, range(31, 33, (n) => bad(n)));
    expect(rb).toMatchObject({ action: 'rollback', params: { checkpoint: { step: 5, path: '/ck/5' } } });
    c.onAck({ directive_id: rb.id, rank: 0, step: 34, applied: false, changes: [], refused: 'E_ROLLBACK_ZERO3: in-process rollback is not possible under DeepSpeed ZeRO-3' });
    const next = feed(c, range(34, 38, (n) => bad(n)));
    expect(next).toHaveLength(1);
    const st = next[0];
    expect(st).toMatchObject({ action: 'stop', params: { resume_from_checkpoint: '/ck/5' } });
    expect(st.params.cause).toMatch(/rollback refused by the trainer \(E_ROLLBACK_ZERO3/);
  });

  it('a rollback applied late holds the ladder until its ack; steps that predate it are skipped', () => {
    // DDP on a busy engine: the trainer runs ahead and applies the rollback (due at 44) at step 50.
    const c = ctl();
    const rb = ladderRun(c).at(-1)!;
    expect([rb.action, rb.apply_at_step]).toEqual(['rollback', 44]);
    const before = range(44, 49, (n) => bad(n)).map((r) => c.onStepResult(r));
    expect(before.map((d) => d.directive?.action).filter((a) => a && a !== 'warn')).toEqual([]); // no stop: not acked yet
    expect(before.some((d) => d.findings.length > 0)).toBe(true); // the failure is still seen
    c.onAck({ directive_id: rb.id, rank: 0, step: 50, applied: true, changes: [{ knob: 'checkpoint', old: 50, new: 10 }], refused: null });
    // Rank 1's step 50 came in after rank 0's ack: pre-rollback data, neither judged nor kept.
    expect(c.snapshot().state.stale).toEqual({ from: 50, through: 50 });
    expect(c.onStepResult(bad(50))).toEqual({ findings: [], directive: null, events: [] });
    expect(c.snapshot().state.lastStep).toBe(10); // not fed to the reset detectors either
    expect(feed(c, range(51, 70, step))).toEqual([]);
    expect(c.snapshot().state.stale).toBeNull();
  });

  it('a rollback never acked counts as lost after ack_timeout_steps: the ladder goes on to stop', () => {
    const c = ctl();
    const rb = ladderRun(c).at(-1)!;
    const timeout = loadPolicy().ack_timeout_steps;
    const ds = feed(c, range(44, 44 + timeout + 5, (n) => bad(n)));
    const control = ds.filter((d) => d.action !== 'warn');
    expect(control.map((d) => d.action)).toEqual(['stop']);
    expect(control[0].step).toBeGreaterThan(rb.apply_at_step + timeout);
  });

  it('nonfinite is critical: rollback at once to the certified checkpoint, bypassing the spacing', () => {
    const c = ctl();
    feed(c, range(1, 20, step));
    c.onCheckpoint(5, '/ck/5');
    feed(c, range(21, 30, step));
    const [d] = feed(c, [step(31, { post: { nonfinite: 2 } })]);
    expect(d).toMatchObject({ action: 'rollback', step: 31, apply_at_step: 32, params: { checkpoint: { step: 5, path: '/ck/5' } } });
  });

  it('observe mode: findings and spaced warns only', () => {
    const c = ctl({ mode: 'observe' });
    const ds = feed(c, [...range(1, 10, step), ...range(11, 35, (n) => bad(n))]);
    expect(ds.map((d) => [d.action, d.step])).toEqual([['warn', 13], ['warn', 23], ['warn', 33]]);
    expect(ds[0].params).toEqual({ severity: 'high', detectors: ['ess_collapse'] });
  });

  it('α climbing with stationary slices is info by default: no directive at all', () => {
    const c = ctl();
    const out = range(1, 60, (n) => step(n, { all: { alpha: 0.2 + 0.01 * n } })).map((r) => c.onStepResult(r));
    expect(out.map((d) => d.directive).filter(Boolean)).toEqual([]);
    const ramp = out.flatMap((d) => d.findings).filter((f) => f.detector === 'alpha_ramp');
    expect(ramp.length).toBeGreaterThan(0);
    expect(ramp.every((f) => f.severity === 'info')).toBe(true);
  });

  const rampWarn: PolicyOverride = { detectors: { alpha_ramp: { rate: { warn: 0.004 } } } } as PolicyOverride;

  it('α climbing fast, with alpha_ramp set to warn, gives a curriculum ceiling, lowered but never raised', () => {
    const c = ctl(rampWarn);
    const ds = feed(c, range(1, 40, (n) => step(n, { all: { alpha: 0.2 + 0.01 * n } })));
    const cur = ds.filter((d) => d.action === 'curriculum');
    expect(cur.length).toBeGreaterThan(0);
    const a = cur[0].params.alpha_ceiling as number;
    expect(a).toBeGreaterThan(0.2);
    expect(a).toBeLessThan(0.5);
    c.onAck({ directive_id: cur[0].id, rank: 0, step: cur[0].apply_at_step, applied: true, changes: [{ knob: 'alpha_ceiling', old: null, new: a }], refused: null });
    const more = feed(c, range(41, 80, (n) => step(n, { all: { alpha: 0.2 + 0.01 * n } }))).filter((d) => d.action === 'curriculum');
    expect(more).toEqual([]); // the ceiling in force is not raised
  });

  it('an α ramp never takes the place of a higher-severity directive', () => {
    const c = ctl(rampWarn);
    const ramp = (n: number) => ({ alpha: 0.2 + 0.01 * n });
    // ESS collapses while α climbs: the first control directive is the tighten, and no ceiling
    // is set while the collapse is latched.
    const withRamp = feed(c, [...range(1, 20, (n) => step(n, { all: ramp(n) })), ...range(21, 40, (n) => step(n, { pair: 'old_vs_rollout', all: { ...ramp(n), ess: 0.1 }, post: { ess: 0.1 } }))]);
    expect(withRamp.some((d) => d.action === 'curriculum' && d.step <= 20)).toBe(true); // the ramp alone did act
    // A ceiling at 22 (the collapse is not latched yet) does not hold back the tighten at 23.
    expect(withRamp.find((d) => d.action === 'tighten')).toMatchObject({ step: 23 });
    expect(withRamp.filter((d) => d.action === 'curriculum' && d.step >= 23)).toEqual([]);
  });

  it('checkpoint certification: rejected when its covering window is unhealthy, invalidated after a rollback', () => {
    const c = ctl({ tighten: { max_tightens: 0 } });
    const ev: unknown[] = [];
    const on = (r: StepResult) => ev.push(...c.onStepResult(r).events);
    range(1, 10, step).forEach(on);
    ev.push(...c.onCheckpoint(10, '/ck/10'));
    range(11, 20, step).forEach(on);
    ev.push(...c.onCheckpoint(20, '/ck/20'));
    range(21, 22, step).forEach(on);
    ev.push(...c.onCheckpoint(22, '/ck/22'));
    [23, 24, 25].map((n) => bad(n)).forEach(on);
    expect(ev).toEqual([
      { kind: 'checkpoint', step: 10, path: '/ck/10', status: 'registered', certified: false, at_step: 10 },
      { kind: 'checkpoint', step: 10, path: '/ck/10', status: 'certified', certified: true, at_step: 20, reason: 'steps -9..20 healthy' },
      { kind: 'checkpoint', step: 20, path: '/ck/20', status: 'registered', certified: false, at_step: 20 },
      { kind: 'checkpoint', step: 22, path: '/ck/22', status: 'registered', certified: false, at_step: 22 },
      { kind: 'checkpoint', step: 20, path: '/ck/20', status: 'rejected', certified: false, at_step: 25, reason: 'step 25 unhealthy (window 1..30)' },
      { kind: 'checkpoint', step: 22, path: '/ck/22', status: 'rejected', certified: false, at_step: 25, reason: 'step 25 unhealthy (window 3..32)' },
    ]);
  });

  it('acks from every rank apply a directive once; unknown ids are ignored', () => {
    const c = ctl();
    feed(c, range(1, 20, step));
    c.onCheckpoint(5, '/ck/5');
    feed(c, range(21, 30, step));
    const [d] = feed(c, [step(31, { post: { nonfinite: 1 } })]);
    for (const rank of [0, 1]) c.onAck({ directive_id: d.id, rank, step: 32, applied: true, changes: [], refused: null });
    c.onAck({ directive_id: 'nope', rank: 0, step: 32, applied: false, changes: [], refused: 'x' });
    expect((c.snapshot().state.issued[d.id] as any).ranks).toEqual([0, 1]);
    expect(c.snapshot().state.rollbacks).toBe(1);
  });
});

describe('audit lines and hooks', () => {
  it('directives.jsonl lines tell the story: checkpoints, findings, directives, acks', () => {
    const lines: any[] = [];
    const hooks = controlHooks({ sink: (l) => lines.push(l) });
    for (const r of range(1, 20, step)) {
      hooks.onStepResult(r);
      if (r.step === 5) hooks.onCheckpoint(5, '/ck/5');
    }
    range(21, 30, step).forEach((r) => hooks.onStepResult(r));
    const d = hooks.onStepResult(step(31, { post: { nonfinite: 1 } }))!;
    hooks.onAck({ directive_id: d.id, rank: 0, step: 32, applied: true, changes: [{ knob: 'checkpoint', old: 32, new: 5 }], refused: null });
    expect(lines.map((l) => l.kind + (l.status ? `:${l.status}` : l.action ? `:${l.action}` : l.severity ? `:${l.severity}` : ''))).toEqual([
      'checkpoint:registered',
      'checkpoint:certified',
      'finding:critical',
      'directive:rollback',
      'ack',
    ]);
    expect(JSON.parse(JSON.stringify(lines))).toEqual(lines); // plain JSON
    expect(hooks.noop(33).params).toEqual({ certified_checkpoints: [{ step: 5, path: '/ck/5' }] });
  });

  it("findingMetrics: the last step's findings for the reply's metrics, severity only when there are any", () => {
    const hooks = controlHooks();
    hooks.onStepResult(step(1));
    expect(hooks.findingMetrics()).toEqual({ 'findings/n': 0 });
    hooks.onStepResult(step(2, { post: { nonfinite: 1 } }));
    const m = hooks.findingMetrics();
    expect(m['findings/n']).toBeGreaterThanOrEqual(1);
    expect(m['findings/severity']).toBe(3); // critical, on the shim's scale (events.py): info 0 … critical 3
  });

  it('auditRecords leaves no-ops out', () => {
    const n = ctl().noop(3);
    expect(n).toEqual({ id: 'run/3/noop', action: 'noop', step: 3, apply_at_step: 4, params: {}, reason: '', evidence: {} });
    expect(auditRecords({ findings: [], directive: n, events: [] })).toEqual([]);
  });
});
