/**
 * A transformer block's feed-forward part with frozen weights, `h + W₂·geglu(W₁·LayerNorm(h) +
 * b₁) + b₂` (diffusers' `norm3` + `FeedForward` + residual), as one kernel forward and one
 * backward on the wasm backend.
 *
 * Why: as five tfjs ops (LayerNorm, product, GEGLU, product, add) it is five tape nodes and,
 * backward, five gradient ops, two reshapes and an accumulation. Each op through tfjs' engine
 * cost 25–60 µs beyond its kernel here (tensor bookkeeping, the tape, scopes), which at the tiny
 * UNet's batch 2 is as much as the arithmetic. The kernels here call the same kernel functions
 * (fused_norm.ts, packed_matmul.ts, fused_geglu.ts, the SIMD Add) directly, in the same order on
 * the same inputs, so the results are bitwise those of the ops one by one.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { registerWasmKernels, type WasmKernelArgs } from "./_kernel_registry.ts";
import { directAdd, directProduct, freeInfos } from "./_direct_kernels.ts";
import type { WasmHeapBackend } from "./_wasm_heap.ts";
import type { Tensor, Tensor1D } from "../../core/tensor_types.ts";
import { useWasmKernel } from "./kernel_options.ts";
import { normKernels } from "./fused_norm.ts";
import { gegluKernels } from "./fused_geglu.ts";
import { type PackedProjection, projectionFits } from "./packed_matmul.ts";

const FEED_FORWARD = "TexforceWasmFeedForward";
const FEED_FORWARD_GRAD = "TexforceWasmFeedForwardGrad";

interface FeedForwardAttrs {
  eps: number;
  /** GEGLU's output width (half of W₁'s). */
  inner: number;
  /** Channels of h. */
  channels: number;
}

// Outputs: [h + FF(h), the LayerNorm's statistics, W₁'s product] (the last two for the backward).
function feedForwardKernel(args: WasmKernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WasmHeapBackend;
  const { h, gamma, beta, w1, b1, w2, b2 } = args.inputs;
  const { eps, inner, channels } = args.attrs as unknown as FeedForwardAttrs;
  const free = (...ts: tf.TensorInfo[]) => freeInfos(backend, ...ts);
  const [n, stats] = normKernels.forward({
    inputs: { x: h, gamma, beta },
    backend,
    attrs: normKernels.layerAttrs(eps),
  });
  const p = directProduct(backend, n, w1, b1, 2 * inner);
  free(n);
  const g = gegluKernels.forward({ inputs: { x: p }, backend });
  const f = directProduct(backend, g, w2, b2, channels);
  free(g);
  const out = directAdd(backend, h, f);
  free(f);
  return [out, stats, p];
}

// dh = dy + LayerNorm'ᵀ(W₁ᵀ geglu'ᵀ(W₂ᵀ dy)): the residual's gradient first, as tfjs'
// accumulation adds it.
function feedForwardGradKernel(args: WasmKernelArgs): tf.TensorInfo {
  const backend = args.backend as WasmHeapBackend;
  const { dy, h, stats, p, gamma, beta, w1T, w2T } = args.inputs;
  const { eps, inner, channels } = args.attrs as unknown as FeedForwardAttrs;
  const free = (...ts: tf.TensorInfo[]) => freeInfos(backend, ...ts);
  const dg = directProduct(backend, dy, w2T, undefined, inner);
  const dp = gegluKernels.backward({ inputs: { x: p, dy: dg }, backend });
  free(dg);
  const dn = directProduct(backend, dp, w1T, undefined, channels);
  free(dp);
  const [dhNorm, dGamma, dBeta] = normKernels.backward({
    inputs: { dy: dn, x: h, stats, gamma, beta },
    backend,
    attrs: normKernels.layerAttrs(eps),
  });
  free(dn, dGamma, dBeta);
  const dh = directAdd(backend, dy, dhNorm);
  free(dhNorm);
  return dh;
}

const KERNELS = [
  [FEED_FORWARD, feedForwardKernel],
  [FEED_FORWARD_GRAD, feedForwardGradKernel],
] as const;

/** The frozen weights {@linkcode fusedFeedForward} takes, in kernel-ready form. */
export interface FusedFeedForwardParts {
  /** LayerNorm γ [C]. */
  gamma: Tensor1D;
  /** LayerNorm β [C]. */
  beta: Tensor1D;
  /** LayerNorm epsilon. */
  eps: number;
  /** W₁ [C, 2I] (with its bias b₁, if any): GEGLU's value and gate. */
  ffIn: PackedProjection;
  /** W₂ [I, C] (with b₂, if any). */
  ffOut: PackedProjection;
}

/**
 * Whether {@linkcode fusedFeedForward} takes `h` [.., C] with these weights now: the switches
 * (`fusedFeedForward`, `fusedNorm`, `packedMatmul`, `fusedGeglu`) are on, the backend is wasm,
 * `h` is float32 and the shapes chain (W₁ [C, 2I], W₂ [I, C], biases optional).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedFeedForwardFits, type FusedFeedForwardParts } from "./fused_feed_forward.ts";
 * declare const parts: FusedFeedForwardParts;
 * console.log(fusedFeedForwardFits(tf.ones([2, 16, 32]), parts));
 * ```
 */
export function fusedFeedForwardFits(h: Tensor, p: FusedFeedForwardParts): boolean {
  if (
    !useWasmKernel("fusedFeedForward") || !useWasmKernel("fusedNorm") ||
    !useWasmKernel("packedMatmul") || !useWasmKernel("fusedGeglu")
  ) return false;
  const c = h.shape[h.rank - 1];
  const inner = p.ffOut.w.k;
  return h.dtype === "float32" && h.rank >= 2 && p.gamma.shape[0] === c &&
    p.beta.shape[0] === c && projectionFits(p.ffIn, c, 2 * inner) &&
    projectionFits(p.ffOut, inner, c);
}

/**
 * `h + W₂·geglu(W₁·LayerNorm(h) + b₁) + b₂` for h [.., C], differentiable in `h` (the weights
 * are constants): one node on the tape.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedFeedForward, type FusedFeedForwardParts } from "@texforce/core/adapters";
 * declare const parts: FusedFeedForwardParts; // packed copies of a frozen block's weights
 * const y = fusedFeedForward(tf.ones([2, 16, 32]), parts); // [2, 16, 32]
 * ```
 */
export function fusedFeedForward(h: Tensor, p: FusedFeedForwardParts): Tensor {
  if (!fusedFeedForwardFits(h, p)) {
    throw new Error(
      `fusedFeedForward: needs a float32 h [.., C] on wasm with the fusedFeedForward, ` +
        `fusedNorm, packedMatmul and fusedGeglu switches on and weights W₁ [C, 2I], W₂ [I, C] ` +
        `(got ${h.dtype} [${h.shape}], W₁ [${p.ffIn.w.k}, ${p.ffIn.w.n}], ` +
        `W₂ [${p.ffOut.w.k}, ${p.ffOut.w.n}] ` +
        `on ${tf.getBackend()})`,
    );
  }
  registerWasmKernels(KERNELS);
  const inputs = (h: Tensor): tf.NamedTensorMap => {
    const m: tf.NamedTensorMap = {
      h,
      gamma: p.gamma,
      beta: p.beta,
      w1: p.ffIn.w.panels,
      w2: p.ffOut.w.panels,
    };
    if (p.ffIn.bias) m.b1 = p.ffIn.bias;
    if (p.ffOut.bias) m.b2 = p.ffOut.bias;
    return m;
  };
  const attrs = { eps: p.eps, inner: p.ffOut.w.k, channels: p.ffOut.w.n } as never;
  const f = tf.customGrad((hh, save) => {
    const [out, stats, proj] = tf.engine().runKernel(
      FEED_FORWARD,
      inputs(hh as Tensor),
      attrs,
    ) as Tensor[];
    (save as tf.GradSaveFunc)([hh as Tensor, stats, proj]);
    tf.dispose([stats, proj]);
    return {
      value: out,
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]): Tensor => {
        const [sh, st, sp] = saved;
        return tf.engine().runKernel(FEED_FORWARD_GRAD, {
          dy: dy as Tensor,
          h: sh,
          stats: st,
          p: sp,
          gamma: p.gamma,
          beta: p.beta,
          w1T: p.ffIn.wT.panels,
          w2T: p.ffOut.wT.panels,
        }, attrs) as Tensor;
      },
    };
  });
  return f(h) as Tensor;
}
