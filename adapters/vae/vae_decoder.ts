/**
 * The decoder half of Stable Diffusion's VAE (diffusers' `AutoencoderKL`): `post_quant_conv`,
 * then `decoder.*` (conv_in, a mid block with one single-head attention, `UpDecoderBlock2D`s,
 * GroupNorm, SiLU, conv_out). Latents and images are NHWC.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import { readJsonFile } from "../../core/io/model_folder.ts";
import { openWeights } from "../../core/io/weights.ts";
import { conv2d, type Conv2dWeights, loadConv2d } from "../nn/conv2d.ts";
import {
  groupNorm,
  groupNormThenSilu,
  type GroupNormWeights,
  loadGroupNorm,
} from "../nn/group_norm.ts";
import { WeightReader } from "../nn/weight_reader.ts";
import { attention, type AttentionWeights, loadAttention } from "../unet/attention.ts";
import { loadUpsample, upsample } from "../unet/resample.ts";
import { loadResnetBlock, resnetBlock, type ResnetBlockWeights } from "../unet/resnet_block.ts";
import type { Tensor4D } from "../../core/tensor_types.ts";
import { keepFrozenCopies, releaseFrozenCopies } from "../nn/frozen_copies.ts";

/**
 * The validated fields of a VAE `config.json` that the decoder uses.
 *
 * @example
 * ```ts
 * import { parseVaeConfig, type VaeConfig } from "@texforce/core/adapters";
 * const c: VaeConfig = parseVaeConfig({ block_out_channels: [128, 256, 512, 512] });
 * console.log(c.scalingFactor); // 0.18215
 * ```
 */
export interface VaeConfig {
  /** Latent channels. */
  latentChannels: number;
  /** Image channels. */
  outChannels: number;
  /** Channels per level (the decoder runs them reversed). */
  blockOutChannels: number[];
  /** Resnets per encoder block (decoder blocks have one more). */
  layersPerBlock: number;
  /** GroupNorm groups. */
  normNumGroups: number;
  /** Latents are divided by this before decoding. */
  scalingFactor: number;
  /** Added after the division (SD3/Flux VAEs), 0 otherwise. */
  shiftFactor: number;
  /** Whether `post_quant_conv` exists. */
  usePostQuantConv: boolean;
  /** Whether the mid block has its attention. */
  midBlockAddAttention: boolean;
}

/**
 * Validate a raw `vae/config.json` (`file` names it in errors).
 *
 * @example
 * ```ts
 * import { parseVaeConfig } from "@texforce/core/adapters";
 * const c = parseVaeConfig({ block_out_channels: [128, 256, 512, 512], scaling_factor: 0.18215 });
 * console.log(c.scalingFactor);
 * ```
 */
export function parseVaeConfig(raw: Record<string, unknown>, file = "vae/config.json"): VaeConfig {
  const fail = (field: string, why: string) =>
    new Error(`${file}: field '${field}' = ${JSON.stringify(raw[field])} ${why}`);
  const get = <T>(
    f: string,
    d: T,
  ): T => (raw[f] === undefined || raw[f] === null ? d : raw[f] as T);
  const int = (f: string, d: number): number => {
    const v = get<unknown>(f, d);
    if (!Number.isInteger(v) || (v as number) < 1) throw fail(f, "is not a positive integer");
    return v as number;
  };
  if (raw._class_name !== undefined && raw._class_name !== "AutoencoderKL") {
    throw fail("_class_name", "is not supported (supported: AutoencoderKL)");
  }
  if (get("act_fn", "silu") !== "silu") throw fail("act_fn", "is not supported (supported: silu)");
  for (const f of ["latents_mean", "latents_std"]) {
    if (raw[f] !== undefined && raw[f] !== null) {
      throw fail(f, "is not supported (supported: null)");
    }
  }
  const boc = get<unknown>("block_out_channels", [64]);
  if (!Array.isArray(boc) || !boc.length || boc.some((c) => !Number.isInteger(c) || c < 1)) {
    throw fail("block_out_channels", "is not a list of positive integers");
  }
  const up = get<unknown>("up_block_types", boc.map(() => "UpDecoderBlock2D"));
  if (!Array.isArray(up) || up.length !== boc.length) {
    throw fail("up_block_types", `is not a list of ${boc.length} block types`);
  }
  up.forEach((t, i) => {
    if (t !== "UpDecoderBlock2D") {
      throw new Error(
        `${file}: field 'up_block_types[${i}]' = ${JSON.stringify(t)} is not supported ` +
          "(supported: UpDecoderBlock2D)",
      );
    }
  });
  const sf = get<unknown>("scaling_factor", 0.18215);
  if (typeof sf !== "number" || !(sf > 0)) throw fail("scaling_factor", "is not a positive number");
  const shift = get<unknown>("shift_factor", 0);
  if (typeof shift !== "number") throw fail("shift_factor", "is not a number");
  return {
    latentChannels: int("latent_channels", 4),
    outChannels: int("out_channels", 3),
    blockOutChannels: boc as number[],
    layersPerBlock: int("layers_per_block", 1),
    normNumGroups: int("norm_num_groups", 32),
    scalingFactor: sf,
    shiftFactor: shift,
    usePostQuantConv: get("use_post_quant_conv", true) as boolean,
    midBlockAddAttention: get("mid_block_add_attention", true) as boolean,
  };
}

interface DecoderWeights {
  postQuantConv?: Conv2dWeights;
  convIn: Conv2dWeights;
  midResnets: ResnetBlockWeights[];
  midAttn?: { norm: GroupNormWeights; attn: AttentionWeights };
  up: { resnets: ResnetBlockWeights[]; upsampler?: Conv2dWeights }[];
  convNormOut: GroupNormWeights;
  convOut: Conv2dWeights;
}

// The decoder's norms all use eps 1e-6 (fixed in diffusers' Decoder).
const EPS = 1e-6;

/**
 * The VAE decoder.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { VaeDecoder } from "@texforce/core/adapters";
 * const vae = await VaeDecoder.load("stable-diffusion-v1-5");
 * const images = vae.decode(tf.randomNormal([1, 64, 64, 4])); // [1, 512, 512, 3] in [0, 1]
 * ```
 */
export class VaeDecoder {
  /** The validated config. */
  readonly config: VaeConfig;
  /** Where the weights came from. */
  readonly source: string;
  #w: DecoderWeights;

  private constructor(config: VaeConfig, source: string, w: DecoderWeights) {
    this.config = config;
    this.source = source;
    this.#w = w;
    // The frozen layers' kernel-ready copies, made once (released by dispose()).
    keepFrozenCopies(w);
  }

  /** How many times larger the image side is than the latent side. */
  get upscale(): number {
    return 2 ** (this.config.blockOutChannels.length - 1);
  }

  /**
   * Load from a diffusers `vae/` folder or a pipeline folder holding one. Encoder weights in the
   * file are left unread.
   *
   * @example
   * ```ts
   * import { VaeDecoder } from "@texforce/core/adapters";
   * const vae = await VaeDecoder.load("sd15/vae");
   * ```
   */
  static async load(path: string, options: { variant?: string } = {}): Promise<VaeDecoder> {
    let dir = path;
    try {
      await Deno.stat(join(path, "config.json"));
    } catch {
      dir = join(path, "vae");
    }
    const configFile = join(dir, "config.json");
    const config = parseVaeConfig(await readJsonFile(configFile), configFile);
    const source = await openWeights(dir, { variant: options.variant });
    try {
      return await VaeDecoder.fromReader(config, new WeightReader(source));
    } finally {
      source.close();
    }
  }

  /**
   * Build from a config and a weight reader over the whole `AutoencoderKL` state dict.
   *
   * @example
   * ```ts
   * import { openWeights } from "@texforce/core";
   * import { parseVaeConfig, VaeDecoder, WeightReader } from "@texforce/core/adapters";
   * const vae = await VaeDecoder.fromReader(parseVaeConfig({}), new WeightReader(await openWeights("vae")));
   * ```
   */
  static async fromReader(config: VaeConfig, r: WeightReader): Promise<VaeDecoder> {
    const c = config;
    const g = c.normNumGroups;
    const rev = [...c.blockOutChannels].reverse();
    const top = rev[0];
    const d = r.child("decoder");
    const res = (rr: WeightReader, i: number, o: number) =>
      loadResnetBlock(rr, {
        inChannels: i,
        outChannels: o,
        tembChannels: null,
        groups: g,
        eps: EPS,
        outputScaleFactor: 1,
      });
    const w: DecoderWeights = {
      convIn: await loadConv2d(d, "conv_in", c.latentChannels, top, 3, 1, 1),
      midResnets: [await res(d.child("mid_block.resnets.0"), top, top)],
      up: [],
      convNormOut: await loadGroupNorm(d, "conv_norm_out", c.blockOutChannels[0], g, EPS),
      convOut: await loadConv2d(d, "conv_out", c.blockOutChannels[0], c.outChannels, 3, 1, 1),
    };
    if (c.usePostQuantConv) {
      w.postQuantConv = await loadConv2d(
        r,
        "post_quant_conv",
        c.latentChannels,
        c.latentChannels,
        1,
      );
    }
    if (c.midBlockAddAttention) {
      const a = d.child("mid_block.attentions.0");
      w.midAttn = {
        norm: await loadGroupNorm(a, "group_norm", top, g, EPS),
        attn: await loadAttention(a, { queryDim: top, contextDim: top, heads: 1, headDim: top }),
      };
    }
    w.midResnets.push(await res(d.child("mid_block.resnets.1"), top, top));
    let out = top;
    for (let i = 0; i < rev.length; i++) {
      const prev = out;
      out = rev[i];
      const b = d.child(`up_blocks.${i}`);
      const resnets: ResnetBlockWeights[] = [];
      for (let j = 0; j < c.layersPerBlock + 1; j++) {
        resnets.push(await res(b.child(`resnets.${j}`), j === 0 ? prev : out, out));
      }
      w.up.push({
        resnets,
        upsampler: i < rev.length - 1
          ? await loadUpsample(b.child("upsamplers.0"), out)
          : undefined,
      });
    }
    return new VaeDecoder(config, r.source.path, w);
  }

  /**
   * Decode latents [B, h, w, C] (as the sampler produces them, i.e. still multiplied by the
   * scaling factor) to the decoder's raw output [B, H, W, 3], roughly in [-1, 1].
   * Differentiable with respect to the latents.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { VaeDecoder } from "@texforce/core/adapters";
   * declare const vae: VaeDecoder;
   * const raw = vae.decodeRaw(tf.randomNormal([1, 64, 64, 4]));
   * ```
   */
  decodeRaw(latents: Tensor4D): Tensor4D {
    const w = this.#w;
    const c = this.config;
    return tf.tidy(() => {
      let z: Tensor4D = tf.div(latents, c.scalingFactor);
      if (c.shiftFactor) z = tf.add(z, c.shiftFactor);
      if (w.postQuantConv) z = conv2d(z, w.postQuantConv);
      let h = conv2d(z, w.convIn);
      h = resnetBlock(w.midResnets[0], h);
      if (w.midAttn) h = this.#midAttention(h);
      h = resnetBlock(w.midResnets[1], h);
      for (const u of w.up) {
        for (const rb of u.resnets) h = resnetBlock(rb, h);
        if (u.upsampler) h = upsample(u.upsampler, h);
      }
      h = groupNormThenSilu(h, w.convNormOut) as Tensor4D;
      return conv2d(h, w.convOut);
    });
  }

  #midAttention(x: Tensor4D): Tensor4D {
    const a = this.#w.midAttn!;
    return tf.tidy(() => {
      const [b, h, wd, c] = x.shape;
      const seq = groupNorm(x, a.norm).reshape([b, h * wd, c]);
      return tf.add(x, attention(a.attn, seq).reshape([b, h, wd, c])) as Tensor4D;
    });
  }

  /**
   * Decode latents to RGB images [B, H, W, 3] in [0, 1] (clamp(x/2 + 0.5)), as the diffusers
   * pipeline does.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { VaeDecoder } from "@texforce/core/adapters";
   * declare const vae: VaeDecoder;
   * const images = vae.decode(tf.randomNormal([1, 64, 64, 4]));
   * ```
   */
  decode(latents: Tensor4D): Tensor4D {
    return tf.tidy(() => tf.clipByValue(tf.add(tf.mul(this.decodeRaw(latents), 0.5), 0.5), 0, 1));
  }

  /**
   * Release the weights.
   *
   * @example
   * ```ts
   * import type { VaeDecoder } from "@texforce/core/adapters";
   * declare const vae: VaeDecoder;
   * vae.dispose();
   * ```
   */
  dispose(): void {
    releaseFrozenCopies(this.#w);
    tf.dispose(this.#w as unknown as tf.TensorContainer);
  }
}
