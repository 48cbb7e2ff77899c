/**
 * Group normalisation over NHWC tensors (PyTorch `nn.GroupNorm`, which works on NCHW).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { WeightReader } from "./weight_reader.ts";
import type { Tensor, Tensor1D } from "../../core/tensor_types.ts";
import { groupNormSilu } from "../webgpu/group_norm_silu.ts";
import { useWebgpuKernel } from "../webgpu/kernel_options.ts";
import { fusedNorm } from "../wasm/fused_norm.ts";
import { useWasmKernel } from "../wasm/kernel_options.ts";

/** GroupNorm parameters. */
export interface GroupNormWeights {
  /** [C]. */
  weight: Tensor1D;
  /** [C]. */
  bias: Tensor1D;
  /** Number of groups. */
  groups: number;
  /** Epsilon. */
  eps: number;
}

/**
 * GroupNorm of x [B, H, W, C] (or [B, L, C]): statistics per sample and group of channels.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { groupNorm } from "@texforce/core/adapters";
 * const y = groupNorm(tf.ones([1, 4, 4, 8]), {
 *   weight: tf.ones([8]), bias: tf.zeros([8]), groups: 2, eps: 1e-5,
 * });
 * ```
 */
export function groupNorm(x: Tensor, w: GroupNormWeights): Tensor {
  // On webgpu: texforce's two-pass kernel (see adapters/webgpu/group_norm_silu.ts).
  if (useWebgpuKernel("groupNormSilu")) return groupNormSilu(x, w, false);
  // On wasm: one kernel each way (see adapters/wasm/fused_norm.ts).
  if (useWasmKernel("fusedNorm")) return fusedNorm(x, w);
  return tf.tidy(() => {
    const shape = x.shape;
    const b = shape[0];
    const c = shape[shape.length - 1];
    const g = w.groups;
    const xg = x.reshape([b, -1, g, c / g]);
    const { mean, variance } = tf.moments(xg, [1, 3], true);
    const y = tf.mul(tf.sub(xg, mean), tf.rsqrt(tf.add(variance, w.eps))).reshape(shape);
    return tf.add(tf.mul(y, w.weight), w.bias);
  });
}

/**
 * SiLU(GroupNorm(x)): one fused kernel on webgpu, the stock ops elsewhere.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { groupNormThenSilu } from "@texforce/core/adapters";
 * const y = groupNormThenSilu(tf.ones([1, 4, 4, 8]), {
 *   weight: tf.ones([8]), bias: tf.zeros([8]), groups: 2, eps: 1e-5,
 * });
 * ```
 */
export function groupNormThenSilu(x: Tensor, w: GroupNormWeights): Tensor {
  if (useWebgpuKernel("groupNormSilu")) return groupNormSilu(x, w, true);
  if (useWasmKernel("fusedNorm")) return fusedNorm(x, w, { silu: true });
  return tf.tidy(() => {
    const y = groupNorm(x, w);
    return tf.mul(y, tf.sigmoid(y));
  });
}

/**
 * Read `prefix.weight` and `prefix.bias`.
 *
 * @example
 * ```ts
 * import { loadGroupNorm, WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const gn = await loadGroupNorm(r, "norm1", 320, 32, 1e-5);
 * ```
 */
export async function loadGroupNorm(
  r: WeightReader,
  prefix: string,
  channels: number,
  groups: number,
  eps: number,
): Promise<GroupNormWeights> {
  if (channels % groups !== 0) {
    throw new Error(
      `${r.source.path}: '${r.prefix}${prefix}': ${channels} channels are not divisible into ${groups} groups`,
    );
  }
  return {
    weight: (await r.tensor(`${prefix}.weight`, [channels])) as Tensor1D,
    bias: (await r.tensor(`${prefix}.bias`, [channels])) as Tensor1D,
    groups,
    eps,
  };
}
