/**
 * Multi-head scaled dot-product attention on [B, L, D] tensors.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { batchMatMul } from "./_fast_matmul.ts";
import { fusedAttention, fusedAttentionFits } from "../wasm/fused_attention.ts";
import type { Tensor } from "../../core/tensor_types.ts";

/**
 * softmax(q kᵀ · scale + mask) v with `heads` heads. q [B, Lq, D], k and v [B, Lk, D];
 * `mask` broadcasts to [B, heads, Lq, Lk] (additive, e.g. -inf above the diagonal).
 * `scale` defaults to 1/sqrt(D/heads).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { multiHeadAttention } from "@texforce/core/adapters";
 * const x = tf.ones([1, 4, 8]);
 * const y = multiHeadAttention(x, x, x, 2);
 * ```
 */
export function multiHeadAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  heads: number,
  mask?: Tensor,
  scale?: number,
): Tensor {
  return tf.tidy(() => {
    const [b, lq, d] = q.shape as [number, number, number];
    const lk = k.shape[1] as number;
    const dh = d / heads;
    if (fusedAttentionFits(q, k, v, heads)) {
      return fusedAttention(q, k, v, heads, scale ?? 1 / Math.sqrt(dh), mask);
    }
    const split = (t: Tensor, l: number) => t.reshape([b, l, heads, dh]).transpose([0, 2, 1, 3]);
    const qh = split(q, lq);
    const kh = split(k, lk);
    const vh = split(v, lk);
    let scores = tf.mul(batchMatMul(qh, kh, false, true), scale ?? 1 / Math.sqrt(dh));
    if (mask) scores = tf.add(scores, mask);
    const probs = tf.softmax(scores, -1);
    return batchMatMul(probs, vh).transpose([0, 2, 1, 3]).reshape([b, lq, d]);
  });
}
