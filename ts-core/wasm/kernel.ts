// AssemblyScript source of ts-core/src/stats/kernel.wasm: the same per-token work as kernelRuns in
// ts-core/src/stats/kernel.ts (read that first), four tokens at a time with WebAssembly SIMD.
// Build: `npm run build:wasm` (asc, flags in package.json); test/kernel-wasm.test.ts rebuilds it and
// checks that the shipped .wasm is the built one and that both kernels agree.
//
// Groups of four finite tokens with |ℓ| < 3.99 take the vector path: bins, the sign counts, all sums
// and e^ℓ − 1 in f64x2 lanes; histogram increments, flag loads and table loads stay scalar (no
// gather/scatter in wasm). Any other group runs the scalar path, which is the JS loop statement for
// statement. Per-token values are the same IEEE operations as in JS; only the summation order differs
// (per-lane partial sums), so sums agree to rounding and counts exactly.
// Memory is laid out by the JS side (kernel-wasm.ts); every pointer below is a byte offset into it.

const GRID: f64 = 256;
const INV: f64 = 1.0 / 256;
const HALF: i32 = 1024;
const LIM: f64 = 3.99;
const C2: f64 = 1.0 / 2, C3: f64 = 1.0 / 6, C4: f64 = 1.0 / 24, C5: f64 = 1.0 / 120;
const BMIN: i32 = (127 - 24) << 23;
const SHIFT: i32 = 14;
const LAST: i32 = 16385;

// Results of one call (f64 slots of `out`).
const O_N = 0, O_NONFIN = 1, O_SUM = 2, O_ABS = 3, O_SQ = 4, O_K3 = 5, O_E15 = 6, O_E2 = 7, O_E3 = 8;
const O_CLIP = 9, O_NEGLO = 10, O_NEGHI = 11, O_AMAX = 12, O_S1 = 13, O_S2 = 14, O_CN = 15;

// Scalar state shared by the scalar path (globals: AssemblyScript has no closures).
let e15: i32 = 0, e2: i32 = 0, e3: i32 = 0, cl: i32 = 0, negLo: i32 = 0, negHi: i32 = 0, nonfin: i32 = 0;
let sSum: f64 = 0, sAbs: f64 = 0, sSq: f64 = 0, sK3: f64 = 0, sS1: f64 = 0, sS2: f64 = 0, amax: f64 = 0;
let cn: i32 = 0;
let gT15: f64 = 0, gT2: f64 = 0, gT3: f64 = 0, gLo: f64 = 0, gHi: f64 = 0;
let gB15: i32 = 0, gB2: i32 = 0, gB3: i32 = 0, gBLo: i32 = 0, gBHi: i32 = 0;
let gSh: usize = 0, gFlag: usize = 0, gEt: usize = 0, gCv: usize = 0, gCt: usize = 0;

/** Flag work of one finite token in bin `bin` with flags f ≠ 0 (exceedance/clip compares, candidates). */
@inline function flagged(xv: f64, a: f64, bin: i32, f: i32): void {
  if (f & 1) {
    if (bin == gB15 && a > gT15) e15++;
    if (bin == gB2 && a > gT2) e2++;
    if (bin == gB3 && a > gT3) e3++;
    if (bin == gBHi && xv > gHi) cl++;
    if (bin == gBLo && xv < gLo) cl++;
  }
  if (f > 1) {
    store<f32>(gCv + (<usize>cn << 2), <f32>a);
    store<u8>(gCt + <usize>cn, <u8>(f >> 1));
    cn++;
  }
}

/** One token, exactly the JS loop body. Returns 1 if finite (counted), else 0; adds ℓ to *rsum via return of sum. */
@inline function scalarToken(xv: f64, u: i32): i32 {
  if (xv - xv != 0) {
    nonfin++;
    return 0;
  }
  const d = ((u & 0x7fffffff) - BMIN) >> SHIFT;
  const bin = d < 0 ? 0 : d >= LAST ? LAST : d + 1;
  const p = gSh + (<usize>bin << 2);
  store<u32>(p, load<u32>(p) + 1);
  const neg = u >>> 31;
  negLo += neg & ((gBLo - bin) >>> 31);
  negHi += neg & ((gBHi - bin) >>> 31);
  const a = Math.abs(xv);
  const f = <i32>load<u8>(gFlag + <usize>bin);
  if (f != 0) flagged(xv, a, bin, f);
  sAbs += a;
  sSq += xv * xv;
  amax = Math.max(amax, a);
  let v: f64;
  if (a < LIM) {
    const m = nearest(xv * GRID);
    const o = gEt + (<usize>(<i32>m + HALF) << 5);
    const dl = xv - m * INV;
    const d2 = dl * dl;
    const q = d2 * (C2 + dl * C3 + d2 * (C4 + dl * C5));
    const E = load<f64>(o);
    const M1 = load<f64>(o, 8);
    v = M1 + E * (dl + q);
    sK3 += load<f64>(o, 16) + M1 * dl + E * q;
  } else {
    v = Math.expm1(xv);
    sK3 += v - xv;
  }
  sS1 += v;
  sS2 += v * (v + 2);
  return 1;
}

/**
 * Runs (start, end, code, seq) with `code` over x (f32 at xp): sh (u32 counts) and flags (u8) per bin,
 * etab (f64 quadruples e^a, expm1(a), e^a − 1 − a, pad), per-run (Σℓ, finite count) to seqOut (f64
 * pairs, indexed by run), candidates to cv/ct, totals to out (O_* slots). Returns the finite count.
 */
export function kernel(
  xp: usize, runsp: usize, nRuns: i32, code: i32, sh: usize, flag: usize, etab: usize, seqOut: usize,
  cv: usize, ct: usize, out: usize, clipLo: f64, clipHi: f64, t15: f64, t2: f64, t3: f64,
  b15: i32, b2: i32, b3: i32, bLo: i32, bHi: i32,
): i32 {
  e15 = e2 = e3 = cl = negLo = negHi = nonfin = cn = 0;
  sSum = sAbs = sSq = sK3 = sS1 = sS2 = amax = 0;
  gT15 = t15; gT2 = t2; gT3 = t3; gLo = clipLo; gHi = clipHi;
  gB15 = b15; gB2 = b2; gB3 = b3; gBLo = bLo; gBHi = bHi;
  gSh = sh; gFlag = flag; gEt = etab; gCv = cv; gCt = ct;
  const vBmin = i32x4.splat(BMIN), vMask = i32x4.splat(0x7fffffff), vOne = i32x4.splat(1);
  const vZero = i32x4.splat(0), vLast = i32x4.splat(LAST), vBLo = i32x4.splat(bLo), vBHi = i32x4.splat(bHi);
  const vLim = f32x4.splat(<f32>LIM), vGrid = f64x2.splat(GRID), vInv = f64x2.splat(INV);
  const vC2 = f64x2.splat(C2), vC3 = f64x2.splat(C3), vC4 = f64x2.splat(C4), vC5 = f64x2.splat(C5), vTwo = f64x2.splat(2);
  let vNegLo = vZero, vNegHi = vZero;
  let vAbs = f64x2.splat(0), vSq = vAbs, vK3 = vAbs, vS1 = vAbs, vS2 = vAbs, vMax = vAbs;
  let n: i32 = 0;
  for (let ri = 0; ri < nRuns; ri++) {
    const rp = runsp + (<usize>ri << 4);
    if (load<i32>(rp, 8) != code) continue;
    const start = load<i32>(rp), end = load<i32>(rp, 4);
    let vSum = f64x2.splat(0);
    let rsum: f64 = 0;
    let rn: i32 = 0;
    let i = start;
    for (; i + 4 <= end; i += 4) {
      const p = xp + (<usize>i << 2);
      const x4 = v128.load(p);
      const a4 = f32x4.abs(x4);
      // a < 3.99 is false for NaN and ±Inf: one test for "finite and on the table path"
      if (!i32x4.all_true(f32x4.lt(a4, vLim))) {
        for (let k = 0; k < 4; k++) {
          const xv = <f64>load<f32>(p + (<usize>k << 2));
          if (scalarToken(xv, load<i32>(p + (<usize>k << 2)))) (rsum += xv), rn++;
        }
        continue;
      }
      rn += 4;
      const d = i32x4.shr_s(i32x4.sub(v128.and(x4, vMask), vBmin), SHIFT);
      const bins = i32x4.min_s(i32x4.max_s(i32x4.add(d, vOne), vZero), vLast);
      const neg = i32x4.shr_u(x4, 31);
      vNegLo = i32x4.add(vNegLo, v128.and(neg, i32x4.shr_u(i32x4.sub(vBLo, bins), 31)));
      vNegHi = i32x4.add(vNegHi, v128.and(neg, i32x4.shr_u(i32x4.sub(vBHi, bins), 31)));
      const q0 = i32x4.extract_lane(bins, 0), q1 = i32x4.extract_lane(bins, 1);
      const q2 = i32x4.extract_lane(bins, 2), q3 = i32x4.extract_lane(bins, 3);
      let h = sh + (<usize>q0 << 2);
      store<u32>(h, load<u32>(h) + 1);
      h = sh + (<usize>q1 << 2);
      store<u32>(h, load<u32>(h) + 1);
      h = sh + (<usize>q2 << 2);
      store<u32>(h, load<u32>(h) + 1);
      h = sh + (<usize>q3 << 2);
      store<u32>(h, load<u32>(h) + 1);
      const f0 = <i32>load<u8>(flag + <usize>q0), f1 = <i32>load<u8>(flag + <usize>q1);
      const f2 = <i32>load<u8>(flag + <usize>q2), f3 = <i32>load<u8>(flag + <usize>q3);
      if ((f0 | f1 | f2 | f3) != 0) {
        if (f0) flagged(<f64>load<f32>(p), Math.abs(<f64>load<f32>(p)), q0, f0);
        if (f1) flagged(<f64>load<f32>(p, 4), Math.abs(<f64>load<f32>(p, 4)), q1, f1);
        if (f2) flagged(<f64>load<f32>(p, 8), Math.abs(<f64>load<f32>(p, 8)), q2, f2);
        if (f3) flagged(<f64>load<f32>(p, 12), Math.abs(<f64>load<f32>(p, 12)), q3, f3);
      }
      // two f64x2 halves: lanes 0,1 then 2,3
      for (let half = 0; half < 2; half++) {
        const xs = half == 0 ? x4 : v128.shuffle<f32>(x4, x4, 2, 3, 0, 1);
        const xd = f64x2.promote_low_f32x4(xs);
        const ad = f64x2.abs(xd);
        vSum = f64x2.add(vSum, xd);
        vAbs = f64x2.add(vAbs, ad);
        vSq = f64x2.add(vSq, f64x2.mul(xd, xd));
        vMax = f64x2.max(vMax, ad);
        const m = f64x2.nearest(f64x2.mul(xd, vGrid));
        const mi = i32x4.trunc_sat_f64x2_s_zero(m);
        const o0 = etab + (<usize>(i32x4.extract_lane(mi, 0) + HALF) << 5);
        const o1 = etab + (<usize>(i32x4.extract_lane(mi, 1) + HALF) << 5);
        const E = f64x2.replace_lane(f64x2.splat(load<f64>(o0)), 1, load<f64>(o1));
        const M1 = f64x2.replace_lane(f64x2.splat(load<f64>(o0, 8)), 1, load<f64>(o1, 8));
        const D = f64x2.replace_lane(f64x2.splat(load<f64>(o0, 16)), 1, load<f64>(o1, 16));
        const dl = f64x2.sub(xd, f64x2.mul(m, vInv));
        const d2 = f64x2.mul(dl, dl);
        // q = d2·(c2 + dl·c3 + d2·(c4 + dl·c5)), the JS expression's order
        const q = f64x2.mul(d2, f64x2.add(f64x2.add(vC2, f64x2.mul(dl, vC3)), f64x2.mul(d2, f64x2.add(vC4, f64x2.mul(dl, vC5)))));
        const v = f64x2.add(M1, f64x2.mul(E, f64x2.add(dl, q)));
        vK3 = f64x2.add(vK3, f64x2.add(f64x2.add(D, f64x2.mul(M1, dl)), f64x2.mul(E, q)));
        vS1 = f64x2.add(vS1, v);
        vS2 = f64x2.add(vS2, f64x2.mul(v, f64x2.add(v, vTwo)));
      }
    }
    for (; i < end; i++) {
      const p = xp + (<usize>i << 2);
      const xv = <f64>load<f32>(p);
      if (scalarToken(xv, load<i32>(p))) (rsum += xv), rn++;
    }
    rsum += f64x2.extract_lane(vSum, 0) + f64x2.extract_lane(vSum, 1);
    store<f64>(seqOut + (<usize>ri << 4), rsum);
    store<f64>(seqOut + (<usize>ri << 4), <f64>rn, 8);
    sSum += rsum;
    n += rn;
  }
  negLo += i32x4.extract_lane(vNegLo, 0) + i32x4.extract_lane(vNegLo, 1) + i32x4.extract_lane(vNegLo, 2) + i32x4.extract_lane(vNegLo, 3);
  negHi += i32x4.extract_lane(vNegHi, 0) + i32x4.extract_lane(vNegHi, 1) + i32x4.extract_lane(vNegHi, 2) + i32x4.extract_lane(vNegHi, 3);
  store<f64>(out + (O_N << 3), <f64>n);
  store<f64>(out + (O_NONFIN << 3), <f64>nonfin);
  store<f64>(out + (O_SUM << 3), sSum);
  store<f64>(out + (O_ABS << 3), sAbs + f64x2.extract_lane(vAbs, 0) + f64x2.extract_lane(vAbs, 1));
  store<f64>(out + (O_SQ << 3), sSq + f64x2.extract_lane(vSq, 0) + f64x2.extract_lane(vSq, 1));
  store<f64>(out + (O_K3 << 3), sK3 + f64x2.extract_lane(vK3, 0) + f64x2.extract_lane(vK3, 1));
  store<f64>(out + (O_E15 << 3), <f64>e15);
  store<f64>(out + (O_E2 << 3), <f64>e2);
  store<f64>(out + (O_E3 << 3), <f64>e3);
  store<f64>(out + (O_CLIP << 3), <f64>cl);
  store<f64>(out + (O_NEGLO << 3), <f64>negLo);
  store<f64>(out + (O_NEGHI << 3), <f64>negHi);
  store<f64>(out + (O_AMAX << 3), Math.max(amax, Math.max(f64x2.extract_lane(vMax, 0), f64x2.extract_lane(vMax, 1))));
  store<f64>(out + (O_S1 << 3), sS1 + f64x2.extract_lane(vS1, 0) + f64x2.extract_lane(vS1, 1));
  store<f64>(out + (O_S2 << 3), sS2 + f64x2.extract_lane(vS2, 0) + f64x2.extract_lane(vS2, 1));
  store<f64>(out + (O_CN << 3), <f64>cn);
  return n;
}
