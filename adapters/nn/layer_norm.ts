/**
 * Layer normalisation over the last axis (PyTorch `nn.LayerNorm`).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { WeightReader } from "./weight_reader.ts";
import type { Tensor, Tensor1D } from "../../core/tensor_types.ts";
import { fusedNorm } from "../wasm/fused_norm.ts";
import { useWasmKernel } from "../wasm/kernel_options.ts";

/** LayerNorm parameters. */
export interface LayerNormWeights {
  /** [D]. */
  weight: Tensor1D;
  /** [D]. */
  bias: Tensor1D;
  /** Epsilon. */
  eps: number;
}

/**
 * Normalise over the last axis with biased variance, as PyTorch does.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { layerNorm } from "@texforce/core/adapters";
 * const y = layerNorm(tf.ones([2, 4]), { weight: tf.ones([4]), bias: tf.zeros([4]), eps: 1e-5 });
 * ```
 */
export function layerNorm(x: Tensor, w: LayerNormWeights): Tensor {
  // On wasm: one kernel each way (see adapters/wasm/fused_norm.ts).
  if (useWasmKernel("fusedNorm")) return fusedNorm(x, { ...w, groups: 1 }, { layer: true });
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, -1, true);
    const y = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, w.eps)));
    return tf.add(tf.mul(y, w.weight), w.bias);
  });
}

/**
 * Read `prefix.weight` and `prefix.bias`.
 *
 * @example
 * ```ts
 * import { loadLayerNorm, WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const ln = await loadLayerNorm(r, "final_layer_norm", 768, 1e-5);
 * ```
 */
export async function loadLayerNorm(
  r: WeightReader,
  prefix: string,
  dim: number,
  eps: number,
): Promise<LayerNormWeights> {
  return {
    weight: (await r.tensor(`${prefix}.weight`, [dim])) as Tensor1D,
    bias: (await r.tensor(`${prefix}.bias`, [dim])) as Tensor1D,
    eps,
  };
}
