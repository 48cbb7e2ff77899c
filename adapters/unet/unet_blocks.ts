/**
 * The UNet's blocks: `CrossAttnDownBlock2D`/`DownBlock2D`, `UNetMidBlock2DCrossAttn` and
 * `CrossAttnUpBlock2D`/`UpBlock2D`. A down block without attentions is a `DownBlock2D`, an up
 * block without attentions an `UpBlock2D`.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Conv2dWeights } from "../nn/conv2d.ts";
import type { WeightReader } from "../nn/weight_reader.ts";
import type { LinearRegistry } from "./_linear_registry.ts";
import { downsample, loadDownsample, loadUpsample, upsample } from "./resample.ts";
import { loadResnetBlock, resnetBlock, type ResnetBlockWeights } from "./resnet_block.ts";
import { loadTransformer2D, transformer2D, type Transformer2DWeights } from "./transformer_2d.ts";
import type { Tensor2D, Tensor3D, Tensor4D } from "../../core/tensor_types.ts";

/**
 * Weights of a down block.
 *
 * @example
 * ```ts
 * import type { DownBlockWeights } from "@texforce/core/adapters";
 * declare const w: DownBlockWeights;
 * console.log(w.attentions.length ? "CrossAttnDownBlock2D" : "DownBlock2D");
 * ```
 */
export interface DownBlockWeights {
  /** Resnets, one per layer. */
  resnets: ResnetBlockWeights[];
  /** Transformers after each resnet (empty for `DownBlock2D`). */
  attentions: Transformer2DWeights[];
  /** Stride-2 conv at the end (all but the last block). */
  downsampler?: Conv2dWeights;
}

/**
 * Weights of the mid block: resnet, then (attention, resnet) pairs.
 *
 * @example
 * ```ts
 * import type { MidBlockWeights } from "@texforce/core/adapters";
 * declare const w: MidBlockWeights;
 * console.log(w.resnets.length); // 2
 * ```
 */
export interface MidBlockWeights {
  /** Resnets (one more than attentions). */
  resnets: ResnetBlockWeights[];
  /** Transformers. */
  attentions: Transformer2DWeights[];
}

/**
 * Weights of an up block.
 *
 * @example
 * ```ts
 * import type { UpBlockWeights } from "@texforce/core/adapters";
 * declare const w: UpBlockWeights;
 * console.log(w.upsampler !== undefined);
 * ```
 */
export interface UpBlockWeights {
  /** Resnets, one per layer, each fed the concatenation with a skip connection. */
  resnets: ResnetBlockWeights[];
  /** Transformers after each resnet (empty for `UpBlock2D`). */
  attentions: Transformer2DWeights[];
  /** Upsampler at the end (all but the last block). */
  upsampler?: Conv2dWeights;
}

/**
 * Settings shared by the blocks of one UNet.
 *
 * @example
 * ```ts
 * import type { BlockSettings } from "@texforce/core/adapters";
 * const s: BlockSettings = { tembChannels: 1280, groups: 32, eps: 1e-5, outputScaleFactor: 1 };
 * ```
 */
export interface BlockSettings {
  /** Time-embedding width. */
  tembChannels: number;
  /** GroupNorm groups. */
  groups: number;
  /** GroupNorm epsilon of the resnets. */
  eps: number;
  /** Output scale of the resnets. */
  outputScaleFactor: number;
}

/**
 * What a block with attention needs to know about it.
 *
 * @example
 * ```ts
 * import type { BlockAttention } from "@texforce/core/adapters";
 * const a: BlockAttention = { heads: 8, crossAttentionDim: 768, layers: 1 };
 * ```
 */
export interface BlockAttention {
  /** Heads. */
  heads: number;
  /** Encoder-state width. */
  crossAttentionDim: number;
  /** Transformer blocks per attention. */
  layers: number;
}

// Layer i of a down or up block: `resnets.i` and, with attention settings, `attentions.i`.
async function loadLayer(
  w: { resnets: ResnetBlockWeights[]; attentions: Transformer2DWeights[] },
  r: WeightReader,
  i: number,
  inChannels: number,
  outChannels: number,
  attn: BlockAttention | null,
  s: BlockSettings,
  registry?: LinearRegistry,
): Promise<void> {
  w.resnets.push(
    await loadResnetBlock(r.child(`resnets.${i}`), {
      inChannels,
      outChannels,
      tembChannels: s.tembChannels,
      groups: s.groups,
      eps: s.eps,
      outputScaleFactor: s.outputScaleFactor,
    }, registry),
  );
  if (attn) {
    w.attentions.push(
      await loadTransformer2D(r.child(`attentions.${i}`), {
        channels: outChannels,
        ...attn,
        groups: s.groups,
      }, registry),
    );
  }
}

/**
 * Read a down block under `r` (e.g. `r.child("down_blocks.1")`); `attn` null for `DownBlock2D`.
 *
 * @example
 * ```ts
 * import { loadDownBlock, type WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const b = await loadDownBlock(r.child("down_blocks.0"), 320, 320, 2,
 *   { heads: 8, crossAttentionDim: 768, layers: 1 }, true, 1,
 *   { tembChannels: 1280, groups: 32, eps: 1e-5, outputScaleFactor: 1 });
 * ```
 */
export async function loadDownBlock(
  r: WeightReader,
  inChannels: number,
  outChannels: number,
  layers: number,
  attn: BlockAttention | null,
  addDownsample: boolean,
  downsamplePadding: number,
  s: BlockSettings,
  registry?: LinearRegistry,
): Promise<DownBlockWeights> {
  const w: DownBlockWeights = { resnets: [], attentions: [] };
  for (let i = 0; i < layers; i++) {
    await loadLayer(w, r, i, i === 0 ? inChannels : outChannels, outChannels, attn, s, registry);
  }
  if (addDownsample) {
    w.downsampler = await loadDownsample(r.child("downsamplers.0"), outChannels, downsamplePadding);
  }
  return w;
}

/**
 * Run a down block: returns its output and the skip connections it produces, in order. `temb`
 * is the time embedding after its SiLU (see {@linkcode resnetBlock}).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { downBlock, type DownBlockWeights } from "@texforce/core/adapters";
 * declare const w: DownBlockWeights;
 * const { hidden, skips } = downBlock(w, tf.ones([1, 8, 8, 320]) as tf.Tensor4D,
 *   tf.ones([1, 1280]) as tf.Tensor2D, tf.ones([1, 77, 768]) as tf.Tensor3D);
 * ```
 */
export function downBlock(
  w: DownBlockWeights,
  x: Tensor4D,
  temb: Tensor2D,
  context: Tensor3D,
  slice = 0,
): { hidden: Tensor4D; skips: Tensor4D[] } {
  return tf.tidy(() => {
    const skips: Tensor4D[] = [];
    let h = x;
    w.resnets.forEach((rb, i) => {
      h = resnetBlock(rb, h, temb);
      if (w.attentions[i]) h = transformer2D(w.attentions[i], h, context, slice);
      skips.push(h);
    });
    if (w.downsampler) {
      h = downsample(w.downsampler, h);
      skips.push(h);
    }
    return { hidden: h, skips };
  });
}

/**
 * Read the mid block under `r` (`r.child("mid_block")`).
 *
 * @example
 * ```ts
 * import { loadMidBlock, type WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const m = await loadMidBlock(r.child("mid_block"), 1280, { heads: 8, crossAttentionDim: 768, layers: 1 },
 *   { tembChannels: 1280, groups: 32, eps: 1e-5, outputScaleFactor: 1 });
 * ```
 */
export async function loadMidBlock(
  r: WeightReader,
  channels: number,
  attn: BlockAttention,
  s: BlockSettings,
  registry?: LinearRegistry,
): Promise<MidBlockWeights> {
  const shape = {
    inChannels: channels,
    outChannels: channels,
    tembChannels: s.tembChannels,
    groups: s.groups,
    eps: s.eps,
    outputScaleFactor: s.outputScaleFactor,
  };
  return {
    resnets: [
      await loadResnetBlock(r.child("resnets.0"), shape, registry),
      await loadResnetBlock(r.child("resnets.1"), shape, registry),
    ],
    attentions: [
      await loadTransformer2D(
        r.child("attentions.0"),
        { channels, ...attn, groups: s.groups },
        registry,
      ),
    ],
  };
}

/**
 * Run the mid block. `temb` is the time embedding after its SiLU (see {@linkcode resnetBlock}).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { midBlock, type MidBlockWeights } from "@texforce/core/adapters";
 * declare const w: MidBlockWeights;
 * const y = midBlock(w, tf.ones([1, 8, 8, 1280]) as tf.Tensor4D, tf.ones([1, 1280]) as tf.Tensor2D,
 *   tf.ones([1, 77, 768]) as tf.Tensor3D);
 * ```
 */
export function midBlock(
  w: MidBlockWeights,
  x: Tensor4D,
  temb: Tensor2D,
  context: Tensor3D,
  slice = 0,
): Tensor4D {
  return tf.tidy(() => {
    let h = resnetBlock(w.resnets[0], x, temb);
    w.attentions.forEach((a, i) => {
      h = transformer2D(a, h, context, slice);
      h = resnetBlock(w.resnets[i + 1], h, temb);
    });
    return h;
  });
}

/**
 * Read an up block under `r` (e.g. `r.child("up_blocks.1")`). `inChannels` is the channel count
 * of the deepest skip it consumes, `prevOutputChannels` the width of its input; `attn` null for
 * `UpBlock2D`.
 *
 * @example
 * ```ts
 * import { loadUpBlock, type WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const u = await loadUpBlock(r.child("up_blocks.0"), 1280, 1280, 1280, 3, null, true,
 *   { tembChannels: 1280, groups: 32, eps: 1e-5, outputScaleFactor: 1 });
 * ```
 */
export async function loadUpBlock(
  r: WeightReader,
  inChannels: number,
  outChannels: number,
  prevOutputChannels: number,
  layers: number,
  attn: BlockAttention | null,
  addUpsample: boolean,
  s: BlockSettings,
  registry?: LinearRegistry,
): Promise<UpBlockWeights> {
  const w: UpBlockWeights = { resnets: [], attentions: [] };
  for (let i = 0; i < layers; i++) {
    const skipChannels = i === layers - 1 ? inChannels : outChannels;
    const resIn = i === 0 ? prevOutputChannels : outChannels;
    await loadLayer(w, r, i, resIn + skipChannels, outChannels, attn, s, registry);
  }
  if (addUpsample) w.upsampler = await loadUpsample(r.child("upsamplers.0"), outChannels);
  return w;
}

/**
 * Run an up block on `x` with its skip connections (in the order the down path produced them;
 * the last one is consumed first). `upsampleSize` is the spatial size after the upsampler;
 * `temb` is the time embedding after its SiLU (see {@linkcode resnetBlock}).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { upBlock, type UpBlockWeights } from "@texforce/core/adapters";
 * declare const w: UpBlockWeights;
 * declare const skips: tf.Tensor4D[];
 * const y = upBlock(w, tf.ones([1, 8, 8, 1280]) as tf.Tensor4D, skips,
 *   tf.ones([1, 1280]) as tf.Tensor2D, tf.ones([1, 77, 768]) as tf.Tensor3D);
 * ```
 */
export function upBlock(
  w: UpBlockWeights,
  x: Tensor4D,
  skips: Tensor4D[],
  temb: Tensor2D,
  context: Tensor3D,
  slice = 0,
  upsampleSize?: [number, number],
): Tensor4D {
  if (skips.length !== w.resnets.length) {
    throw new Error(`upBlock: ${skips.length} skip connections for ${w.resnets.length} resnets`);
  }
  return tf.tidy(() => {
    let h = x;
    w.resnets.forEach((rb, i) => {
      const skip = skips[skips.length - 1 - i];
      h = resnetBlock(rb, tf.concat([h, skip], 3) as Tensor4D, temb);
      if (w.attentions[i]) h = transformer2D(w.attentions[i], h, context, slice);
    });
    if (w.upsampler) h = upsample(w.upsampler, h, upsampleSize);
    return h;
  });
}
