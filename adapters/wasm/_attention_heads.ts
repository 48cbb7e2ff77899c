// The attention core's work for one (sample, head) pair, shared by the JS thread and the packed
// product's workers (_gemm_threads.ts, _gemm_worker.ts): the query-key scores, the output
// P · v, and the whole backward of one head. A phase (which of the three, the shapes, the
// tensors' heap offsets, the scale, the scratch) is a small Int32Array; the JS thread either
// runs its pairs one after the other or posts it in the pool's control block, where every
// thread claims pairs and runs them with its own scratch. A pair's outputs (its score matrix,
// or its columns of the outputs) belong to it alone, and it runs the same code in the same order
// whichever thread takes it, so results are bitwise the same for any thread count.
//
// Imports nothing from tfjs: a worker loads it.
import { GEMM_PANEL_COLUMNS, type GemmJob, type GemmSimd, paddedColumns } from "./gemm_simd_wat.ts";

/**
 * Which work a phase does.
 *
 * @example
 * ```ts
 * import { HEAD_PHASE, PHASE, PHASE_FIELDS } from "./_attention_heads.ts";
 * const phase = new Int32Array(PHASE_FIELDS);
 * phase[PHASE.kind] = HEAD_PHASE.scores;
 * ```
 */
export const HEAD_PHASE = { scores: 1, output: 2, grad: 3 } as const;

/**
 * Field offsets of a phase (Int32s; the scale is a float64 over two of them).
 *
 * @example
 * ```ts
 * import { PHASE, PHASE_FIELDS } from "./_attention_heads.ts";
 * const phase = new Int32Array(PHASE_FIELDS);
 * phase[PHASE.heads] = 12;
 * ```
 */
export const PHASE = {
  kind: 0,
  heads: 1,
  lq: 2,
  lk: 3,
  /** q's and k's row length, and one head's share of it. */
  dAll: 4,
  d: 5,
  /** v's row length, and one head's share of it. */
  dvAll: 6,
  dv: 7,
  /** Byte offsets: the scaled queries (forward) or the queries (backward), keys, values. */
  q: 8,
  k: 9,
  v: 10,
  /** The [B, heads, Lq, Lk] scores (forward, written by `scores`) or probabilities. */
  p: 11,
  /** The output [B, Lq, Dv] (forward). */
  out: 12,
  /** Backward: the output gradient, and the three input gradients written. */
  dy: 13,
  dq: 14,
  dk: 15,
  dvOut: 16,
  /** float64 (Int32s 18 and 19: 8-byte aligned where the phase is). */
  scale: 18,
  /** The first thread's scratch (bytes), and the bytes between two threads' scratch (set by
   * the runner, `runHeadPhase`). */
  scratch: 20,
  stride: 21,
} as const;

/**
 * Int32s of a phase.
 *
 * @example
 * ```ts
 * import { PHASE_FIELDS } from "./_attention_heads.ts";
 * const phase = new Int32Array(PHASE_FIELDS);
 * ```
 */
export const PHASE_FIELDS = 22;

/** A product of the phase: into `job.c`, through `pad` where n is not whole panels (0: it is). */
export type HeadProduct = (job: GemmJob, pad: number) => void;

/** The shapes of a phase: heads, lengths, widths of q/k and v, in all and per head. */
export interface HeadDims {
  heads: number;
  lq: number;
  lk: number;
  /** q's and k's row length, and one head's share of it. */
  dAll: number;
  d: number;
  /** v's row length, and one head's share of it. */
  dvAll: number;
  dv: number;
}

/**
 * A phase of `kind` for these shapes; the heap offsets (and, for the backward, the scale) are
 * the caller's to set, the scratch is the runner's.
 *
 * @example
 * ```ts
 * import { HEAD_PHASE, newPhase, PHASE } from "./_attention_heads.ts";
 * const phase = newPhase(HEAD_PHASE.scores, { heads: 12, lq: 77, lk: 77, dAll: 768, d: 64, dvAll: 768, dv: 64 });
 * console.log(phase[PHASE.d]); // 64
 * ```
 */
export function newPhase(kind: number, dims: HeadDims): Int32Array {
  const phase = new Int32Array(PHASE_FIELDS);
  phase[PHASE.kind] = kind;
  phase[PHASE.heads] = dims.heads;
  phase[PHASE.lq] = dims.lq;
  phase[PHASE.lk] = dims.lk;
  phase[PHASE.dAll] = dims.dAll;
  phase[PHASE.d] = dims.d;
  phase[PHASE.dvAll] = dims.dvAll;
  phase[PHASE.dv] = dims.dv;
  return phase;
}

/**
 * The float32 values the phase needs as scratch per thread.
 *
 * @example
 * ```ts
 * import { HEAD_PHASE, headScratchValues, newPhase } from "./_attention_heads.ts";
 * const dims = { heads: 12, lq: 77, lk: 77, dAll: 768, d: 64, dvAll: 768, dv: 64 };
 * console.log(headScratchValues(newPhase(HEAD_PHASE.grad, dims)));
 * ```
 */
export function headScratchValues(phase: Int32Array): number {
  const [lq, lk, d, dv] = [phase[PHASE.lq], phase[PHASE.lk], phase[PHASE.d], phase[PHASE.dv]];
  const kind = phase[PHASE.kind];
  const lkp = paddedColumns(lk);
  if (kind === HEAD_PHASE.scores) return d * lkp + lq * lkp;
  if (kind === HEAD_PHASE.output) return lk * paddedColumns(dv) + lq * paddedColumns(dv);
  const wide = Math.max(lk, lq) * paddedColumns(Math.max(d, dv));
  return Math.max(dv * lkp, wide) + lq * lkp + 2 * lq * lk + wide;
}

/**
 * A phase's multiply-adds over all its pairs (for the choice of sharing it).
 *
 * @example
 * ```ts
 * import { headMacs } from "./_attention_heads.ts";
 * declare const phase: Int32Array;
 * console.log(headMacs(phase, 24));
 * ```
 */
export function headMacs(phase: Int32Array, pairs: number): number {
  const [lq, lk, d, dv] = [phase[PHASE.lq], phase[PHASE.lk], phase[PHASE.d], phase[PHASE.dv]];
  const kind = phase[PHASE.kind];
  const one = kind === HEAD_PHASE.scores
    ? lq * paddedColumns(lk) * d
    : kind === HEAD_PHASE.output
    ? lq * paddedColumns(dv) * lk
    : lq * paddedColumns(lk) * dv + 2 * lq * lk * d + lq * lk * dv;
  return pairs * one;
}

/**
 * The phase's scale (a float64 over two Int32s).
 *
 * @example
 * ```ts
 * import { PHASE_FIELDS, phaseScale, setPhaseScale } from "./_attention_heads.ts";
 * const phase = new Int32Array(PHASE_FIELDS);
 * setPhaseScale(phase, 0.125);
 * console.log(phaseScale(phase)); // 0.125
 * ```
 */
export function phaseScale(phase: Int32Array): number {
  return new Float64Array(phase.buffer, phase.byteOffset + 4 * PHASE.scale, 1)[0];
}

/**
 * Set the phase's scale (kept as a float64: the softmax gradient multiplies by it in float64,
 * as before the phases).
 *
 * @example
 * ```ts
 * import { PHASE_FIELDS, setPhaseScale } from "./_attention_heads.ts";
 * setPhaseScale(new Int32Array(PHASE_FIELDS), 1 / 8);
 * ```
 */
export function setPhaseScale(phase: Int32Array, scale: number): void {
  new Float64Array(phase.buffer, phase.byteOffset + 4 * PHASE.scale, 1)[0] = scale;
}

/**
 * A product run on this thread alone, as `runGemmUnpadded` runs one it does not share: C
 * straight when n is whole panels, else through `pad` and `unpad`.
 */
export function serialProduct(g: GemmSimd): HeadProduct {
  return (job, pad) => {
    const { m, n, k, a, b, bias, c } = job;
    const [lda, ldc] = [job.lda ?? k, job.ldc ?? n];
    const np = paddedColumns(n);
    if (np === n) return g.gemm(m, n, k, a, lda, b, bias, c, ldc, 0, n / GEMM_PANEL_COLUMNS);
    g.gemm(m, np, k, a, lda, b, bias, pad, np, 0, np / GEMM_PANEL_COLUMNS);
    g.unpad(pad, m, np, n, c, ldc);
  };
}

/**
 * Run pairs p0 … p1 − 1 of `phase` on thread `thread` (its scratch: the phase's scratch plus
 * `thread` strides).
 *
 * @example
 * ```ts
 * import { runHeadPairs, serialProduct } from "./_attention_heads.ts";
 * import type { GemmSimd } from "./gemm_simd_wat.ts";
 * declare const [phase, g]: [Int32Array, GemmSimd];
 * runHeadPairs(phase, 0, 4, 0, g, serialProduct(g));
 * ```
 */
export function runHeadPairs(
  phase: Int32Array,
  p0: number,
  p1: number,
  thread: number,
  g: GemmSimd,
  product: HeadProduct,
): void {
  const f = (i: number) => phase[i];
  const [heads, lq, lk, dAll, d, dvAll, dv] = [
    f(PHASE.heads),
    f(PHASE.lq),
    f(PHASE.lk),
    f(PHASE.dAll),
    f(PHASE.d),
    f(PHASE.dvAll),
    f(PHASE.dv),
  ];
  const scratch = f(PHASE.scratch) + thread * f(PHASE.stride);
  const kind = f(PHASE.kind);
  const lkp = paddedColumns(lk);
  const scale = kind === HEAD_PHASE.grad ? phaseScale(phase) : 0;
  for (let t = p0; t < p1; t++) {
    const i = Math.floor(t / heads);
    const h = t - i * heads;
    const qh = 4 * (i * lq * dAll + h * d);
    const kh = 4 * (i * lk * dAll + h * d);
    const vh = 4 * (i * lk * dvAll + h * dv);
    const ph = f(PHASE.p) + 4 * t * lq * lk;
    if (kind === HEAD_PHASE.scores) {
      const packed = scratch, pad = scratch + 4 * d * lkp;
      g.pack_transposed(f(PHASE.k) + kh, lk, d, dAll, packed);
      product(
        { m: lq, n: lk, k: d, a: f(PHASE.q) + qh, lda: dAll, b: packed, bias: 0, c: ph, ldc: lk },
        pad,
      );
    } else if (kind === HEAD_PHASE.output) {
      const packed = scratch, pad = scratch + 4 * lk * paddedColumns(dv);
      g.pack(f(PHASE.v) + vh, lk, dv, dvAll, packed);
      const oh = f(PHASE.out) + 4 * (i * lq * dvAll + h * dv);
      product({ m: lq, n: dv, k: lk, a: ph, lda: lk, b: packed, bias: 0, c: oh, ldc: dvAll }, pad);
    } else {
      headGrad(g, product, scratch, {
        lq,
        lk,
        lkp,
        d,
        dAll,
        dv,
        dvAll,
        scale,
        yh: f(PHASE.dy) + 4 * (i * lq * dvAll + h * dv),
        qh: f(PHASE.q) + qh,
        kh: f(PHASE.k) + kh,
        vh: f(PHASE.v) + vh,
        ph,
        dqh: f(PHASE.dq) + qh,
        dkh: f(PHASE.dk) + kh,
        dvh: f(PHASE.dvOut) + vh,
      });
    }
  }
}

interface HeadGradArgs {
  lq: number;
  lk: number;
  lkp: number;
  d: number;
  dAll: number;
  dv: number;
  dvAll: number;
  scale: number;
  /** Byte offsets of this head's dy, q, k, v, probabilities and gradients. */
  yh: number;
  qh: number;
  kh: number;
  vh: number;
  ph: number;
  dqh: number;
  dkh: number;
  dvh: number;
}

// dP = dy_h · v_hᵀ; dS = scale · P ⊙ (dP − rowsum(dP ⊙ P)); dq = dS · k, dk = dSᵀ · q and
// dv = Pᵀ · dy, each into this head's columns in place.
function headGrad(
  g: GemmSimd,
  product: HeadProduct,
  scratch: number,
  a: HeadGradArgs,
): void {
  const { lq, lk, lkp, d, dAll, dv, dvAll } = a;
  const wide = Math.max(lk, lq) * paddedColumns(Math.max(d, dv));
  const packed = scratch;
  const dp = packed + 4 * Math.max(dv * lkp, wide);
  const ds = dp + 4 * lq * lkp;
  const at = ds + 4 * lq * lk;
  const pad = at + 4 * lq * lk;
  // dP kept padded (the softmax gradient reads it with its row stride).
  g.pack_transposed(a.vh, lk, dv, dvAll, packed);
  product({ m: lq, n: lkp, k: dv, a: a.yh, lda: dvAll, b: packed, bias: 0, c: dp }, 0);
  g.softmax_grad(a.ph, dp, ds, lq, lk, lkp, a.scale);
  g.pack(a.kh, lk, d, dAll, packed);
  product({ m: lq, n: d, k: lk, a: ds, lda: lk, b: packed, bias: 0, c: a.dqh, ldc: dAll }, pad);
  g.transpose(ds, lq, lk, at);
  g.pack(a.qh, lq, d, dAll, packed);
  product({ m: lk, n: d, k: lq, a: at, lda: lq, b: packed, bias: 0, c: a.dkh, ldc: dAll }, pad);
  g.transpose(a.ph, lq, lk, at);
  g.pack(a.yh, lq, dv, dvAll, packed);
  product({ m: lk, n: dv, k: lq, a: at, lda: lq, b: packed, bias: 0, c: a.dvh, ldc: dvAll }, pad);
}
