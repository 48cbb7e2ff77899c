/**
 * diffusers' `Attention` module (to_q, to_k, to_v, to_out.0) over [B, L, D] tensors, with
 * optional query slicing to bound the size of the attention matrix.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { multiHeadAttention } from "../nn/attention.ts";
import { linear, type LinearWeights } from "../nn/linear.ts";
import type { WeightReader } from "../nn/weight_reader.ts";
import { type LinearRegistry, loadRegisteredLinear } from "./_linear_registry.ts";
import type { Tensor } from "../../core/tensor_types.ts";

/**
 * Weights of one attention module.
 *
 * @example
 * ```ts
 * import { attention, type AttentionWeights } from "@texforce/core/adapters";
 * declare const w: AttentionWeights;
 * console.log(w.heads);
 * ```
 */
export interface AttentionWeights {
  /** Query projection [queryDim, inner]. */
  toQ: LinearWeights;
  /** Key projection [contextDim, inner]. */
  toK: LinearWeights;
  /** Value projection [contextDim, inner]. */
  toV: LinearWeights;
  /** Output projection [inner, queryDim]. */
  toOut: LinearWeights;
  /** Number of heads. */
  heads: number;
}

/**
 * Shapes of an attention module.
 *
 * @example
 * ```ts
 * import type { AttentionShape } from "@texforce/core/adapters";
 * const s: AttentionShape = { queryDim: 320, contextDim: 768, heads: 8, headDim: 40 };
 * ```
 */
export interface AttentionShape {
  /** Width of the queries (and of the output). */
  queryDim: number;
  /** Width of keys and values' source (the encoder states for cross-attention). */
  contextDim: number;
  /** Number of heads. */
  heads: number;
  /** Width per head (inner width = heads · headDim). */
  headDim: number;
}

/**
 * Read an attention module under `r` (keys `to_q`, `to_k`, `to_v`, `to_out.0`; q/k/v biases
 * are read when present, as in the VAE). Older VAE checkpoints name them `query`, `key`,
 * `value`, `proj_attn`; those are accepted too.
 *
 * @example
 * ```ts
 * import { loadAttention } from "@texforce/core/adapters";
 * import type { WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const attn = await loadAttention(r.child("attn2"), {
 *   queryDim: 320, contextDim: 768, heads: 8, headDim: 40,
 * });
 * ```
 */
export async function loadAttention(
  r: WeightReader,
  shape: AttentionShape,
  registry?: LinearRegistry,
): Promise<AttentionWeights> {
  const inner = shape.heads * shape.headDim;
  const legacy = !r.has("to_q.weight") && r.has("query.weight");
  const [q, k, v, o] = legacy
    ? ["query", "key", "value", "proj_attn"]
    : ["to_q", "to_k", "to_v", "to_out.0"];
  return {
    toQ: await loadRegisteredLinear(r, q, shape.queryDim, inner, registry),
    toK: await loadRegisteredLinear(r, k, shape.contextDim, inner, registry),
    toV: await loadRegisteredLinear(r, v, shape.contextDim, inner, registry),
    toOut: await loadRegisteredLinear(r, o, inner, shape.queryDim, registry),
    heads: shape.heads,
  };
}

/**
 * Attention of `x` [B, Lq, D] over `context` [B, Lk, Dc] (self-attention when omitted).
 * `slice` > 0 processes that many queries at a time, so the [B, heads, slice, Lk] score matrix
 * stays small (the result is the same).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { attention, type AttentionWeights } from "@texforce/core/adapters";
 * declare const w: AttentionWeights;
 * const y = attention(w, tf.ones([1, 64, 320]), tf.ones([1, 77, 768]), 1024);
 * ```
 */
export function attention(
  w: AttentionWeights,
  x: Tensor,
  context?: Tensor,
  slice = 0,
): Tensor {
  return tf.tidy(() => {
    const ctx = context ?? x;
    const q = linear(x, w.toQ);
    const k = linear(ctx, w.toK);
    const v = linear(ctx, w.toV);
    const lq = q.shape[1] as number;
    let h: Tensor;
    if (slice > 0 && lq > slice) {
      const parts: Tensor[] = [];
      for (let s = 0; s < lq; s += slice) {
        const qs = q.slice([0, s, 0], [-1, Math.min(slice, lq - s), -1]);
        parts.push(multiHeadAttention(qs, k, v, w.heads));
      }
      h = tf.concat(parts, 1);
    } else {
      h = multiHeadAttention(q, k, v, w.heads);
    }
    return linear(h, w.toOut);
  });
}
