// The run glue with a pipeline plugged in: metrics of finalised steps reach the reply, a controller
// directive goes to every rank once, acks reach the pipeline, and close() reaches it on shutdown.
import { Dealer } from 'zeromq';
import { describe, expect, it } from 'vitest';
import { decodeMessage, encodeHeader, encodeMessage } from '../src/protocol/index.ts';
import { EngineServer } from '../src/transport/server.ts';
import { silentLogger } from '../src/log.ts';
import type { Pipeline } from '../src/engine/pipeline.ts';
import type { MetricRecord, StepResult } from '../src/types.ts';

const V = [1, 0];
const stepFrames = (rank: number, step: number) =>
  encodeMessage(
    { type: 'step', version: V, run_id: 'p', rank, world_size: 2, step, chunk: { index: 0, count: 1 }, tokens: 2, n_seqs: 1 },
    { completion_mask: new Uint8Array([1, 1]), tool_mask: new Uint8Array([1, 1]), offsets: new Int32Array([0, 2]), policy_vs_ref: new Float32Array([0.5, -0.5]) },
  );

describe('run pipeline hooks', () => {
  it('metrics, directive routing, acks and close', async () => {
    const calls: string[] = [];
    const ranksIn = new Map<number, number>();
    const pipeline: Pipeline = {
      addRankStep: (d) => {
        ranksIn.set(d.step, (ranksIn.get(d.step) ?? 0) + 1);
        calls.push(`add ${d.step}/${d.rank}`);
      },
      finalizeReady: () => {
        const done = [...ranksIn].filter(([, n]) => n === 2).map(([s]) => s);
        done.forEach((s) => ranksIn.delete(s));
        return done.map((step) => ({ runId: 'p', step, records: [{ pair: 'policy_vs_ref', slice: 'all', n: 4, abs_q99: 0.5, ess: 1 } as MetricRecord] }) as StepResult);
      },
      onStepResult: (r) => (r.step === 1 ? { id: 'p/1/tighten', action: 'tighten', step: 1, apply_at_step: 3, params: { beta: 0.08 }, reason: 'test', evidence: {} } : null),
      onFinalized: (r, d) => calls.push(`final ${r.step} ${d?.action ?? 'none'}`),
      onAck: (a) => calls.push(`ack ${a.directive_id} ${a.applied}`),
      close: () => void calls.push('close'),
    };
    const server = new EngineServer({ endpoint: 'tcp://127.0.0.1:*', log: silentLogger(), factory: () => pipeline });
    await server.start();
    const [c0, c1] = [0, 1].map(() => {
      const d = new Dealer({ receiveTimeout: 5000, linger: 0 });
      d.connect(server.endpoint);
      return d;
    });
    const req = async (d: Dealer, f: Buffer[]) => {
      await d.send(f);
      return decodeMessage(await d.receive()).header as Record<string, any>;
    };
    for (const [r, d] of [c0, c1].entries()) await req(d, [encodeHeader({ type: 'hello', version: V, run_id: 'p', rank: r, world_size: 2, trainer: 'synthetic' })]);

    let a = await req(c0, stepFrames(0, 0));
    expect(a).toMatchObject({ metrics: {}, metrics_step: null });
    a = await req(c1, stepFrames(1, 0)); // completes step 0
    expect(a).toMatchObject({ metrics: { 'policy_vs_ref/all/n': 4, 'policy_vs_ref/all/abs_q99': 0.5, 'policy_vs_ref/all/ess': 1 }, metrics_step: 0 });
    await req(c0, stepFrames(0, 1));
    a = await req(c1, stepFrames(1, 1)); // completes step 1 → tighten for every rank, this reply first
    expect(a.directive).toEqual({ id: 'p/1/tighten', action: 'tighten', step: 1, apply_at_step: 3, params: { beta: 0.08 }, reason: 'test', evidence: {} });
    a = await req(c1, stepFrames(1, 2));
    expect(a.directive.action).toBe('noop'); // delivered once per rank
    a = await req(c0, stepFrames(0, 2));
    expect(a.directive).toEqual({ id: 'p/1/tighten', action: 'tighten', step: 1, apply_at_step: 3, params: { beta: 0.08 }, reason: 'test', evidence: {} });
    expect(a.metrics_step).toBe(2);
    a = await req(c0, stepFrames(0, 3));
    expect(a.directive.action).toBe('noop'); // delivered once
    await c0.send([encodeHeader({ type: 'ack', version: V, run_id: 'p', rank: 0, directive_id: 'p/1/tighten', step: 3, applied: true, changes: [{ knob: 'beta', old: 0.04, new: 0.08 }] })]);
    await req(c0, [encodeHeader({ type: 'bye', version: V, run_id: 'p', rank: 0 })]); // replies in order: the ack was handled
    c0.close();
    c1.close();
    await server.close();
    expect(calls).toContain('final 1 tighten');
    expect(calls).toContain('ack p/1/tighten true');
    expect(calls.at(-1)).toBe('close');
  });
});
