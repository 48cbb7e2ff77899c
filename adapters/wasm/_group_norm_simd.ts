// GroupNorm (+ SiLU) forward and backward over NHWC rows with the SIMD loops of norm_simd.wat,
// run on tfjs' own wasm memory: the per-element passes are vectorised four channels at a time,
// the per-channel and per-group arithmetic (a few hundred values) stays in JS float64. JS loops
// over the elements cost 8–15 ns a value a pass here (V8 does not vectorise them); these about 1.
//
// Accuracy: each pass sums at most CHUNK rows in float32 lanes (shifted by the sample's first
// row, so a large mean does not swamp the deviations) before adding into float64, and group
// statistics combine per-channel ones exactly (parallel variance), so sums over a 512² VAE
// activation keep float32's precision.
import type * as tf from "@tensorflow/tfjs";
import { NORM_SIMD } from "./_norm_simd_wasm.ts";
import {
  heapInstance,
  heapMemory as memoryOf,
  heapOffset as offset,
  type WasmHeapBackend,
} from "./_wasm_heap.ts";

interface NormSimd {
  chan_sums(x: number, p: number, c: number, shift: number, s1: number, s2: number): void;
  affine(x: number, y: number, p: number, c: number, a: number, s: number): void;
  mul_into(x: number, y: number, bytes: number): void;
  silu_grad(dy: number, z: number, sg: number, out: number, bytes: number): void;
  chan_dot(dz: number, x: number, m: number, p: number, c: number, s1: number, s2: number): void;
  row_stats(x: number, rows: number, c: number, out: number): void;
  row_affine(
    x: number,
    y: number,
    rows: number,
    c: number,
    stats: number,
    gamma: number,
    beta: number,
  ): void;
  row_grad(
    dy: number,
    x: number,
    stats: number,
    gamma: number,
    rows: number,
    c: number,
    dx: number,
    dgamma: number,
    dbeta: number,
  ): void;
  dx_combine(
    dz: number,
    x: number,
    m: number,
    a1: number,
    a2: number,
    a3: number,
    out: number,
    p: number,
    c: number,
  ): void;
}

/** Rows summed in float32 before the float64 total. */
const CHUNK = 64;

/** The SIMD loops bound to this backend's memory, or null where it is not reachable. */
function simdFor(backend: WasmHeapBackend): NormSimd | null {
  return heapInstance<NormSimd>(backend, NORM_SIMD);
}

/**
 * Whether the SIMD path takes x viewed as [B, P, C]: float32 channels in fours (v128 lanes) and
 * tfjs' memory reachable.
 *
 * @example
 * ```ts
 * import { simdGroupNormFits } from "./_group_norm_simd.ts";
 * // inside a wasm kernel: if (simdGroupNormFits(backend, 64)) { ... }
 * ```
 */
export function simdGroupNormFits(backend: WasmHeapBackend, c: number): boolean {
  return c % 4 === 0 && simdFor(backend) !== null;
}

/** Per-channel float32 vectors in tfjs' heap, and float64 views for the JS side. */
class Vectors {
  readonly ptr: number;
  constructor(readonly backend: WasmHeapBackend, readonly c: number, readonly count: number) {
    this.ptr = backend.wasm._malloc(4 * c * count);
  }
  /** Byte offset of vector i. */
  at(i: number): number {
    return this.ptr + 4 * this.c * i;
  }
  /** A view of vector i (made after every allocation: growing the heap detaches views). */
  view(i: number): Float32Array {
    return new Float32Array(memoryOf(this.backend)!.buffer, this.at(i), this.c);
  }
  free(): void {
    this.backend.wasm._free(this.ptr);
  }
}

/**
 * Run `pass(p0, rows)` over the p rows in chunks of at most CHUNK, each leaving float32
 * per-channel sums in vectors i and j, and total them into s1 and s2 in float64.
 */
function sumInChunks(
  p: number,
  v: Vectors,
  i: number,
  j: number,
  s1: Float64Array,
  s2: Float64Array,
  pass: (p0: number, rows: number) => void,
): void {
  s1.fill(0);
  s2.fill(0);
  for (let p0 = 0; p0 < p; p0 += CHUNK) {
    pass(p0, Math.min(CHUNK, p - p0));
    const t1 = v.view(i);
    const t2 = v.view(j);
    for (let ch = 0; ch < s1.length; ch++) {
      s1[ch] += t1[ch];
      s2[ch] += t2[ch];
    }
  }
}

/**
 * Forward: writes y = act((x − mean) · rstd · γ + β) and stats [B, G, 2] (mean, rstd) for x
 * viewed as [B, P, C] with `groups` groups; returns nothing (outputs are made by the caller).
 * σ for SiLU comes from `sigmoid` (the backend's kernel).
 *
 * @example
 * ```ts
 * import { simdGroupNormForward } from "./_group_norm_simd.ts";
 * // simdGroupNormForward(backend, x, gamma, beta, y, stats, [b, p, c], groups, eps, silu, sig);
 * ```
 */
export function simdGroupNormForward(
  backend: WasmHeapBackend,
  x: tf.TensorInfo,
  gamma: Float32Array,
  beta: Float32Array,
  y: tf.TensorInfo,
  stats: tf.TensorInfo,
  [b, p, c]: [number, number, number],
  groups: number,
  eps: number,
  silu: boolean,
  sigmoid: (z: tf.TensorInfo) => tf.TensorInfo,
): void {
  const simd = simdFor(backend)!;
  const gam = Float64Array.from(gamma);
  const bet = Float64Array.from(beta);
  const v = new Vectors(backend, c, 5); // shift, s1, s2, a, s
  const cg = c / groups;
  const s1 = new Float64Array(c);
  const s2 = new Float64Array(c);
  const means = new Float64Array(groups);
  const rstds = new Float64Array(groups);
  const st = new Float32Array(b * groups * 2);
  try {
    for (let bi = 0; bi < b; bi++) {
      const xo = offset(backend, x) + 4 * bi * p * c;
      const mem = memoryOf(backend)!.buffer;
      const shift = new Float32Array(mem, xo, c).slice();
      v.view(0).set(shift);
      sumInChunks(p, v, 1, 2, s1, s2, (p0, rows) => {
        simd.chan_sums(xo + 4 * p0 * c, rows, c, v.at(0), v.at(1), v.at(2));
      });
      const a = v.view(3);
      const s = v.view(4);
      for (let g = 0; g < groups; g++) {
        // Channel means and squared deviations, combined exactly into the group's.
        let mu = 0;
        for (let ch = g * cg; ch < (g + 1) * cg; ch++) mu += shift[ch] + s1[ch] / p;
        mu /= cg;
        let m2 = 0;
        for (let ch = g * cg; ch < (g + 1) * cg; ch++) {
          const mc = shift[ch] + s1[ch] / p;
          m2 += Math.max(s2[ch] - s1[ch] * s1[ch] / p, 0) + p * (mc - mu) * (mc - mu);
        }
        const rstd = 1 / Math.sqrt(m2 / (p * cg) + eps);
        means[g] = mu;
        rstds[g] = rstd;
        st[(bi * groups + g) * 2] = mu;
        st[(bi * groups + g) * 2 + 1] = rstd;
        for (let ch = g * cg; ch < (g + 1) * cg; ch++) {
          a[ch] = rstd * gam[ch];
          s[ch] = bet[ch] - mu * rstd * gam[ch];
        }
      }
      simd.affine(xo, offset(backend, y) + 4 * bi * p * c, p, c, v.at(3), v.at(4));
    }
  } finally {
    v.free();
  }
  new Float32Array(memoryOf(backend)!.buffer, offset(backend, stats), b * groups * 2).set(st);
  if (silu) {
    const sg = sigmoid(y);
    simd.mul_into(offset(backend, y), offset(backend, sg), 4 * b * p * c);
    backend.disposeData(sg.dataId);
  }
}

/**
 * Backward: writes dx and returns dγ, dβ (float64, summed over samples and positions) for the
 * forward above, from dy, x, the saved stats and γ, β.
 *
 * @example
 * ```ts
 * import { simdGroupNormBackward } from "./_group_norm_simd.ts";
 * // const [dGamma, dBeta] = simdGroupNormBackward(backend, dy, x, stats, gamma, beta, dx, ...);
 * ```
 */
export function simdGroupNormBackward(
  backend: WasmHeapBackend,
  dy: tf.TensorInfo,
  x: tf.TensorInfo,
  stats: Float32Array,
  gamma: Float32Array,
  beta: Float32Array,
  dx: tf.TensorInfo,
  [b, p, c]: [number, number, number],
  groups: number,
  silu: boolean,
  sigmoid: (z: tf.TensorInfo) => tf.TensorInfo,
): [Float64Array, Float64Array] {
  const simd = simdFor(backend)!;
  const cg = c / groups;
  const n = p * cg;
  const gam = Float64Array.from(gamma);
  const dGamma = new Float64Array(c);
  const dBeta = new Float64Array(c);
  const s1 = new Float64Array(c);
  const s2 = new Float64Array(c);
  const v = new Vectors(backend, c, 6); // m, a1, a2, a3, s1, s2 (a, s reuse a1, a3 for z)
  let dzT: tf.TensorInfo | null = null;
  try {
    if (silu) {
      // dz = dy · silu'(z), z = x̂ γ + β recomputed, σ(z) from the backend's Sigmoid.
      dzT = backend.makeOutput(x.shape, "float32");
      for (let bi = 0; bi < b; bi++) {
        const a = v.view(1);
        const s = v.view(3);
        for (let ch = 0; ch < c; ch++) {
          const g = (ch / cg) | 0;
          const mean = stats[(bi * groups + g) * 2];
          const rstd = stats[(bi * groups + g) * 2 + 1];
          a[ch] = rstd * gamma[ch];
          s[ch] = beta[ch] - mean * rstd * gamma[ch];
        }
        const o = 4 * bi * p * c;
        simd.affine(offset(backend, x) + o, offset(backend, dzT) + o, p, c, v.at(1), v.at(3));
      }
      const sg = sigmoid(dzT);
      const z = offset(backend, dzT);
      simd.silu_grad(offset(backend, dy), z, offset(backend, sg), z, 4 * b * p * c);
      backend.disposeData(sg.dataId);
    }
    const dzo = offset(backend, dzT ?? dy);
    for (let bi = 0; bi < b; bi++) {
      const o = 4 * bi * p * c;
      const xo = offset(backend, x) + o;
      const m = v.view(0);
      for (let ch = 0; ch < c; ch++) m[ch] = stats[(bi * groups + ((ch / cg) | 0)) * 2];
      sumInChunks(p, v, 4, 5, s1, s2, (p0, rows) => {
        const r = 4 * p0 * c;
        simd.chan_dot(dzo + o + r, xo + r, v.at(0), rows, c, v.at(4), v.at(5));
      });
      const a1 = v.view(1);
      const a2 = v.view(2);
      const a3 = v.view(3);
      for (let g = 0; g < groups; g++) {
        const rstd = stats[(bi * groups + g) * 2 + 1];
        // m1 = mean of dx̂ = γ dz, m2 = mean of dx̂ · x̂, x̂ = (x − μ) rstd.
        let m1 = 0;
        let m2 = 0;
        for (let ch = g * cg; ch < (g + 1) * cg; ch++) {
          dBeta[ch] += s1[ch];
          dGamma[ch] += rstd * s2[ch];
          m1 += gam[ch] * s1[ch];
          m2 += gam[ch] * rstd * s2[ch];
        }
        m1 /= n;
        m2 /= n;
        for (let ch = g * cg; ch < (g + 1) * cg; ch++) {
          a1[ch] = rstd * gam[ch];
          a2[ch] = -rstd * rstd * m2;
          a3[ch] = -rstd * m1;
        }
      }
      simd.dx_combine(
        dzo + o,
        xo,
        v.at(0),
        v.at(1),
        v.at(2),
        v.at(3),
        offset(backend, dx) + o,
        p,
        c,
      );
    }
  } finally {
    v.free();
    if (dzT) backend.disposeData(dzT.dataId);
  }
  return [dGamma, dBeta];
}

/**
 * LayerNorm forward over rows of x [rows, c]: writes y and stats [rows, 2] (mean, rstd). The row
 * sums run in float32 lanes shifted by each row's first value; mean and rstd in float64.
 *
 * @example
 * ```ts
 * import { simdLayerNormForward } from "./_group_norm_simd.ts";
 * // simdLayerNormForward(backend, x, gamma, beta, y, stats, rows, c, eps);
 * ```
 */
export function simdLayerNormForward(
  backend: WasmHeapBackend,
  x: tf.TensorInfo,
  gamma: tf.TensorInfo,
  beta: tf.TensorInfo,
  y: tf.TensorInfo,
  stats: tf.TensorInfo,
  rows: number,
  c: number,
  eps: number,
): void {
  const simd = simdFor(backend)!;
  const so = offset(backend, stats);
  simd.row_stats(offset(backend, x), rows, c, so);
  const mem = memoryOf(backend)!.buffer;
  const st = new Float32Array(mem, so, 2 * rows);
  const xs = new Float32Array(mem, offset(backend, x), rows * c);
  for (let r = 0; r < rows; r++) {
    const m = st[2 * r] / c;
    st[2 * r] = xs[r * c] + m;
    st[2 * r + 1] = 1 / Math.sqrt(Math.max(st[2 * r + 1] / c - m * m, 0) + eps);
  }
  simd.row_affine(
    offset(backend, x),
    offset(backend, y),
    rows,
    c,
    so,
    offset(backend, gamma),
    offset(backend, beta),
  );
}

/**
 * LayerNorm backward for the forward above: writes dx, dγ and dβ (the last two summed over
 * rows).
 *
 * @example
 * ```ts
 * import { simdLayerNormBackward } from "./_group_norm_simd.ts";
 * // simdLayerNormBackward(backend, dy, x, stats, gamma, dx, dGamma, dBeta, rows, c);
 * ```
 */
export function simdLayerNormBackward(
  backend: WasmHeapBackend,
  dy: tf.TensorInfo,
  x: tf.TensorInfo,
  stats: tf.TensorInfo,
  gamma: tf.TensorInfo,
  dx: tf.TensorInfo,
  dGamma: tf.TensorInfo,
  dBeta: tf.TensorInfo,
  rows: number,
  c: number,
): void {
  const simd = simdFor(backend)!;
  const mem = memoryOf(backend)!.buffer;
  new Float32Array(mem, offset(backend, dGamma), c).fill(0);
  new Float32Array(mem, offset(backend, dBeta), c).fill(0);
  simd.row_grad(
    offset(backend, dy),
    offset(backend, x),
    offset(backend, stats),
    offset(backend, gamma),
    rows,
    c,
    offset(backend, dx),
    offset(backend, dGamma),
    offset(backend, dBeta),
  );
}
