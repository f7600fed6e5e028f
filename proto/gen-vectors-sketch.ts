// The sketch vectors of proto/gen-vectors.ts (proto/v1/vectors/12.sketch.json): sketch steps (proto/README.md
// "Sketch payloads"), built with the generator's own helpers so both files write the same JSON.
import type { TypedArray } from '../ts-core/src/protocol/index.ts';

type Frames = (Uint8Array | number[])[];
type Msg = { frames: Uint8Array[]; header: unknown; buffers: Record<string, TypedArray> };
export interface Helpers<C> {
  V: number[];
  ok: (description: string, frames: Frames, header: unknown, buffers?: Record<string, TypedArray | number[]>) => C;
  bad: (description: string, frames: Frames, error: string) => C;
  assemble: (parts: { header: Record<string, unknown>; buffers: Record<string, TypedArray> }, bufOver: Record<string, TypedArray | null>) => Msg;
  encodeHeader: (h: Record<string, unknown>) => Uint8Array;
}

export function sketchFile<C>({ V, ok, bad, assemble, encodeHeader }: Helpers<C>): { description: string; cases: C[] } {
  const SK_HIST = { exp_min: -24, exp_max: 8, mant_bits: 9 };
  const SK_BINS = 16386;
  const SK_FIELDS = ['n', 'nonfinite', 'sum', 'sum_abs', 'sum_sq', 'sum_k3', 'exceed_1_5', 'exceed_2', 'exceed_3', 'clip',
    'abs_max', 'lse_max', 'lse_sum', 'lse2_sum', 'seq_n', 'seq_max', 'seq_sum', 'seq2_sum', 'seqn_max', 'seqn_sum', 'seqn2_sum'];
  const SK_SLICES = ['all', 'pre_tool', 'post_tool', 'tool_output'];
  /** Rank 0's merged sketch of 2 ranks: one pair (policy_vs_ref) whose ℓ are 0.5, -0.25, 1.5 (pre_tool), 3 (post_tool). */
  function sketchParts(over: Record<string, unknown> = {}) {
    const header: Record<string, unknown> = {
      type: 'step', version: V, run_id: 'run-a', rank: 0, world_size: 2, step: 7, chunk: { index: 0, count: 1 },
      tokens: 300_000_000, n_seqs: 2, implicit: ['policy_vs_old'], knobs: { epsilon_low: 0.2 }, logs: {}, sent_at: 1767225600.25,
      sketch: true, hist: SK_HIST, sums_fields: SK_FIELDS, slice_counts: { all: 4, pre_tool: 3, post_tool: 1, tool_output: 2 }, ...over,
    };
    // bins of |ℓ| (float32 bits): 1 + ((bits − bits(2^-24)) >> 14)
    const bin = (x: number) => { const b = Buffer.alloc(4); b.writeFloatLE(Math.abs(x)); return 1 + ((b.readInt32LE(0) - 0x33800000) >> 14); };
    const slices: Record<string, number[]> = { all: [0.5, -0.25, 1.5, 3], pre_tool: [0.5, -0.25, 1.5], post_tool: [3], tool_output: [] };
    const buffers: Record<string, TypedArray> = {};
    for (const sl of SK_SLICES) {
      const xs = slices[sl];
      const h = new Float64Array(SK_BINS);
      for (const x of xs) h[bin(x)]++;
      const sums = new Float64Array(SK_FIELDS.length);
      const m = xs.length ? Math.max(...xs) : -Infinity;
      sums[0] = xs.length;
      sums[2] = xs.reduce((a, x) => a + x, 0);
      sums[3] = xs.reduce((a, x) => a + Math.abs(x), 0);
      sums[10] = xs.length ? Math.max(...xs.map(Math.abs)) : 0;
      sums[11] = m;
      sums[12] = xs.reduce((a, x) => a + Math.exp(x - m), 0);
      sums[15] = sums[18] = -Infinity; // no sequence sums in this vector: the field is the empty part's max
      buffers[`sketch/policy_vs_ref/${sl}/hist`] = h;
      buffers[`sketch/policy_vs_ref/${sl}/sums`] = sums;
    }
    const coding = (header.hist as { coding?: string } | undefined)?.coding;
    if (coding === 'varint' || coding === 'runs')
      for (const sl of SK_SLICES) {
        const k = `sketch/policy_vs_ref/${sl}/hist`;
        buffers[k] = sl === 'all' ? new Uint8Array(0) : (coding === 'varint' ? varintHist : runsHist)(buffers[k] as Float64Array);
      }
    return { header, buffers };
  }
  /** proto/README.md "Sketch payloads", hist.coding varint: LEB128 (gap, count) for each non-zero bin. */
  function varintHist(h: Float64Array): Uint8Array {
    const out: number[] = [];
    const put = (v: number) => { while (v >= 128) { out.push((v % 128) | 128); v = Math.floor(v / 128); } out.push(v); };
    let last = -1;
    h.forEach((c, b) => { if (c) { put(b - last - 1); put(c); last = b; } });
    return Uint8Array.from(out);
  }
  /** hist.coding runs: LEB128 (gap, length, first count, zigzag differences...) per maximal run of non-zero bins. */
  function runsHist(h: Float64Array): Uint8Array {
    const out: number[] = [];
    // BigInt: a zigzag difference of two counts near 2^53 is past 2^53, where a number is no longer exact
    const put = (x: number | bigint) => { let v = BigInt(x); while (v >= 128n) { out.push(Number(v % 128n) | 128); v /= 128n; } out.push(Number(v)); };
    let next = 0; // first bin after the previous run
    for (let b = 0; b < h.length; b++) {
      if (!h[b]) continue;
      let e = b;
      while (e < h.length && h[e]) e++;
      put(b - next); put(e - b); put(h[b]);
      for (let k = b + 1; k < e; k++) { const d = BigInt(h[k]) - BigInt(h[k - 1]); put(d >= 0n ? 2n * d : -2n * d - 1n); }
      next = e;
      b = e - 1;
    }
    return Uint8Array.from(out);
  }
  const SK_VARINT = { hist: { ...SK_HIST, coding: 'varint' } };
  const SK_RUNS = { hist: { ...SK_HIST, coding: 'runs' } };
  const sketchMsg = (over: Record<string, unknown> = {}, bufOver: Record<string, TypedArray | null> = {}) => assemble(sketchParts(over), bufOver);
  /** Sketch rejects keep only the sums buffers (small files); a case needing the hist adds the one it needs. */
  function sketchBad(description: string, over: Record<string, unknown>, bufOver: Record<string, TypedArray | null>, error: string) {
    const dropHists = Object.fromEntries(SK_SLICES.map((sl) => [`sketch/policy_vs_ref/${sl}/hist`, null]));
    return bad(description, sketchMsg(over, { ...dropHists, ...bufOver }).frames, error);
  }
  const sumsOf = (sl: string) => sketchParts().buffers[`sketch/policy_vs_ref/${sl}/sums`] as Float64Array;
  /** Per-rank summaries of the 2 ranks: rows = the 4 sums buffers in buffer order, fields n, abs_q99, abs_mean, ess. */
  const SK_PER_RANK = { ranks: 2, fields: ['n', 'abs_q99', 'abs_mean', 'ess'], tokens: [200_000_000, 100_000_000] };
  const perRankBuf = () => Float64Array.from([
    3, 1.5, 0.75, 0.6, 2, 1.5, 1, 0.5, 1, 3, 3, 1, 0, NaN, NaN, NaN, // rank 0: all, pre_tool, post_tool, tool_output
    1, 0.5, 0.5, 1, 1, 0.5, 0.5, 1, 0, NaN, NaN, NaN, 0, NaN, NaN, NaN, // rank 1
  ]);
  const perRankMsg = (over: Record<string, unknown> = {}, bufOver: Record<string, TypedArray | null> = {}) =>
    sketchMsg({ ...SK_VARINT, per_rank: SK_PER_RANK, ...over }, { 'sketch/per_rank': perRankBuf(), ...bufOver });
  /** A user slice `user:tool_call` (id 0) of policy_vs_ref holding the post_tool token (ℓ = 3), varint-coded. */
  const userBufs = () => {
    const p = sketchParts(SK_VARINT).buffers;
    return { 'sketch/policy_vs_ref/user/0/hist': p['sketch/policy_vs_ref/post_tool/hist'], 'sketch/policy_vs_ref/user/0/sums': p['sketch/policy_vs_ref/post_tool/sums'] };
  };
  const userMsg = (over: Record<string, unknown> = {}, bufOver: Record<string, TypedArray | null> = {}) =>
    sketchMsg({ ...SK_VARINT, slice_names: ['tool_call', 'other'], ...over }, { ...userBufs(), ...bufOver });
  const userBad = (description: string, over: Record<string, unknown>, bufOver: Record<string, TypedArray | null>, error: string) =>
    bad(description, userMsg(over, bufOver).frames, error);
  const perRankBad = (description: string, over: Record<string, unknown>, bufOver: Record<string, TypedArray | null>, error: string) =>
    bad(description, perRankMsg(over, bufOver).frames, error);
  return {
    description: 'sketch steps (mode "sketch"): per pair × slice, a 16386-bin histogram of |ℓ| (hist.coding dense: f64; varint / runs: u8 sparse varints, all = pre_tool + post_tool) and 21 f64 sums, reduced over every rank; user slices; per-rank summaries; stage D of a sketch step.',
    cases: [
      (() => {
        const m = sketchMsg();
        return ok('a sketch step of one pair (4 slices × hist + sums); tokens 3e8 > max_tokens_per_step is allowed: a sketch has a fixed size', m.frames, m.header, m.buffers);
      })(),
      (() => {
        const h = { ...sketchParts({ implicit: ['policy_vs_old', 'policy_vs_ref', 'old_vs_rollout'] }).header, buffers: [] };
        return ok('a sketch step with no pair buffers (every pair implicit)', [encodeHeader(h)], h, {});
      })(),
      sketchBad('hist layout of another build (mant_bits 6)', { hist: { ...SK_HIST, mant_bits: 6 } }, {}, 'E_SKETCH_LAYOUT'),
      sketchBad('hist layout missing', { hist: undefined }, {}, 'E_SKETCH_LAYOUT'),
      sketchBad('sums_fields in another order', { sums_fields: [...SK_FIELDS].reverse() }, {}, 'E_SKETCH_LAYOUT'),
      sketchBad('slice_counts missing', { slice_counts: undefined }, {}, 'E_SKETCH_LAYOUT'),
      sketchBad('slice_counts.post_tool negative', { slice_counts: { all: 4, pre_tool: 3, post_tool: -1, tool_output: 2 } }, {}, 'E_SKETCH_LAYOUT'),
      sketchBad('a raw token buffer in a sketch step', {}, { policy_vs_ref: new Float32Array(4) }, 'E_SKETCH_LAYOUT'),
      sketchBad('an unknown slice name', {}, { 'sketch/policy_vs_ref/turn_2/sums': sumsOf('all') }, 'E_SKETCH_LAYOUT'),
      sketchBad('sums buffer as f32', {}, { 'sketch/policy_vs_ref/all/sums': new Float32Array(21) }, 'E_DTYPE'),
      sketchBad('hist of 2050 bins (the 6-bit layout length): frame matches its descriptor, not the layout', {},
        { 'sketch/policy_vs_ref/all/hist': new Float64Array(2050) }, 'E_FRAME_LENGTH'),
      sketchBad('sums of 20 fields', {}, { 'sketch/policy_vs_ref/all/sums': new Float64Array(20) }, 'E_FRAME_LENGTH'),
      sketchBad('sums with a negative n', {}, { 'sketch/policy_vs_ref/all/sums': Float64Array.from(sumsOf('all'), (v, i) => (i === 0 ? -1 : v)) }, 'E_SKETCH_LAYOUT'),
      sketchBad('a pair without its histograms', {}, {}, 'E_SKETCH_LAYOUT'),
      (() => {
        const neg = Float64Array.from(sketchParts().buffers['sketch/policy_vs_ref/all/hist'] as Float64Array);
        neg[5] = -1;
        return sketchBad('a histogram with a negative count', {}, { 'sketch/policy_vs_ref/all/hist': neg }, 'E_SKETCH_LAYOUT');
      })(),
      (() => {
        const m = sketchMsg(SK_VARINT);
        return ok('hist.coding varint: each hist u8 (gap, count) varints of its non-zero bins, the all hist empty (= pre_tool + post_tool)', m.frames, m.header, m.buffers);
      })(),
      (() => {
        const big = new Float64Array(SK_BINS);
        big[0] = 2 ** 53 - 1; // the largest count: 8 bytes
        big[SK_BINS - 1] = 1; // the last bin: a 2-byte gap
        const m = sketchMsg(SK_VARINT, { 'sketch/policy_vs_ref/tool_output/hist': varintHist(big) });
        return ok('hist.coding varint: a count of 2^53 - 1 (8-byte varint) and the last bin', m.frames, m.header, m.buffers);
      })(),
      sketchBad('hist.coding not dense|varint|runs', { hist: { ...SK_HIST, coding: 'zstd' } }, {}, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding varint with an f64 hist', SK_VARINT, { 'sketch/policy_vs_ref/pre_tool/hist': new Float64Array(SK_BINS) }, 'E_DTYPE'),
      sketchBad('hist.coding varint with a non-empty all hist', SK_VARINT, { 'sketch/policy_vs_ref/all/hist': Uint8Array.of(0, 1) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding varint: truncated varint', SK_VARINT, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(3, 0x81) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding varint: a gap with no count', SK_VARINT, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(3) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding varint: a zero count', SK_VARINT, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(3, 0) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding varint: a non-minimal varint', SK_VARINT, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(0x83, 0, 1) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding varint: a 9-byte varint', SK_VARINT, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding varint: a count of 2^53', SK_VARINT, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding varint: a bin past the last (gap 16386)', SK_VARINT, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(0x82, 0x80, 0x01, 1) }, 'E_SKETCH_LAYOUT'),
      (() => {
        const m = sketchMsg(SK_RUNS);
        return ok('hist.coding runs (what the shim sends): each hist u8 (gap, length, first count, zigzag differences...) per maximal run of non-zero bins, the all hist empty', m.frames, m.header, m.buffers);
      })(),
      (() => {
        const run = new Float64Array(SK_BINS);
        run.fill(3, 100, 140);
        run.set([1, Number.MAX_SAFE_INTEGER, 1], 200); // differences ±(2^53 − 2): zigzag values past 2^53
        run[SK_BINS - 1] = Number.MAX_SAFE_INTEGER;
        const m = sketchMsg(SK_RUNS, { 'sketch/policy_vs_ref/tool_output/hist': runsHist(run) });
        return ok('hist.coding runs: a run of 40 bins, a run 1, 2^53 - 1, 1 (zigzag differences past 2^53), and a count of 2^53 - 1 in the last bin', m.frames, m.header, m.buffers);
      })(),
      sketchBad('hist.coding runs: a run of length 0', SK_RUNS, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(3, 0) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding runs: a gap of 0 between runs (not maximal)', SK_RUNS, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(0, 1, 1, 0, 1, 1) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding runs: a run past the last bin', SK_RUNS, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(0x81, 0x80, 0x01, 2, 1, 1) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding runs: fewer counts than the run length', SK_RUNS, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(5, 2, 1) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding runs: a first count of 0', SK_RUNS, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(5, 2, 0, 2) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding runs: a difference that makes a count 0 (zigzag 1 = -1 after 1)', SK_RUNS, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(5, 2, 1, 1) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding runs: a difference past 2^53 - 1 (+1 after 2^53 - 1)', SK_RUNS, { 'sketch/policy_vs_ref/pre_tool/hist': Uint8Array.of(5, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 2) }, 'E_SKETCH_LAYOUT'),
      sketchBad('hist.coding runs with an f64 hist', SK_RUNS, { 'sketch/policy_vs_ref/pre_tool/hist': new Float64Array(SK_BINS) }, 'E_DTYPE'),
      (() => {
        const m = perRankMsg();
        return ok('per-rank summaries: per_rank {ranks, fields, tokens} and sketch/per_rank f64, rank × sums buffer (in buffer order) × field; NaN where a rank has no value', m.frames, m.header, m.buffers);
      })(),
      perRankBad('per_rank without the sketch/per_rank buffer', {}, { 'sketch/per_rank': null }, 'E_SKETCH_LAYOUT'),
      perRankBad('sketch/per_rank without per_rank', { per_rank: undefined }, {}, 'E_SKETCH_LAYOUT'),
      perRankBad('per_rank.ranks differs from world_size', { per_rank: { ...SK_PER_RANK, ranks: 1, tokens: [3] } }, {}, 'E_SKETCH_LAYOUT'),
      perRankBad('per_rank.fields in another order', { per_rank: { ...SK_PER_RANK, fields: ['n', 'abs_mean', 'abs_q99', 'ess'] } }, {}, 'E_SKETCH_LAYOUT'),
      perRankBad('per_rank.tokens with one entry for 2 ranks', { per_rank: { ...SK_PER_RANK, tokens: [3] } }, {}, 'E_SKETCH_LAYOUT'),
      perRankBad('sketch/per_rank one row short', {}, { 'sketch/per_rank': perRankBuf().subarray(4) }, 'E_FRAME_LENGTH'),
      perRankBad('sketch/per_rank as f32', {}, { 'sketch/per_rank': Float32Array.from(perRankBuf()) }, 'E_DTYPE'),
      perRankBad('sketch/per_rank with a negative n', {}, { 'sketch/per_rank': perRankBuf().map((v, i) => (i === 4 ? -1 : v)) }, 'E_SKETCH_LAYOUT'),
      (() => {
        const m = userMsg();
        return ok('a user slice: sketch/<pair>/user/<id>/{hist,sums} is slice user:<slice_names[id]>; ids with no tokens are not sent', m.frames, m.header, m.buffers);
      })(),
      userBad('a user slice id not in slice_names', { slice_names: ['tool_call'] }, { 'sketch/policy_vs_ref/user/1/hist': userBufs()['sketch/policy_vs_ref/user/0/hist'], 'sketch/policy_vs_ref/user/1/sums': userBufs()['sketch/policy_vs_ref/user/0/sums'] }, 'E_SKETCH_LAYOUT'),
      userBad('a user slice id with a leading zero', {}, { 'sketch/policy_vs_ref/user/0/hist': null, 'sketch/policy_vs_ref/user/0/sums': null, 'sketch/policy_vs_ref/user/00/hist': userBufs()['sketch/policy_vs_ref/user/0/hist'], 'sketch/policy_vs_ref/user/00/sums': userBufs()['sketch/policy_vs_ref/user/0/sums'] }, 'E_SKETCH_LAYOUT'),
      userBad('a user slice without its sums', {}, { 'sketch/policy_vs_ref/user/0/sums': null }, 'E_SKETCH_LAYOUT'),
      userBad('17 user slice names (at most 16 in a sketch step)', { slice_names: Array.from({ length: 17 }, (_, i) => `s${i}`) }, {}, 'E_SKETCH_LAYOUT'),
      userBad('duplicate user slice names', { slice_names: ['tool_call', 'tool_call'] }, {}, 'E_SKETCH_LAYOUT'),
    ],
  };
}
