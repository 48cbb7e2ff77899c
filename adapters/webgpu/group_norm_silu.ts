/**
 * GroupNorm (optionally followed by SiLU) over NHWC tensors as two WebGPU compute shaders: one
 * workgroup per (sample, group) reduces the group's mean and variance (two passes over the data,
 * so no E[x²] − E[x]² cancellation), then one thread per element normalises, applies γ and β
 * and SiLU and writes once. The stock path reads and writes the tensor about ten times. The
 * gradient (for x, γ and β) is the analytic GroupNorm/SiLU backward written with stock ops,
 * reusing the saved statistics.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Tensor } from "../../core/tensor_types.ts";
import type { GroupNormWeights } from "../nn/group_norm.ts";
import {
  registerWebgpuKernel,
  runKernel,
  type WebGPUBackendLike,
  wgslProgram,
} from "./_program.ts";

const STATS = "TexforceGroupNormStats";
const APPLY = "TexforceGroupNormApply";
const REDUCE = 256;
const APPLY_WG = 256;

// x [B, P, C] → [B, G, 2] (mean, 1/√(var + eps)).
function statsKernel(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: unknown;
  attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const backend = args.backend as WebGPUBackendLike;
  const { x } = args.inputs as Record<string, tf.TensorInfo>;
  const { groups, eps } = args.attrs as unknown as { groups: number; eps: number };
  const [b, p, c] = x.shape;
  const code = `
    var<workgroup> part : array<f32, ${REDUCE}>;
    fn reduce(tid : i32, v : f32) -> f32 {
      part[tid] = v;
      workgroupBarrier();
      for (var s = ${REDUCE / 2}; s > 0; s = s / 2) {
        if (tid < s) { part[tid] = part[tid] + part[tid + s]; }
        workgroupBarrier();
      }
      let total = part[0];
      workgroupBarrier();
      return total;
    }
    fn main() {
      let tid = i32(localId.x);
      let bg = i32(workgroupId.x);
      let b = bg / uniforms.groups;
      let g = bg - b * uniforms.groups;
      let cg = uniforms.c / uniforms.groups;
      let n = uniforms.p * cg;
      let base = b * uniforms.p * uniforms.c + g * cg;
      var s = 0.0;
      for (var e = tid; e < n; e += ${REDUCE}) {
        let px = e / cg;
        s += x[base + px * uniforms.c + (e - px * cg)];
      }
      let mean = reduce(tid, s) / f32(n);
      var s2 = 0.0;
      for (var e = tid; e < n; e += ${REDUCE}) {
        let px = e / cg;
        let d = x[base + px * uniforms.c + (e - px * cg)] - mean;
        s2 += d * d;
      }
      let variance = reduce(tid, s2) / f32(n);
      if (tid == 0) {
        result[bg * 2] = mean;
        result[bg * 2 + 1] = inverseSqrt(variance + uniforms.eps);
      }
    }`;
  const program = wgslProgram({
    key: "texforceGroupNormStats",
    outputSize: b * groups * 2,
    dispatch: [b * groups, 1, 1],
    workgroupSize: REDUCE,
    inputs: ["x"],
    uniforms: "p : i32, c : i32, groups : i32, eps : f32,",
    code,
  });
  return backend.runWebGPUProgram(program, [x], "float32", [
    { type: "int32", data: [p] },
    { type: "int32", data: [c] },
    { type: "int32", data: [groups] },
    { type: "float32", data: [eps] },
  ]);
}

// y = act((x − mean) · rstd · γ + β), flat over x [B, P, C].
function applyKernel(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: unknown;
  attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const backend = args.backend as WebGPUBackendLike;
  const { x, stats, gamma, beta } = args.inputs as Record<string, tf.TensorInfo>;
  const { groups, silu } = args.attrs as unknown as { groups: number; silu: boolean };
  const [b, p, c] = x.shape;
  const size = b * p * c;
  const code = `
    fn main() {
      let idx = i32(workgroupId.x) * ${APPLY_WG} + i32(localId.x) +
        i32(workgroupId.y) * ${APPLY_WG} * i32(numWorkgroups.x);
      if (idx >= uniforms.size) { return; }
      let ch = idx % uniforms.c;
      let bi = idx / (uniforms.p * uniforms.c);
      let g = ch / (uniforms.c / uniforms.groups);
      let st = (bi * uniforms.groups + g) * 2;
      let z = (x[idx] - stats[st]) * stats[st + 1] * gamma[ch] + beta[ch];
      result[idx] = ${silu ? "z / (1.0 + exp(-z))" : "z"};
    }`;
  // Large tensors exceed 65535 workgroups in x: spread them over y.
  const groupsNeeded = Math.ceil(size / APPLY_WG);
  const gx = Math.min(groupsNeeded, 32768);
  const program = wgslProgram({
    key: `texforceGroupNormApply_${silu}`,
    outputSize: size,
    dispatch: [gx, Math.ceil(groupsNeeded / gx), 1],
    workgroupSize: APPLY_WG,
    inputs: ["x", "stats", "gamma", "beta"],
    uniforms: "p : i32, c : i32, groups : i32, size : i32,",
    code,
  });
  const out = backend.runWebGPUProgram(program, [x, stats, gamma, beta], "float32", [
    { type: "int32", data: [p] },
    { type: "int32", data: [c] },
    { type: "int32", data: [groups] },
    { type: "int32", data: [size] },
  ]);
  return { dataId: out.dataId, shape: x.shape, dtype: "float32" };
}

function register(): void {
  registerWebgpuKernel(STATS, statsKernel as unknown as tf.KernelFunc);
  registerWebgpuKernel(APPLY, applyKernel as unknown as tf.KernelFunc);
}

/**
 * `silu(groupNorm(x, w))` (or `groupNorm(x, w)` with `silu` false) for x [B, H, W, C] or
 * [B, L, C] on the webgpu backend, with gradients for x, γ and β. Same result as the stock
 * `groupNorm` (and `x · σ(x)`) up to float rounding.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { groupNormSilu } from "@texforce/core/adapters";
 * const y = groupNormSilu(tf.ones([1, 8, 8, 64]), {
 *   weight: tf.ones([64]), bias: tf.zeros([64]), groups: 32, eps: 1e-5,
 * }); // on webgpu
 * ```
 */
export function groupNormSilu(x: Tensor, w: GroupNormWeights, silu = true): Tensor {
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`groupNormSilu: needs the webgpu backend (active: ${tf.getBackend()})`);
  }
  const shape = x.shape;
  const b = shape[0];
  const c = shape[shape.length - 1];
  const g = w.groups;
  if (c % g !== 0 || w.weight.shape[0] !== c) {
    throw new Error(
      `groupNormSilu: ${c} channels, ${w.weight.shape[0]} weights and ${g} groups do not fit`,
    );
  }
  register();
  const p = x.size / (b * c);
  const f = tf.customGrad((xx, gamma, beta, save) => {
    const x3 = (xx as Tensor).reshape([b, p, c]);
    const stats = runKernel(STATS, { x: x3 }, { groups: g, eps: w.eps });
    const y = runKernel(APPLY, { x: x3, stats, gamma: gamma as Tensor, beta: beta as Tensor }, {
      groups: g,
      silu,
    }).reshape(shape);
    (save as tf.GradSaveFunc)([x3, stats, gamma as Tensor, beta as Tensor]);
    const gradFunc = (dy: Tensor | Tensor[], saved: Tensor[]): Tensor[] =>
      tf.tidy(() => {
        const [sx, st, sg, sb] = saved;
        const cg = c / g;
        const xg = sx.reshape([b, p, g, cg]);
        const s = st.reshape([b, 1, g, 2]);
        const mean = s.slice([0, 0, 0, 0], [b, 1, g, 1]);
        const rstd = s.slice([0, 0, 0, 1], [b, 1, g, 1]);
        const xhat = tf.mul(tf.sub(xg, mean), rstd).reshape([b, p, c]);
        let dz = (dy as Tensor).reshape([b, p, c]);
        if (silu) {
          // silu'(z) = σ(z) (1 + z (1 − σ(z))).
          const z = tf.add(tf.mul(xhat, sg), sb);
          const sig = tf.sigmoid(z);
          dz = tf.mul(dz, tf.mul(sig, tf.add(1, tf.mul(z, tf.sub(1, sig)))));
        }
        const dGamma = tf.sum(tf.mul(dz, xhat), [0, 1]);
        const dBeta = tf.sum(dz, [0, 1]);
        const dxhat = tf.mul(dz, sg).reshape([b, p, g, cg]);
        const xh = xhat.reshape([b, p, g, cg]);
        const m1 = tf.mean(dxhat, [1, 3], true);
        const m2 = tf.mean(tf.mul(dxhat, xh), [1, 3], true);
        const dx = tf.mul(tf.sub(tf.sub(dxhat, m1), tf.mul(xh, m2)), rstd).reshape(shape);
        return [dx, dGamma, dBeta];
      });
    return { value: y, gradFunc };
  });
  return f(x, w.weight, w.bias) as Tensor;
}
