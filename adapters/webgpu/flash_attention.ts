/**
 * Attention that never materialises the Lq × Lk score matrix, as WebGPU compute shaders
 * (FlashAttention's tiling with an online softmax): each thread owns one query row and keeps
 * its running maximum, normaliser and output in registers while the workgroup streams tiles of
 * keys and values through shared memory. The backward pass recomputes the probabilities from the
 * saved row log-sum-exp (FlashAttention-2): one kernel accumulates dQ over keys, one accumulates
 * dK and dV over queries. Memory is O(L·d) instead of O(L²) in both directions.
 *
 * Heads are read in place from the [B, L, heads·d] projections, so no head transposes are made.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Tensor } from "../../core/tensor_types.ts";
import {
  registerWebgpuKernel,
  runKernel,
  webgpuBackend,
  type WebGPUBackendLike,
  wgslProgram,
  workgroupStorageBytes,
} from "./_program.ts";

/**
 * Settings of {@linkcode flashAttention}.
 *
 * @example
 * ```ts
 * import type { FlashAttentionOptions } from "@texforce/core/adapters";
 * const o: FlashAttentionOptions = { heads: 8, causal: false };
 * ```
 */
export interface FlashAttentionOptions {
  /** Number of heads the last axis is split into. */
  heads: number;
  /** Score scale; default 1/√(head width). */
  scale?: number;
  /** Mask keys after the query (self-attention only; CLIP's text encoder). */
  causal?: boolean;
}

/**
 * Widest head {@linkcode flashAttention} is used for by the models: each thread keeps about four
 * head-rows in registers, so wider heads (the VAE's single 512-wide head) spill and are left to
 * the stock path, whose score matrix is small for a single head.
 *
 * @example
 * ```ts
 * import { FLASH_MAX_HEAD_DIM } from "@texforce/core/adapters";
 * console.log(FLASH_MAX_HEAD_DIM); // 160: SD 1.5's widest (1280 / 8)
 * ```
 */
export const FLASH_MAX_HEAD_DIM = 160;

const FORWARD = "TexforceFlashAttention";
const GRAD_Q = "TexforceFlashAttentionGradQ";
const GRAD_KV = "TexforceFlashAttentionGradKV";
/** Query rows per workgroup (one per thread). */
const ROWS = 64;

interface Geometry {
  b: number;
  lq: number;
  lk: number;
  heads: number;
  d: number;
  /** Vector width of loads (4 when d is a multiple of 4). */
  w: number;
}

function geometry(q: tf.TensorInfo, k: tf.TensorInfo, heads: number): Geometry {
  const [b, lq, hd] = q.shape;
  const lk = k.shape[1];
  const d = hd / heads;
  return { b, lq, lk, heads, d, w: d % 4 === 0 ? 4 : 1 };
}

/** WGSL helpers for a row of `d` floats held as `d / w` values of type T. */
function rowTypes(g: Geometry): { t: string; nv: number; helpers: string } {
  const t = g.w === 4 ? "vec4<f32>" : "f32";
  const nv = g.d / g.w;
  const helpers = `
    fn vdot(a : ${t}, b : ${t}) -> f32 { return ${g.w === 4 ? "dot(a, b)" : "a * b"}; }
    fn store(base : i32, v : ${t}) {
      ${
    g.w === 4
      ? "result[base] = v.x; result[base + 1] = v.y; result[base + 2] = v.z; result[base + 3] = v.w;"
      : "result[base] = v;"
  }
    }`;
  return { t, nv, helpers };
}

/** Tile length so that `perRow` floats per tile row fit the device's workgroup memory. */
function tileRows(backend: WebGPUBackendLike, perRow: number, cap = 32): number {
  const floats = Math.floor(Math.min(workgroupStorageBytes(backend), 32768) / 4) - 64;
  return Math.max(1, Math.min(cap, Math.floor(floats / perRow)));
}

const UNIFORMS = "heads : i32, lq : i32, lk : i32, scale : f32, causal : i32,";

function uniformValues(g: Geometry, scale: number, causal: boolean) {
  return [
    { type: "int32" as const, data: [g.heads] },
    { type: "int32" as const, data: [g.lq] },
    { type: "int32" as const, data: [g.lk] },
    { type: "float32" as const, data: [scale] },
    { type: "int32" as const, data: [causal ? 1 : 0] },
  ];
}

/**
 * The start of a kernel that gives each thread one query row i (forward, dQ): key and value tiles
 * of BK rows in workgroup memory, and the row's indices (b, h, i, its clamped iq, qBase).
 */
function queryRowPrologue(t: string, nv: number, bk: number, helpers: string): string {
  return `
    const NV : i32 = ${nv};
    const BK : i32 = ${bk};
    var<workgroup> ks : array<${t}, ${bk * nv}>;
    var<workgroup> vs : array<${t}, ${bk * nv}>;
    ${helpers}
    fn main() {
      let tid = i32(localId.x);
      let bh = i32(workgroupId.y);
      let b = bh / uniforms.heads;
      let h = bh - b * uniforms.heads;
      let i = i32(workgroupId.x) * ${ROWS} + tid;
      let iq = min(i, uniforms.lq - 1);
      let rowV = uniforms.heads * NV;
      let qBase = (b * uniforms.lq + iq) * rowV + h * NV;`;
}

// Forward: O [B, Lq, H·d] followed (withLse) by the row log-sum-exp [B, Lq, H], flat.
function forwardKernel(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: unknown;
  attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const backend = args.backend as WebGPUBackendLike;
  const { q, k, v } = args.inputs as Record<string, tf.TensorInfo>;
  const { heads, scale, causal, withLse } = args.attrs as unknown as {
    heads: number;
    scale: number;
    causal: boolean;
    withLse: boolean;
  };
  const g = geometry(q, k, heads);
  const { t, nv, helpers } = rowTypes(g);
  const bk = tileRows(backend, 2 * g.d);
  const outSize = g.b * g.lq * g.heads * g.d;
  const code = queryRowPrologue(t, nv, bk, helpers) + `
      var qr : array<${t}, ${nv}>;
      var acc : array<${t}, ${nv}>;
      for (var c = 0; c < NV; c++) {
        qr[c] = q[qBase + c] * uniforms.scale;
        acc[c] = ${t}(0.0);
      }
      var sc : array<f32, ${bk}>;
      var m = -1e30;
      var l = 0.0;
      for (var t0 = 0; t0 < uniforms.lk; t0 += BK) {
        for (var e = tid; e < BK * NV; e += ${ROWS}) {
          let jj = e / NV;
          let j = t0 + jj;
          if (j < uniforms.lk) {
            let idx = (b * uniforms.lk + j) * rowV + h * NV + (e - jj * NV);
            ks[e] = k[idx];
            vs[e] = v[idx];
          } else {
            ks[e] = ${t}(0.0);
            vs[e] = ${t}(0.0);
          }
        }
        workgroupBarrier();
        let n = min(BK, uniforms.lk - t0);
        var tmax = m;
        for (var jj = 0; jj < n; jj++) {
          var s = 0.0;
          for (var c = 0; c < NV; c++) { s += vdot(qr[c], ks[jj * NV + c]); }
          if (uniforms.causal != 0 && t0 + jj > i) { s = -1e30; }
          sc[jj] = s;
          tmax = max(tmax, s);
        }
        let corr = exp(m - tmax);
        l = l * corr;
        for (var c = 0; c < NV; c++) { acc[c] = acc[c] * corr; }
        for (var jj = 0; jj < n; jj++) {
          let p = exp(sc[jj] - tmax);
          l += p;
          for (var c = 0; c < NV; c++) { acc[c] += p * vs[jj * NV + c]; }
        }
        m = tmax;
        workgroupBarrier();
      }
      if (i < uniforms.lq) {
        let inv = 1.0 / l;
        let oBase = ((b * uniforms.lq + i) * uniforms.heads + h) * ${g.d};
        for (var c = 0; c < NV; c++) { store(oBase + c * ${g.w}, acc[c] * inv); }
        ${
    withLse ? `result[${outSize} + (b * uniforms.lq + i) * uniforms.heads + h] = m + log(l);` : ""
  }
      }
    }`;
  const program = wgslProgram({
    key: `texforceFlashFwd_${g.d}_${bk}_${withLse}_${outSize}`,
    outputSize: outSize + (withLse ? g.b * g.lq * g.heads : 0),
    dispatch: [Math.ceil(g.lq / ROWS), g.b * g.heads, 1],
    workgroupSize: ROWS,
    inputs: ["q", "k", "v"],
    components: [g.w, g.w, g.w],
    uniforms: UNIFORMS,
    code,
  });
  return backend.runWebGPUProgram(program, [q, k, v], "float32", uniformValues(g, scale, causal));
}

// dQ [B, Lq, H·d]: per query row, over all keys.
function gradQKernel(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: unknown;
  attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const backend = args.backend as WebGPUBackendLike;
  const { q, k, v, dy, lse, delta } = args.inputs as Record<string, tf.TensorInfo>;
  const { heads, scale, causal } = args.attrs as unknown as {
    heads: number;
    scale: number;
    causal: boolean;
  };
  const g = geometry(q, k, heads);
  const { t, nv, helpers } = rowTypes(g);
  const bk = tileRows(backend, 2 * g.d);
  const code = queryRowPrologue(t, nv, bk, helpers) + `
      let stat = (b * uniforms.lq + iq) * uniforms.heads + h;
      let rowLse = lse[stat];
      let rowDelta = delta[stat];
      var qr : array<${t}, ${nv}>;
      var gr : array<${t}, ${nv}>;
      var dq : array<${t}, ${nv}>;
      for (var c = 0; c < NV; c++) {
        qr[c] = q[qBase + c] * uniforms.scale;
        gr[c] = dy[qBase + c];
        dq[c] = ${t}(0.0);
      }
      for (var t0 = 0; t0 < uniforms.lk; t0 += BK) {
        for (var e = tid; e < BK * NV; e += ${ROWS}) {
          let jj = e / NV;
          let j = t0 + jj;
          if (j < uniforms.lk) {
            let idx = (b * uniforms.lk + j) * rowV + h * NV + (e - jj * NV);
            ks[e] = k[idx];
            vs[e] = v[idx];
          } else {
            ks[e] = ${t}(0.0);
            vs[e] = ${t}(0.0);
          }
        }
        workgroupBarrier();
        let n = min(BK, uniforms.lk - t0);
        for (var jj = 0; jj < n; jj++) {
          var s = 0.0;
          var dp = 0.0;
          for (var c = 0; c < NV; c++) {
            s += vdot(qr[c], ks[jj * NV + c]);
            dp += vdot(gr[c], vs[jj * NV + c]);
          }
          var p = exp(s - rowLse);
          if (uniforms.causal != 0 && t0 + jj > i) { p = 0.0; }
          let ds = p * (dp - rowDelta);
          for (var c = 0; c < NV; c++) { dq[c] += ds * ks[jj * NV + c]; }
        }
        workgroupBarrier();
      }
      if (i < uniforms.lq) {
        let oBase = ((b * uniforms.lq + i) * uniforms.heads + h) * ${g.d};
        for (var c = 0; c < NV; c++) { store(oBase + c * ${g.w}, dq[c] * uniforms.scale); }
      }
    }`;
  const program = wgslProgram({
    key: `texforceFlashGradQ_${g.d}_${bk}`,
    outputSize: g.b * g.lq * g.heads * g.d,
    dispatch: [Math.ceil(g.lq / ROWS), g.b * g.heads, 1],
    workgroupSize: ROWS,
    inputs: ["q", "k", "v", "dy", "lse", "delta"],
    components: [g.w, g.w, g.w, g.w, 1, 1],
    uniforms: UNIFORMS,
    code,
  });
  return backend.runWebGPUProgram(
    program,
    [q, k, v, dy, lse, delta],
    "float32",
    uniformValues(g, scale, causal),
  );
}

// dK then dV, each [B, Lk, H·d], flat: per key row, over all queries.
function gradKVKernel(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: unknown;
  attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const backend = args.backend as WebGPUBackendLike;
  const { q, k, v, dy, lse, delta } = args.inputs as Record<string, tf.TensorInfo>;
  const { heads, scale, causal } = args.attrs as unknown as {
    heads: number;
    scale: number;
    causal: boolean;
  };
  const g = geometry(q, k, heads);
  const { t, nv, helpers } = rowTypes(g);
  const bq = tileRows(backend, 2 * g.d + 2);
  const kvSize = g.b * g.lk * g.heads * g.d;
  const code = `
    const NV : i32 = ${nv};
    const BQ : i32 = ${bq};
    var<workgroup> qs : array<${t}, ${bq * nv}>;
    var<workgroup> gs : array<${t}, ${bq * nv}>;
    var<workgroup> lses : array<f32, ${bq}>;
    var<workgroup> deltas : array<f32, ${bq}>;
    ${helpers}
    fn main() {
      let tid = i32(localId.x);
      let bh = i32(workgroupId.y);
      let b = bh / uniforms.heads;
      let h = bh - b * uniforms.heads;
      let j = i32(workgroupId.x) * ${ROWS} + tid;
      let jk = min(j, uniforms.lk - 1);
      let rowV = uniforms.heads * NV;
      let kBase = (b * uniforms.lk + jk) * rowV + h * NV;
      var kr : array<${t}, ${nv}>;
      var vr : array<${t}, ${nv}>;
      var dk : array<${t}, ${nv}>;
      var dv : array<${t}, ${nv}>;
      for (var c = 0; c < NV; c++) {
        kr[c] = k[kBase + c];
        vr[c] = v[kBase + c];
        dk[c] = ${t}(0.0);
        dv[c] = ${t}(0.0);
      }
      for (var t0 = 0; t0 < uniforms.lq; t0 += BQ) {
        for (var e = tid; e < BQ * NV; e += ${ROWS}) {
          let ii = e / NV;
          let i = t0 + ii;
          if (i < uniforms.lq) {
            let idx = (b * uniforms.lq + i) * rowV + h * NV + (e - ii * NV);
            qs[e] = q[idx] * uniforms.scale;
            gs[e] = dy[idx];
          } else {
            qs[e] = ${t}(0.0);
            gs[e] = ${t}(0.0);
          }
        }
        for (var e = tid; e < BQ; e += ${ROWS}) {
          let i = min(t0 + e, uniforms.lq - 1);
          let stat = (b * uniforms.lq + i) * uniforms.heads + h;
          lses[e] = lse[stat];
          deltas[e] = delta[stat];
        }
        workgroupBarrier();
        let n = min(BQ, uniforms.lq - t0);
        for (var ii = 0; ii < n; ii++) {
          var s = 0.0;
          var dp = 0.0;
          for (var c = 0; c < NV; c++) {
            s += vdot(qs[ii * NV + c], kr[c]);
            dp += vdot(gs[ii * NV + c], vr[c]);
          }
          var p = exp(s - lses[ii]);
          if (uniforms.causal != 0 && j > t0 + ii) { p = 0.0; }
          let ds = p * (dp - deltas[ii]);
          for (var c = 0; c < NV; c++) {
            dv[c] += p * gs[ii * NV + c];
            dk[c] += ds * qs[ii * NV + c];
          }
        }
        workgroupBarrier();
      }
      if (j < uniforms.lk) {
        let oBase = ((b * uniforms.lk + j) * uniforms.heads + h) * ${g.d};
        for (var c = 0; c < NV; c++) {
          store(oBase + c * ${g.w}, dk[c]);
          store(${kvSize} + oBase + c * ${g.w}, dv[c]);
        }
      }
    }`;
  const program = wgslProgram({
    key: `texforceFlashGradKV_${g.d}_${bq}_${kvSize}`,
    outputSize: 2 * kvSize,
    dispatch: [Math.ceil(g.lk / ROWS), g.b * g.heads, 1],
    workgroupSize: ROWS,
    inputs: ["q", "k", "v", "dy", "lse", "delta"],
    components: [g.w, g.w, g.w, g.w, 1, 1],
    uniforms: UNIFORMS,
    code,
  });
  return backend.runWebGPUProgram(
    program,
    [q, k, v, dy, lse, delta],
    "float32",
    uniformValues(g, scale, causal),
  );
}

function register(): void {
  registerWebgpuKernel(FORWARD, forwardKernel as unknown as tf.KernelFunc);
  registerWebgpuKernel(GRAD_Q, gradQKernel as unknown as tf.KernelFunc);
  registerWebgpuKernel(GRAD_KV, gradKVKernel as unknown as tf.KernelFunc);
}

/**
 * Whether {@linkcode flashAttention} can run now (the active backend is webgpu).
 *
 * @example
 * ```ts
 * import { flashAttentionAvailable } from "@texforce/core/adapters";
 * console.log(flashAttentionAvailable());
 * ```
 */
export function flashAttentionAvailable(): boolean {
  return webgpuBackend() !== null;
}

/**
 * softmax(q kᵀ · scale) v per head, for q [B, Lq, heads·d] and k, v [B, Lk, heads·d] (the
 * projections as they come out of the linear layers), on the webgpu backend, with a gradient
 * for q, k and v that recomputes the probabilities tile by tile. Equal to
 * `multiHeadAttention(q, k, v, heads)` up to float rounding.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { flashAttention } from "@texforce/core/adapters";
 * const x = tf.ones([1, 4096, 320]);
 * const y = flashAttention(x, x, x, { heads: 8 }); // on webgpu
 * ```
 */
export function flashAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FlashAttentionOptions,
): Tensor {
  if (!flashAttentionAvailable()) {
    throw new Error(`flashAttention: needs the webgpu backend (active: ${tf.getBackend()})`);
  }
  const { heads } = options;
  const [b, lq, hd] = q.shape as [number, number, number];
  const lk = k.shape[1] as number;
  if (q.rank !== 3 || k.rank !== 3 || v.rank !== 3) {
    throw new Error(
      `flashAttention: q, k, v must be [B, L, heads·d]; got ${q.shape}, ${k.shape}, ${v.shape}`,
    );
  }
  if (hd % heads !== 0 || k.shape[2] !== hd || v.shape[2] !== hd || k.shape[0] !== b) {
    throw new Error(
      `flashAttention: widths must match and divide into ${heads} heads; got q ${q.shape}, ` +
        `k ${k.shape}, v ${v.shape}`,
    );
  }
  if (v.shape[1] !== lk) throw new Error(`flashAttention: k ${k.shape} and v ${v.shape} differ`);
  if (options.causal && lq !== lk) {
    throw new Error(`flashAttention: causal needs Lq = Lk; got ${lq} and ${lk}`);
  }
  register();
  const scale = options.scale ?? 1 / Math.sqrt(hd / heads);
  const causal = options.causal ?? false;
  const attrs = { heads, scale, causal };
  const f = tf.customGrad((qq, kk, vv, save) => {
    const [qt, kt, vt] = [qq, kk, vv] as Tensor[];
    const n = b * lq * hd;
    const packed = runKernel(FORWARD, { q: qt, k: kt, v: vt }, { ...attrs, withLse: true });
    const o = packed.slice([0], [n]).reshape([b, lq, hd]);
    const lse = packed.slice([n], [b * lq * heads]).reshape([b, lq, heads]);
    (save as tf.GradSaveFunc)([qt, kt, vt, o, lse]);
    const gradFunc = (dy: Tensor | Tensor[], saved: Tensor[]): Tensor[] =>
      tf.tidy(() => {
        const [sq, sk, sv, so, sl] = saved;
        const g = dy as Tensor;
        // delta_i = Σ_c dO_ic · O_ic per head (the softmax backward's row term).
        const delta = tf.tidy(() => tf.mul(g, so).reshape([b, lq, heads, hd / heads]).sum(-1));
        const inputs = { q: sq, k: sk, v: sv, dy: g, lse: sl, delta };
        const dq = runKernel(GRAD_Q, inputs, attrs).reshape([b, lq, hd]);
        const dkv = runKernel(GRAD_KV, inputs, attrs);
        const m = b * lk * hd;
        const dk = dkv.slice([0], [m]).reshape([b, lk, hd]);
        const dv = dkv.slice([m], [m]).reshape([b, lk, hd]);
        return [dq, dk, dv];
      });
    return { value: o, gradFunc };
  });
  return f(q, k, v) as Tensor;
}
