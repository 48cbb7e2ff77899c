/**
 * Fully connected layer with PyTorch weights ([out, in]) stored transposed ([in, out]) for tfjs.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { WeightReader } from "./weight_reader.ts";
import { constLinear, matMul2d, prepareLinearCopies } from "./_fast_matmul.ts";
import { copiesOf, keepCopies } from "./weight_copies.ts";
import { type PackedProjection, PackedWeight } from "../wasm/packed_matmul.ts";
import type { Tensor, Tensor1D, Tensor2D } from "../../core/tensor_types.ts";

/** Weights of a linear layer: `weight` is [in, out] (already transposed from PyTorch). */
export interface LinearWeights {
  /** [in, out]. */
  weight: Tensor2D;
  /** [out] or absent. */
  bias?: Tensor1D;
}

/**
 * y = x W + b over the last axis of x.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { linear } from "@texforce/core/adapters";
 * const y = linear(tf.ones([2, 3]), { weight: tf.ones([3, 4]) as tf.Tensor2D });
 * ```
 */
export function linear(x: Tensor, w: LinearWeights): Tensor {
  if (w.weight instanceof tf.Variable) {
    // Trainable (pre-training): gradients reach the weight and bias too.
    const [inDim, outDim] = w.weight.shape;
    return tf.tidy(() => {
      const y = matMul2d(x.reshape([-1, inDim]) as Tensor2D, w.weight);
      return (w.bias ? tf.add(y, w.bias) : y).reshape([...x.shape.slice(0, -1), outDim]);
    });
  }
  // The weights are frozen: constLinear's gradient reaches x only, through untransposed products
  // (tfjs-wasm's fast path), instead of the stock dy·Wᵀ; it takes x's leading axes as rows.
  return constLinear(w.weight, w.bias)(x);
}

/**
 * Make and keep the kernel-ready copies of a frozen linear layer's weight (on wasm: packed w
 * and wᵀ for texforce's product), so that {@linkcode linear} stops remaking them per call. The
 * owner releases them with {@linkcode releaseWeightCopies} before disposing or replacing the
 * weight. Trainable weights (variables) are left alone.
 *
 * @example
 * ```ts
 * import { keepLinearCopies, releaseWeightCopies, type LinearWeights } from "@texforce/core/adapters";
 * declare const w: LinearWeights;
 * keepLinearCopies(w);
 * releaseWeightCopies([w.weight]);
 * ```
 */
export function keepLinearCopies(w: LinearWeights): void {
  if (w.weight instanceof tf.Variable) return;
  prepareLinearCopies(w.weight, keepCopies(w.weight));
}

/**
 * A frozen linear layer as its kept packed copies (w and wᵀ, made by {@linkcode keepLinearCopies})
 * and its bias, for fused kernels that take the layer whole; null when either is not kept (trainable or
 * unregistered weights, other backends, widths the packed product does not take).
 *
 * @example
 * ```ts
 * import { keepLinearCopies, packedLinearOf, type LinearWeights } from "@texforce/core/adapters";
 * declare const w: LinearWeights;
 * keepLinearCopies(w);
 * console.log(packedLinearOf(w)?.w.n);
 * ```
 */
export function packedLinearOf(w: LinearWeights): PackedProjection | null {
  if (w.weight instanceof tf.Variable) return null;
  const copies = copiesOf(w.weight);
  const [packed, packedT] = [copies.kept("packed"), copies.kept("packedT")];
  return packed instanceof PackedWeight && packedT instanceof PackedWeight
    ? { w: packed, wT: packedT, bias: w.bias }
    : null;
}

/**
 * Read `prefix.weight` ([out, in]) and `prefix.bias` and transpose for {@linkcode linear}.
 *
 * @example
 * ```ts
 * import { loadLinear, WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const q = await loadLinear(r, "self_attn.q_proj", 768, 768);
 * ```
 */
export async function loadLinear(
  r: WeightReader,
  prefix: string,
  inDim: number,
  outDim: number,
  bias = true,
): Promise<LinearWeights> {
  const w = await r.tensor(`${prefix}.weight`, [outDim, inDim]);
  const weight = r.adopt(`${prefix}.weight`, tf.tidy(() => w.transpose() as Tensor2D), "linear");
  w.dispose();
  const out: LinearWeights = { weight };
  if (bias && r.has(`${prefix}.bias`)) {
    out.bias = (await r.tensor(`${prefix}.bias`, [outDim])) as Tensor1D;
  }
  return out;
}

/**
 * Dispose a linear layer's tensors.
 *
 * @example
 * ```ts
 * import { disposeLinear, type LinearWeights } from "@texforce/core/adapters";
 * declare const w: LinearWeights;
 * disposeLinear(w);
 * ```
 */
export function disposeLinear(w: LinearWeights): void {
  w.weight.dispose();
  w.bias?.dispose();
}
