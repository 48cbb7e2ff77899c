/**
 * diffusers' `Transformer2DModel` as Stable Diffusion uses it: GroupNorm, `proj_in` (1×1 conv or
 * linear), `BasicTransformerBlock`s (self-attention, cross-attention to the text states, GEGLU
 * feed-forward, each pre-LayerNorm with a residual), `proj_out`, and a residual around it all.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { groupNorm, type GroupNormWeights, loadGroupNorm } from "../nn/group_norm.ts";
import { layerNorm, type LayerNormWeights, loadLayerNorm } from "../nn/layer_norm.ts";
import { linear, type LinearWeights, packedLinearOf } from "../nn/linear.ts";
import type { WeightReader } from "../nn/weight_reader.ts";
import { gelu } from "./_activations.ts";
import { fusedGeglu, fusedGegluFits } from "../wasm/fused_geglu.ts";
import {
  fusedFeedForward,
  fusedFeedForwardFits,
  type FusedFeedForwardParts,
} from "../wasm/fused_feed_forward.ts";
import {
  fusedAttentionBlock,
  fusedAttentionBlockFits,
  type FusedAttentionBlockParts,
} from "../wasm/fused_attention_block.ts";
import { type LinearRegistry, loadRegisteredLinear } from "./_linear_registry.ts";
import { attention, type AttentionWeights, loadAttention } from "./attention.ts";
import type { Tensor, Tensor3D, Tensor4D } from "../../core/tensor_types.ts";

/**
 * Weights of a `BasicTransformerBlock`.
 *
 * @example
 * ```ts
 * import type { TransformerBlockWeights } from "@texforce/core/adapters";
 * declare const w: TransformerBlockWeights;
 * console.log(w.attn2.heads);
 * ```
 */
export interface TransformerBlockWeights {
  /** LayerNorm before self-attention. */
  norm1: LayerNormWeights;
  /** Self-attention. */
  attn1: AttentionWeights;
  /** LayerNorm before cross-attention. */
  norm2: LayerNormWeights;
  /** Cross-attention to the encoder states. */
  attn2: AttentionWeights;
  /** LayerNorm before the feed-forward. */
  norm3: LayerNormWeights;
  /** GEGLU projection `ff.net.0.proj` [dim, 2·inner]. */
  ffIn: LinearWeights;
  /** `ff.net.2` [inner, dim]. */
  ffOut: LinearWeights;
}

/**
 * Weights of a `Transformer2DModel`.
 *
 * @example
 * ```ts
 * import type { Transformer2DWeights } from "@texforce/core/adapters";
 * declare const w: Transformer2DWeights;
 * console.log(w.blocks.length);
 * ```
 */
export interface Transformer2DWeights {
  /** GroupNorm (eps 1e-6, fixed in diffusers). */
  norm: GroupNormWeights;
  /** `proj_in`, as a per-pixel linear map. */
  projIn: LinearWeights;
  /** The transformer blocks. */
  blocks: TransformerBlockWeights[];
  /** `proj_out`, as a per-pixel linear map. */
  projOut: LinearWeights;
}

/**
 * Shape and settings of a `Transformer2DModel`.
 *
 * @example
 * ```ts
 * import type { Transformer2DShape } from "@texforce/core/adapters";
 * const s: Transformer2DShape = { channels: 320, heads: 8, crossAttentionDim: 768, layers: 1, groups: 32 };
 * ```
 */
export interface Transformer2DShape {
  /** Channels in and out. */
  channels: number;
  /** Attention heads (head width = channels / heads). */
  heads: number;
  /** Width of the encoder states. */
  crossAttentionDim: number;
  /** Number of transformer blocks. */
  layers: number;
  /** GroupNorm groups. */
  groups: number;
}

/**
 * Read a `Transformer2DModel` under `r` (e.g. `r.child("down_blocks.0.attentions.0")`). Both
 * `proj_in` layouts are accepted: 1×1 conv (SD 1.x) and linear (`use_linear_projection`, SD 2.x).
 *
 * @example
 * ```ts
 * import { loadTransformer2D, type WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const t = await loadTransformer2D(r.child("mid_block.attentions.0"), {
 *   channels: 1280, heads: 8, crossAttentionDim: 768, layers: 1, groups: 32,
 * });
 * ```
 */
export async function loadTransformer2D(
  r: WeightReader,
  s: Transformer2DShape,
  registry?: LinearRegistry,
): Promise<Transformer2DWeights> {
  const c = s.channels;
  if (c % s.heads !== 0) {
    throw new Error(
      `${r.source.path}: '${r.prefix}': ${c} channels are not divisible into ${s.heads} heads`,
    );
  }
  const headDim = c / s.heads;
  const inner = 4 * c;
  const blocks: TransformerBlockWeights[] = [];
  for (let i = 0; i < s.layers; i++) {
    const b = r.child(`transformer_blocks.${i}`);
    blocks.push({
      norm1: await loadLayerNorm(b, "norm1", c, 1e-5),
      attn1: await loadAttention(
        b.child("attn1"),
        { queryDim: c, contextDim: c, heads: s.heads, headDim },
        registry,
      ),
      norm2: await loadLayerNorm(b, "norm2", c, 1e-5),
      attn2: await loadAttention(
        b.child("attn2"),
        { queryDim: c, contextDim: s.crossAttentionDim, heads: s.heads, headDim },
        registry,
      ),
      norm3: await loadLayerNorm(b, "norm3", c, 1e-5),
      ffIn: await loadRegisteredLinear(b, "ff.net.0.proj", c, 2 * inner, registry),
      ffOut: await loadRegisteredLinear(b, "ff.net.2", inner, c, registry),
    });
  }
  return {
    norm: await loadGroupNorm(r, "norm", c, s.groups, 1e-6),
    projIn: await loadRegisteredLinear(r, "proj_in", c, c, registry),
    blocks,
    projOut: await loadRegisteredLinear(r, "proj_out", c, c, registry),
  };
}

/**
 * One `BasicTransformerBlock` on x [B, L, D] with encoder states `context` [B, Lc, Dc].
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { transformerBlock, type TransformerBlockWeights } from "@texforce/core/adapters";
 * declare const w: TransformerBlockWeights;
 * const y = transformerBlock(w, tf.ones([1, 64, 320]), tf.ones([1, 77, 768]));
 * ```
 */
export function transformerBlock(
  w: TransformerBlockWeights,
  x: Tensor,
  context: Tensor,
  slice = 0,
): Tensor {
  return tf.tidy(() => {
    const h = attentionPart(w.attn1, w.norm1, x, undefined, slice);
    return feedForward(w, attentionPart(w.attn2, w.norm2, h, context, slice));
  });
}

/** `h + attn(norm(h), context)`: one fused op on wasm when the weights are frozen and packed. */
function attentionPart(
  attn: AttentionWeights,
  norm: LayerNormWeights,
  h: Tensor,
  context: Tensor | undefined,
  slice: number,
): Tensor {
  // Sliced attention bounds memory by recomputing probabilities; the fused op keeps them.
  const sliced = slice > 0 && h.shape[1] as number > slice;
  const fused = sliced ? null : attentionParts(attn, norm);
  if (fused && fusedAttentionBlockFits(h, fused, context)) {
    return fusedAttentionBlock(h, fused, context);
  }
  return tf.add(h, attention(attn, layerNorm(h, norm), context, slice));
}

function attentionParts(
  attn: AttentionWeights,
  norm: LayerNormWeights,
): FusedAttentionBlockParts | null {
  const [q, k, v, out] = [attn.toQ, attn.toK, attn.toV, attn.toOut].map(packedLinearOf);
  if (!q || !k || !v || !out) return null;
  return { gamma: norm.weight, beta: norm.bias, eps: norm.eps, q, k, v, out, heads: attn.heads };
}

/** `h + ff(norm3(h))`: one fused op on wasm when the weights are frozen and packed. */
function feedForward(w: TransformerBlockWeights, h: Tensor): Tensor {
  const fused = feedForwardParts(w);
  if (fused && fusedFeedForwardFits(h, fused)) return fusedFeedForward(h, fused);
  const proj = linear(layerNorm(h, w.norm3), w.ffIn);
  return tf.add(h, linear(geglu(proj), w.ffOut));
}

function feedForwardParts(w: TransformerBlockWeights): FusedFeedForwardParts | null {
  const [ffIn, ffOut] = [packedLinearOf(w.ffIn), packedLinearOf(w.ffOut)];
  if (!ffIn || !ffOut) return null;
  return { gamma: w.norm3.weight, beta: w.norm3.bias, eps: w.norm3.eps, ffIn, ffOut };
}

/** GEGLU: the projection's first half is the value, the second half the gate. */
function geglu(proj: Tensor): Tensor {
  if (fusedGegluFits(proj)) return fusedGeglu(proj);
  const [value, gate] = tf.split(proj, 2, -1);
  return tf.mul(value, gelu(gate));
}

/**
 * A `Transformer2DModel` on x [B, H, W, C] conditioned on `context` [B, Lc, Dc]; `slice` bounds
 * the attention matrix (queries per chunk, 0 = all).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { transformer2D, type Transformer2DWeights } from "@texforce/core/adapters";
 * declare const w: Transformer2DWeights;
 * const y = transformer2D(w, tf.ones([1, 8, 8, 320]) as tf.Tensor4D, tf.ones([1, 77, 768]) as tf.Tensor3D);
 * ```
 */
export function transformer2D(
  w: Transformer2DWeights,
  x: Tensor4D,
  context: Tensor3D,
  slice = 0,
): Tensor4D {
  return tf.tidy(() => {
    const [b, hh, ww, c] = x.shape;
    let h = linear(groupNorm(x, w.norm).reshape([b, hh * ww, c]), w.projIn);
    for (const blk of w.blocks) h = transformerBlock(blk, h, context, slice);
    return tf.add(linear(h, w.projOut).reshape([b, hh, ww, c]), x) as Tensor4D;
  });
}
