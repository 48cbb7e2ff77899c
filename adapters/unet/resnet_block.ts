/**
 * diffusers' `ResnetBlock2D` over NHWC tensors: GroupNorm, SiLU, 3×3 conv, plus the projected
 * time embedding (UNet) or none (VAE), a second norm/conv, and a 1×1 shortcut when the channel
 * count changes.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { conv2d, type Conv2dWeights, loadConv2d, sameConvOf } from "../nn/conv2d.ts";
import {
  fusedResnetBlock,
  fusedResnetBlockFits,
  type FusedResnetBlockParts,
} from "../wasm/fused_resnet_block.ts";
import { groupNormThenSilu, type GroupNormWeights, loadGroupNorm } from "../nn/group_norm.ts";
import { linear, type LinearWeights, packedLinearOf } from "../nn/linear.ts";
import type { WeightReader } from "../nn/weight_reader.ts";
import { type LinearRegistry, loadRegisteredLinear } from "./_linear_registry.ts";
import type { Tensor2D, Tensor4D } from "../../core/tensor_types.ts";

/**
 * Shape and settings of a resnet block.
 *
 * @example
 * ```ts
 * import type { ResnetBlockShape } from "@texforce/core/adapters";
 * const s: ResnetBlockShape = {
 *   inChannels: 320, outChannels: 640, tembChannels: 1280, groups: 32, eps: 1e-5, outputScaleFactor: 1,
 * };
 * ```
 */
export interface ResnetBlockShape {
  /** Input channels. */
  inChannels: number;
  /** Output channels. */
  outChannels: number;
  /** Width of the time embedding, or null (VAE). */
  tembChannels: number | null;
  /** GroupNorm groups. */
  groups: number;
  /** GroupNorm epsilon. */
  eps: number;
  /** The output is divided by this (`output_scale_factor`). */
  outputScaleFactor: number;
}

/**
 * Weights of a resnet block.
 *
 * @example
 * ```ts
 * import type { ResnetBlockWeights } from "@texforce/core/adapters";
 * declare const w: ResnetBlockWeights;
 * console.log(w.convShortcut !== undefined);
 * ```
 */
export interface ResnetBlockWeights {
  /** First GroupNorm. */
  norm1: GroupNormWeights;
  /** First 3×3 conv. */
  conv1: Conv2dWeights;
  /** Time-embedding projection, when the block is time-conditioned. */
  timeEmbProj?: LinearWeights;
  /** Second GroupNorm. */
  norm2: GroupNormWeights;
  /** Second 3×3 conv. */
  conv2: Conv2dWeights;
  /** 1×1 shortcut when in ≠ out channels. */
  convShortcut?: Conv2dWeights;
  /** Output scale divisor. */
  outputScaleFactor: number;
}

/**
 * Read a resnet block under `r` (e.g. `r.child("down_blocks.0.resnets.1")`).
 *
 * @example
 * ```ts
 * import { loadResnetBlock, type WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const rb = await loadResnetBlock(r.child("mid_block.resnets.0"), {
 *   inChannels: 1280, outChannels: 1280, tembChannels: 1280, groups: 32, eps: 1e-5,
 *   outputScaleFactor: 1,
 * });
 * ```
 */
export async function loadResnetBlock(
  r: WeightReader,
  s: ResnetBlockShape,
  registry?: LinearRegistry,
): Promise<ResnetBlockWeights> {
  const w: ResnetBlockWeights = {
    norm1: await loadGroupNorm(r, "norm1", s.inChannels, s.groups, s.eps),
    conv1: await loadConv2d(r, "conv1", s.inChannels, s.outChannels, 3, 1, 1),
    norm2: await loadGroupNorm(r, "norm2", s.outChannels, s.groups, s.eps),
    conv2: await loadConv2d(r, "conv2", s.outChannels, s.outChannels, 3, 1, 1),
    outputScaleFactor: s.outputScaleFactor,
  };
  if (s.tembChannels !== null) {
    w.timeEmbProj = await loadRegisteredLinear(
      r,
      "time_emb_proj",
      s.tembChannels,
      s.outChannels,
      registry,
    );
  }
  if (s.inChannels !== s.outChannels) {
    w.convShortcut = await loadConv2d(r, "conv_shortcut", s.inChannels, s.outChannels, 1, 1, 0);
  }
  return w;
}

/**
 * (shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x))) + proj(temb))))) / scale, with `temb`
 * [B, T] the time embedding after its SiLU, required when the block has a time projection.
 * diffusers' block applies that SiLU itself; here the UNet applies it once for all its blocks
 * (the same values: every block activates the same embedding), which spares each block a
 * Sigmoid and a Multiply, about 40 µs of tfjs' engine each at the tiny UNet's batch 2.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { resnetBlock, type ResnetBlockWeights } from "@texforce/core/adapters";
 * declare const w: ResnetBlockWeights;
 * const y = resnetBlock(w, tf.ones([1, 8, 8, 320]) as tf.Tensor4D, tf.ones([1, 1280]) as tf.Tensor2D);
 * ```
 */
export function resnetBlock(
  w: ResnetBlockWeights,
  x: Tensor4D,
  temb?: Tensor2D,
): Tensor4D {
  return tf.tidy(() => {
    if (w.timeEmbProj && !temb) throw new Error("resnetBlock: this block needs a time embedding");
    const fused = w.outputScaleFactor === 1 ? fusedParts(w) : null;
    // The fused kernel projects the embedding itself where the projection is frozen and packed.
    if (fused?.time && temb && fusedResnetBlockFits(x, fused, temb)) {
      return fusedResnetBlock(x, fused, temb);
    }
    const t = w.timeEmbProj && temb ? linear(temb, w.timeEmbProj) as Tensor2D : undefined;
    if (fused) {
      const withT = { ...fused, time: undefined };
      if (fusedResnetBlockFits(x, withT, t)) return fusedResnetBlock(x, withT, t);
    }
    let h = conv2d(groupNormThenSilu(x, w.norm1) as Tensor4D, w.conv1);
    if (t) h = tf.add(h, t.reshape([t.shape[0], 1, 1, t.shape[1]]));
    h = conv2d(groupNormThenSilu(h, w.norm2) as Tensor4D, w.conv2);
    const skip = w.convShortcut ? conv2d(x, w.convShortcut) : x;
    const out = tf.add(skip, h);
    return (w.outputScaleFactor === 1 ? out : tf.div(out, w.outputScaleFactor)) as Tensor4D;
  });
}

function fusedParts(w: ResnetBlockWeights): FusedResnetBlockParts | null {
  const [conv1, conv2] = [sameConvOf(w.conv1), sameConvOf(w.conv2)];
  const shortcut = w.convShortcut ? sameConvOf(w.convShortcut) : undefined;
  if (!conv1 || !conv2 || shortcut === null) return null;
  const time = w.timeEmbProj ? packedLinearOf(w.timeEmbProj) ?? undefined : undefined;
  return { norm1: normPart(w.norm1), conv1, norm2: normPart(w.norm2), conv2, shortcut, time };
}

const normPart = (n: GroupNormWeights) => ({
  gamma: n.weight,
  beta: n.bias,
  groups: n.groups,
  eps: n.eps,
});
