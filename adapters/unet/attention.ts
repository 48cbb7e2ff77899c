/**
 * diffusers' `Attention` module (to_q, to_k, to_v, to_out.0) over [B, L, D] tensors, with
 * optional query slicing to bound the size of the attention matrix.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { batchMatMul } from "../nn/_fast_matmul.ts";
import { multiHeadAttention } from "../nn/attention.ts";
import { FLASH_MAX_HEAD_DIM, flashAttention } from "../webgpu/flash_attention.ts";
import { useWebgpuKernel } from "../webgpu/kernel_options.ts";
import { linear, type LinearWeights } from "../nn/linear.ts";
import type { WeightReader } from "../nn/weight_reader.ts";
import { type LinearRegistry, loadRegisteredLinear } from "./_linear_registry.ts";
import type { Tensor, Tensor4D } from "../../core/tensor_types.ts";

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
 * stays small, and its gradient recomputes the attention probabilities slice by slice instead
 * of keeping them for the backward pass (which at 64×64 latents would hold gigabytes per layer).
 * The result and the gradients are the same as without slicing. On webgpu (unless switched off
 * with `setWebgpuKernels({ flashAttention: false })`) the tiled attention kernel runs instead of
 * both, which never holds the score matrix at all; `slice` is then not needed.
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
    const [b, lq, d] = q.shape as [number, number, number];
    const lk = k.shape[1] as number;
    let h: Tensor;
    if (useWebgpuKernel("flashAttention") && d / w.heads <= FLASH_MAX_HEAD_DIM) {
      h = flashAttention(q, k, v, { heads: w.heads });
    } else if (slice > 0 && lq > slice) {
      const dh = d / w.heads;
      const heads = (t: Tensor, l: number) =>
        t.reshape([b, l, w.heads, dh]).transpose([0, 2, 1, 3]) as Tensor4D;
      const o = slicedAttention(heads(q, lq), heads(k, lk), heads(v, lk), slice);
      h = o.transpose([0, 2, 1, 3]).reshape([b, lq, d]);
    } else {
      h = multiHeadAttention(q, k, v, w.heads);
    }
    return linear(h, w.toOut);
  });
}

/**
 * softmax(q kᵀ / √d) v for q [B, h, Lq, d], k and v [B, h, Lk, d], `slice` queries at a time,
 * with a custom gradient that recomputes each slice's probabilities (saving only q, k, v).
 */
function slicedAttention(q: Tensor4D, k: Tensor4D, v: Tensor4D, slice: number): Tensor4D {
  const lq = q.shape[2];
  const scale = 1 / Math.sqrt(q.shape[3]);
  const chunks: [number, number][] = [];
  for (let s = 0; s < lq; s += slice) chunks.push([s, Math.min(slice, lq - s)]);
  const probs = (qc: Tensor, kk: Tensor) =>
    tf.softmax(tf.mul(batchMatMul(qc, kk, false, true), scale));
  const rows = (t: Tensor, [s, n]: [number, number]) => t.slice([0, 0, s, 0], [-1, -1, n, -1]);
  const f = tf.customGrad((qq, kk, vv, save) => {
    const [qt, kt, vt] = [qq, kk, vv] as Tensor4D[];
    (save as tf.GradSaveFunc)([qt, kt, vt]);
    const value = tf.concat(
      chunks.map((c) => tf.tidy(() => batchMatMul(probs(rows(qt, c), kt), vt))),
      2,
    ) as Tensor4D;
    const gradFunc = (dy: Tensor | Tensor[], saved: Tensor[]): Tensor[] => {
      const [sq, sk, sv] = saved;
      const g = dy as Tensor;
      let dk: Tensor = tf.zerosLike(sk);
      let dv: Tensor = tf.zerosLike(sv);
      const dq: Tensor[] = [];
      for (const c of chunks) {
        const [dqc, dkN, dvN] = tf.tidy(() => {
          const qc = rows(sq, c);
          const gc = rows(g, c);
          const p = probs(qc, sk);
          const dp = batchMatMul(gc, sv, false, true);
          // Softmax backward: ds = p ⊙ (dp − Σ_j dp ⊙ p).
          const ds = tf.mul(p, tf.sub(dp, tf.sum(tf.mul(dp, p), -1, true)));
          return [
            tf.mul(batchMatMul(ds, sk), scale),
            tf.add(dk, tf.mul(batchMatMul(ds, qc, true, false), scale)),
            tf.add(dv, batchMatMul(p, gc, true, false)),
          ];
        });
        dk.dispose();
        dv.dispose();
        dk = dkN;
        dv = dvN;
        dq.push(dqc);
      }
      const dqAll = tf.concat(dq, 2);
      tf.dispose(dq);
      return [dqAll, dk, dv];
    };
    return { value, gradFunc };
  });
  return f(q, k, v) as Tensor4D;
}
