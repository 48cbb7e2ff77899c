/**
 * GroupNorm and LayerNorm (optionally followed by SiLU) on the wasm backend as one kernel
 * forward and one backward, written over views of the wasm heap.
 *
 * Why: the stock composition (`moments`, `sub`, `rsqrt`, `mul`, `add`, and `sigmoid`/`mul` for
 * SiLU) is about 14 tfjs ops forward and 40 more backward, each with its dispatch, its saved
 * clones on the tape and a pass over the tensor; the broadcasts of group statistics take the
 * backend's slow generic path. In the tiny UNet at batch 2 the norms were about a third of
 * the kernels run and a fifth of the time, a cost that does not shrink with the batch. Here the
 * forward reads x twice and writes y once; the backward reads dy and x twice and writes dx once.
 * Sums are in float64 (JS numbers), so the result equals the stock path's up to float32
 * rounding.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { registerWasmKernels, type WasmKernelArgs } from "./_kernel_registry.ts";
import type { Tensor, Tensor1D } from "../../core/tensor_types.ts";
import { useWasmKernel } from "./kernel_options.ts";
import {
  simdGroupNormBackward,
  simdGroupNormFits,
  simdGroupNormForward,
  simdLayerNormBackward,
  simdLayerNormForward,
} from "./_group_norm_simd.ts";
import { heapOffset, type WasmHeapBackend } from "./_wasm_heap.ts";
import { activationSimdFor } from "./_activation_simd.ts";

const FORWARD = "TexforceWasmNorm";
const BACKWARD = "TexforceWasmNormGrad";

interface NormAttrs {
  groups: number;
  eps: number;
  silu: boolean;
  /** Normalise each row of the last axis alone (LayerNorm): x viewed as [rows, 1, C]. */
  layer: boolean;
}

/**
 * x viewed as [B, P, C]: B samples, P positions, C channels (last axis); for a LayerNorm, every
 * row is a sample of one position.
 */
function dims(shape: number[], layer = false): [number, number, number] {
  const c = shape[shape.length - 1];
  const size = shape.reduce((a, v) => a * v, 1);
  if (layer) return [size / c, 1, c];
  const b = shape[0];
  return [b, size / (b * c), c];
}

// Scratch buffers grown on demand (kernels run one at a time on the JS thread).
let f64 = new Float64Array(0);
function scratch(n: number): Float64Array {
  if (f64.length < n) f64 = new Float64Array(Math.max(n, 2 * f64.length));
  return f64;
}

// The SIMD loops (_group_norm_simd.ts) take spatial GroupNorms and LayerNorm rows with channels
// in fours; other shapes (odd channel counts, a single position per group) take the JS loops.
function useSimd(backend: WasmHeapBackend, p: number, c: number): boolean {
  return useWasmKernel("normSimd") && p >= 4 &&
    simdGroupNormFits(backend, c);
}

// Rows normalised alone (a LayerNorm: one position, one group) take the row loops.
function useRowSimd(
  backend: WasmHeapBackend,
  p: number,
  c: number,
  groups: number,
  silu: boolean,
): boolean {
  return useWasmKernel("normSimd") && p === 1 && groups === 1 && !silu &&
    simdGroupNormFits(backend, c);
}

// SiLU's σ(z) comes from activation_simd.wat's loop (JS's Math.exp costs about 20 ns a call
// here, more than the rest of the kernel), else from the backend's own Sigmoid kernel, which
// XNNPACK shares over its threads: at the tiny UNet's batch 2 waking them cost more than σ.
function sigmoidOf(backend: WasmHeapBackend, z: tf.TensorInfo): tf.TensorInfo {
  const size = z.shape.reduce((a, b) => a * b, 1);
  const simd = size % 4 === 0 ? activationSimdFor(backend) : null;
  if (simd) {
    const out = backend.makeOutput(z.shape, "float32");
    simd.sigmoid(heapOffset(backend, z), heapOffset(backend, out), 4 * size);
    return out;
  }
  const k = tf.getKernel("Sigmoid", "wasm");
  if (!k) throw new Error("fusedNorm: the wasm backend has no Sigmoid kernel");
  return k.kernelFunc({ inputs: { x: z }, backend, attrs: {} } as never) as tf.TensorInfo;
}

// Per (sample, group) mean and 1/√(var + eps) → stats [B, G, 2]; y = act(x · a + s) with
// per-channel a = rstd·γ and s = β − mean·rstd·γ. The sums run in one pass, shifted by the
// group's first value so E[d²] − E[d]² does not cancel (float64 sums of float32 values).
function forwardKernel(args: WasmKernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WasmHeapBackend;
  const { x, gamma, beta } = args.inputs;
  const { groups, eps, silu, layer } = args.attrs as unknown as NormAttrs;
  const [b, p, c] = dims(x.shape, layer);
  const y = backend.makeOutput(x.shape, "float32");
  const st = backend.makeOutput([b, groups, 2], "float32");
  if (useRowSimd(backend, p, c, groups, silu)) {
    simdLayerNormForward(backend, x, gamma, beta, y, st, b, c, eps);
    return [y, st];
  }
  if (useSimd(backend, p, c)) {
    simdGroupNormForward(
      backend,
      x,
      backend.typedArrayFromHeap(gamma).slice(),
      backend.typedArrayFromHeap(beta).slice(),
      y,
      st,
      [b, p, c],
      groups,
      eps,
      silu,
      (z) => sigmoidOf(backend, z),
    );
    return [y, st];
  }
  // Views after makeOutput: allocating can grow the heap and detach older views.
  const xs = backend.typedArrayFromHeap(x);
  const ys = backend.typedArrayFromHeap(y);
  const ss = backend.typedArrayFromHeap(st);
  const gs = backend.typedArrayFromHeap(gamma);
  const bs = backend.typedArrayFromHeap(beta);
  const cg = c / groups;
  const n = p * cg;
  // tmp: [0, G) Σd, [G, 2G) Σd², [2G, 3G) shift, [3G, 3G + C) a, [3G + C, 3G + 2C) s.
  const ao = 3 * groups;
  const so = ao + c;
  const tmp = scratch(so + c);
  for (let bi = 0; bi < b; bi++) {
    const base = bi * p * c;
    for (let g = 0; g < groups; g++) {
      tmp[g] = 0;
      tmp[groups + g] = 0;
      tmp[2 * groups + g] = xs[base + g * cg];
    }
    for (let px = 0, o = base; px < p; px++) {
      for (let g = 0; g < groups; g++) {
        const k = tmp[2 * groups + g];
        let s1 = 0;
        let s2 = 0;
        for (let j = 0; j < cg; j++) {
          const d = xs[o++] - k;
          s1 += d;
          s2 += d * d;
        }
        tmp[g] += s1;
        tmp[groups + g] += s2;
      }
    }
    for (let g = 0; g < groups; g++) {
      const md = tmp[g] / n;
      const mean = tmp[2 * groups + g] + md;
      const variance = Math.max(tmp[groups + g] / n - md * md, 0);
      const rstd = 1 / Math.sqrt(variance + eps);
      ss[(bi * groups + g) * 2] = mean;
      ss[(bi * groups + g) * 2 + 1] = rstd;
      for (let j = 0, ch = g * cg; j < cg; j++, ch++) {
        const a = rstd * gs[ch];
        tmp[ao + ch] = a;
        tmp[so + ch] = bs[ch] - mean * a;
      }
    }
    for (let px = 0, o = base; px < p; px++) {
      for (let ch = 0; ch < c; ch++, o++) ys[o] = xs[o] * tmp[ao + ch] + tmp[so + ch];
    }
  }
  if (silu) {
    const sg = sigmoidOf(backend, y);
    const zs = backend.typedArrayFromHeap(y);
    const sgs = backend.typedArrayFromHeap(sg);
    for (let i = 0; i < zs.length; i++) zs[i] *= sgs[i];
    backend.disposeData(sg.dataId);
  }
  return [y, st];
}

// dx = rstd · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)) over each group, dx̂ = dz · γ, dz = dy (times
// silu'(z) = σ(z)(1 + z(1 − σ(z))) with SiLU); dγ = Σ dz · x̂, dβ = Σ dz over samples and
// positions.
function backwardKernel(args: WasmKernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WasmHeapBackend;
  const { dy, x, stats, gamma, beta } = args.inputs;
  const { groups, silu, layer } = args.attrs as unknown as NormAttrs;
  const [b, p, c] = dims(x.shape, layer);
  const cg = c / groups;
  const n = p * cg;
  const dx = backend.makeOutput(x.shape, "float32");
  const dg = backend.makeOutput([c], "float32");
  const db = backend.makeOutput([c], "float32");
  if (useRowSimd(backend, p, c, groups, silu)) {
    simdLayerNormBackward(backend, dy, x, stats, gamma, dx, dg, db, b, c);
    return [dx, dg, db];
  }
  if (useSimd(backend, p, c)) {
    const [dGamma, dBeta] = simdGroupNormBackward(
      backend,
      dy,
      x,
      backend.typedArrayFromHeap(stats).slice(),
      backend.typedArrayFromHeap(gamma).slice(),
      backend.typedArrayFromHeap(beta).slice(),
      dx,
      [b, p, c],
      groups,
      silu,
      (z) => sigmoidOf(backend, z),
    );
    backend.typedArrayFromHeap(dg).set(dGamma);
    backend.typedArrayFromHeap(db).set(dBeta);
    return [dx, dg, db];
  }
  // With SiLU, z = x̂ γ + β goes through the backend's Sigmoid first.
  let sg: tf.TensorInfo | null = null;
  if (silu) {
    const z = backend.makeOutput(x.shape, "float32");
    const zs = backend.typedArrayFromHeap(z);
    const xs = backend.typedArrayFromHeap(x);
    const ss = backend.typedArrayFromHeap(stats);
    const gs = backend.typedArrayFromHeap(gamma);
    const bs = backend.typedArrayFromHeap(beta);
    for (let bi = 0, o = 0; bi < b; bi++) {
      for (let px = 0; px < p; px++) {
        for (let g = 0, ch = 0; g < groups; g++) {
          const mean = ss[(bi * groups + g) * 2];
          const rstd = ss[(bi * groups + g) * 2 + 1];
          for (let j = 0; j < cg; j++, ch++, o++) {
            zs[o] = (xs[o] - mean) * rstd * gs[ch] + bs[ch];
          }
        }
      }
    }
    sg = sigmoidOf(backend, z);
    backend.disposeData(z.dataId);
  }
  // Views after every allocation: allocating can grow the heap and detach older views.
  const dys = backend.typedArrayFromHeap(dy);
  const xs = backend.typedArrayFromHeap(x);
  const ss = backend.typedArrayFromHeap(stats);
  const gs = backend.typedArrayFromHeap(gamma);
  const bs = backend.typedArrayFromHeap(beta);
  const dxs = backend.typedArrayFromHeap(dx);
  const sgs = sg ? backend.typedArrayFromHeap(sg) : dys;
  // tmp: [0, C) dγ, [C, 2C) dβ, then dz for each element of one sample.
  const tz = 2 * c;
  const tmp = scratch(tz + p * c);
  for (let i = 0; i < 2 * c; i++) tmp[i] = 0;
  for (let bi = 0; bi < b; bi++) {
    const base = bi * p * c;
    for (let g = 0; g < groups; g++) {
      const mean = ss[(bi * groups + g) * 2];
      const rstd = ss[(bi * groups + g) * 2 + 1];
      // One group at a time: its statistics stay in registers.
      let s1 = 0;
      let s2 = 0;
      for (let px = 0; px < p; px++) {
        const o0 = base + px * c + g * cg;
        const e0 = tz + px * c + g * cg;
        for (let j = 0; j < cg; j++) {
          const o = o0 + j;
          const ch = g * cg + j;
          const xh = (xs[o] - mean) * rstd;
          const gamma = gs[ch];
          let dz = dys[o];
          if (silu) {
            // silu'(z) = σ(z) (1 + z (1 − σ(z))).
            const z = xh * gamma + bs[ch];
            const sig = sgs[o];
            dz *= sig * (1 + z * (1 - sig));
          }
          tmp[e0 + j] = dz;
          tmp[ch] += dz * xh;
          tmp[c + ch] += dz;
          const dxh = dz * gamma;
          s1 += dxh;
          s2 += dxh * xh;
        }
      }
      const m1 = s1 / n;
      const m2 = s2 / n;
      for (let px = 0; px < p; px++) {
        const o0 = base + px * c + g * cg;
        const e0 = tz + px * c + g * cg;
        for (let j = 0; j < cg; j++) {
          const o = o0 + j;
          const xh = (xs[o] - mean) * rstd;
          dxs[o] = rstd * (tmp[e0 + j] * gs[g * cg + j] - m1 - xh * m2);
        }
      }
    }
  }
  if (sg) backend.disposeData(sg.dataId);
  const dgs = backend.typedArrayFromHeap(dg);
  const dbs = backend.typedArrayFromHeap(db);
  for (let ch = 0; ch < c; ch++) {
    dgs[ch] = tmp[ch];
    dbs[ch] = tmp[c + ch];
  }
  return [dx, dg, db];
}

const KERNELS = [[FORWARD, forwardKernel], [BACKWARD, backwardKernel]] as const;

/**
 * The norm's kernel functions, for composite kernels that call them directly on the heap
 * instead of through tfjs' engine (fused_feed_forward.ts, fused_attention_block.ts,
 * fused_resnet_block.ts), with the attributes they take.
 *
 * @example
 * ```ts
 * import { normKernels } from "./fused_norm.ts";
 * // inside a kernel: const [y, stats] = normKernels.forward({ inputs, backend, attrs: normKernels.layerAttrs(1e-5) });
 * console.log(normKernels.groupAttrs(32, 1e-5, true));
 * ```
 */
export const normKernels = {
  forward: forwardKernel,
  backward: backwardKernel,
  /** A LayerNorm over the last axis. */
  layerAttrs: (eps: number): tf.NamedAttrMap => ({ groups: 1, eps, silu: false, layer: true }),
  /** A GroupNorm over positions and channel groups, SiLU after it or not. */
  groupAttrs: (groups: number, eps: number, silu: boolean): tf.NamedAttrMap => ({
    groups,
    eps,
    silu,
    layer: false,
  }),
} as const;

/** The weights {@linkcode fusedNorm} needs (GroupNorm's; a LayerNorm is one group). */
export interface FusedNormWeights {
  /** γ [C]. */
  weight: Tensor1D;
  /** β [C]. */
  bias: Tensor1D;
  /** Groups the channels (last axis) split into; 1 for a LayerNorm. */
  groups: number;
  /** Added to the variance. */
  eps: number;
}

/**
 * Normalise `x` over each (sample, group of the last axis' channels) — GroupNorm for x
 * [B, H, W, C] or [B, L, C] with `groups` groups — or, with `layer` true, over the last axis of
 * every row (LayerNorm), then scale by γ, shift by β and, with `silu`, apply `z · σ(z)`. On the
 * wasm backend only, as one kernel forward and one backward, with gradients for x, γ and β.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedNorm } from "@texforce/core/adapters";
 * // on the wasm backend:
 * const y = fusedNorm(tf.ones([1, 4, 4, 8]), {
 *   weight: tf.ones([8]), bias: tf.zeros([8]), groups: 2, eps: 1e-5,
 * }, { silu: true });
 * ```
 */
export function fusedNorm(
  x: Tensor,
  w: FusedNormWeights,
  options: { silu?: boolean; layer?: boolean } = {},
): Tensor {
  if (tf.getBackend() !== "wasm") {
    throw new Error(`fusedNorm: needs the wasm backend (active: ${tf.getBackend()})`);
  }
  const c = x.shape[x.shape.length - 1];
  const groups = options.layer ? 1 : w.groups;
  if (x.dtype !== "float32" || c % groups !== 0 || w.weight.shape[0] !== c) {
    throw new Error(
      `fusedNorm: ${x.dtype} x with ${c} channels, ${
        w.weight.shape[0]
      } weights and ${groups} groups do not fit`,
    );
  }
  registerWasmKernels(KERNELS);
  // A LayerNorm is a GroupNorm with one group and one position per row (the kernels read the
  // layout from the shape and `layer`, so nothing is reshaped).
  const layer = options.layer ?? false;
  const attrs = { groups, eps: w.eps, silu: options.silu ?? false, layer };
  const f = tf.customGrad((xx, gamma, beta, save) => {
    const [y, stats] = tf.engine().runKernel(
      FORWARD,
      { x: xx as Tensor, gamma: gamma as Tensor, beta: beta as Tensor },
      attrs as unknown as tf.NamedAttrMap,
    ) as Tensor[];
    (save as tf.GradSaveFunc)([xx as Tensor, stats, gamma as Tensor, beta as Tensor]);
    const gradFunc = (dy: Tensor | Tensor[], saved: Tensor[]): Tensor[] => {
      const [sx, st, sg, sb] = saved;
      return tf.engine().runKernel(
        BACKWARD,
        { dy: dy as Tensor, x: sx, stats: st, gamma: sg, beta: sb },
        attrs as unknown as tf.NamedAttrMap,
      ) as Tensor[];
    };
    return { value: y, gradFunc };
  });
  return f(x, w.weight, w.bias) as Tensor;
}
