/**
 * BLIP's image encoder (`models/BLIP/vit.py`, timm's ViT): a P×P patch convolution with bias,
 * a class token, position embeddings on all tokens, pre-LN blocks (fused `qkv` with bias,
 * exact GELU MLP, LayerNorm eps 1e-6) and a final LayerNorm. All tokens are returned: BLIP's
 * text encoder cross-attends to every one of them.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { multiHeadAttention } from "../nn/attention.ts";
import { layerNorm, type LayerNormWeights } from "../nn/layer_norm.ts";
import { disposeLinear, linear, type LinearWeights } from "../nn/linear.ts";
import type { WeightReader } from "../nn/weight_reader.ts";
import { OwnedTensors } from "../nn/owned_tensors.ts";
import { clipActivate } from "../clip/_clip_tower.ts";
import type { Tensor, Tensor1D, Tensor3D, Tensor4D } from "../../core/tensor_types.ts";

/** Sizes of a BLIP ViT (`create_vit`). */
export interface BlipVitConfig {
  /** Input side (224 in ImageReward). */
  imageSize: number;
  /** Patch side (16). */
  patchSize: number;
  /** Width (1024 for `'large'`). */
  width: number;
  /** Blocks (24). */
  depth: number;
  /** Heads (16). */
  heads: number;
  /** MLP width (4 × width). */
  mlpWidth: number;
  /** LayerNorm epsilon (1e-6). */
  eps: number;
}

/**
 * Every key of a BLIP ViT under `prefix` with its PyTorch shape.
 *
 * @example
 * ```ts
 * import { blipVitLayout } from "@texforce/core/adapters";
 * const keys = blipVitLayout({
 *   imageSize: 224, patchSize: 16, width: 1024, depth: 24, heads: 16, mlpWidth: 4096, eps: 1e-6,
 * }, "blip.visual_encoder.");
 * console.log(keys.get("blip.visual_encoder.pos_embed")); // [1, 197, 1024]
 * ```
 */
export function blipVitLayout(c: BlipVitConfig, prefix: string): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const d = c.width;
  const tokens = (c.imageSize / c.patchSize) ** 2 + 1;
  m.set(`${prefix}patch_embed.proj.weight`, [d, 3, c.patchSize, c.patchSize]);
  m.set(`${prefix}patch_embed.proj.bias`, [d]);
  m.set(`${prefix}cls_token`, [1, 1, d]);
  m.set(`${prefix}pos_embed`, [1, tokens, d]);
  for (let i = 0; i < c.depth; i++) {
    const p = `${prefix}blocks.${i}.`;
    for (const n of ["norm1", "norm2"]) {
      m.set(`${p}${n}.weight`, [d]);
      m.set(`${p}${n}.bias`, [d]);
    }
    m.set(`${p}attn.qkv.weight`, [3 * d, d]);
    m.set(`${p}attn.qkv.bias`, [3 * d]);
    m.set(`${p}attn.proj.weight`, [d, d]);
    m.set(`${p}attn.proj.bias`, [d]);
    m.set(`${p}mlp.fc1.weight`, [c.mlpWidth, d]);
    m.set(`${p}mlp.fc1.bias`, [c.mlpWidth]);
    m.set(`${p}mlp.fc2.weight`, [d, c.mlpWidth]);
    m.set(`${p}mlp.fc2.bias`, [d]);
  }
  m.set(`${prefix}norm.weight`, [d]);
  m.set(`${prefix}norm.bias`, [d]);
  return m;
}

interface Block {
  norm1: LayerNormWeights;
  norm2: LayerNormWeights;
  qkv: LinearWeights;
  proj: LinearWeights;
  fc1: LinearWeights;
  fc2: LinearWeights;
}

/**
 * BLIP's `VisionTransformer` in tfjs (inference). Pixels are NHWC, already normalised.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import type { BlipVit } from "@texforce/core/adapters";
 * declare const vit: BlipVit;
 * const s = vit.config.imageSize;
 * const tokens = vit.forward(tf.zeros([1, s, s, 3]) as tf.Tensor4D); // [1, 197, 1024]
 * ```
 */
export class BlipVit {
  /** The sizes. */
  readonly config: BlipVitConfig;
  #patch: Tensor4D;
  #patchBias: Tensor1D;
  #cls: Tensor;
  #pos: Tensor;
  #blocks: Block[];
  #norm: LayerNormWeights;

  private constructor(config: BlipVitConfig, parts: {
    patch: Tensor4D;
    patchBias: Tensor1D;
    cls: Tensor;
    pos: Tensor;
    blocks: Block[];
    norm: LayerNormWeights;
  }) {
    this.config = config;
    this.#patch = parts.patch;
    this.#patchBias = parts.patchBias;
    this.#cls = parts.cls;
    this.#pos = parts.pos;
    this.#blocks = parts.blocks;
    this.#norm = parts.norm;
  }

  /**
   * Read the weights under `r` (e.g. `blip.visual_encoder.`); shapes are checked.
   *
   * @example
   * ```ts
   * import { openWeights } from "@texforce/core";
   * import { BlipVit, WeightReader } from "@texforce/core/adapters";
   * const src = await openWeights("ImageReward/model.safetensors");
   * const vit = await BlipVit.load(new WeightReader(src, "blip.visual_encoder."), {
   *   imageSize: 224, patchSize: 16, width: 1024, depth: 24, heads: 16, mlpWidth: 4096, eps: 1e-6,
   * });
   * ```
   */
  static async load(r: WeightReader, c: BlipVitConfig): Promise<BlipVit> {
    const owned = new OwnedTensors(r);
    const keep = <T extends Tensor>(t: T): T => owned.keep(t);
    const d = c.width;
    const lin = (name: string, i: number, o: number) => owned.linear(name, i, o);
    const ln = (name: string) => owned.layerNorm(name, d, c.eps);
    try {
      const conv = await r.tensor("patch_embed.proj.weight", [d, 3, c.patchSize, c.patchSize]);
      const patch = keep(tf.tidy(() => conv.transpose([2, 3, 1, 0]) as Tensor4D));
      conv.dispose();
      const patchBias = keep(await r.tensor("patch_embed.proj.bias", [d]) as Tensor1D);
      const tokens = (c.imageSize / c.patchSize) ** 2 + 1;
      const cls = keep(await r.tensor("cls_token", [1, 1, d]));
      const pos = keep(await r.tensor("pos_embed", [1, tokens, d]));
      const blocks: Block[] = [];
      for (let i = 0; i < c.depth; i++) {
        const p = `blocks.${i}`;
        blocks.push({
          norm1: await ln(`${p}.norm1`),
          norm2: await ln(`${p}.norm2`),
          qkv: await lin(`${p}.attn.qkv`, d, 3 * d),
          proj: await lin(`${p}.attn.proj`, d, d),
          fc1: await lin(`${p}.mlp.fc1`, d, c.mlpWidth),
          fc2: await lin(`${p}.mlp.fc2`, c.mlpWidth, d),
        });
      }
      const norm = await ln("norm");
      return new BlipVit(c, { patch, patchBias, cls, pos, blocks, norm });
    } catch (e) {
      owned.dispose();
      throw e;
    }
  }

  /**
   * timm's `PatchEmbed` output [B, P, D] (conv, flattened row-major), for checks.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { BlipVit } from "@texforce/core/adapters";
   * declare const vit: BlipVit;
   * const p = vit.patchEmbed(tf.zeros([1, 224, 224, 3]) as tf.Tensor4D);
   * ```
   */
  patchEmbed(pixels: Tensor4D): Tensor3D {
    const c = this.config;
    const [b, h, w, ch] = pixels.shape;
    if (h !== c.imageSize || w !== c.imageSize || ch !== 3) {
      throw new Error(
        `BlipVit: expected pixels [B, ${c.imageSize}, ${c.imageSize}, 3] (NHWC), got ` +
          `[${pixels.shape.join(", ")}]`,
      );
    }
    const g = c.imageSize / c.patchSize;
    return tf.tidy(() =>
      tf.add(tf.conv2d(pixels, this.#patch, c.patchSize, "valid"), this.#patchBias)
        .reshape([b, g * g, c.width]) as Tensor3D
    );
  }

  /**
   * All output tokens [B, 1 + P, D] after the final LayerNorm.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { BlipVit } from "@texforce/core/adapters";
   * declare const vit: BlipVit;
   * const tokens = vit.forward(tf.zeros([1, 224, 224, 3]) as tf.Tensor4D);
   * ```
   */
  forward(pixels: Tensor4D): Tensor3D {
    const c = this.config;
    const b = pixels.shape[0];
    const d = c.width;
    return tf.tidy(() => {
      const patches = this.patchEmbed(pixels);
      const l = patches.shape[1] + 1;
      const cls = tf.broadcastTo(this.#cls, [b, 1, d]);
      let x: Tensor = tf.add(tf.concat([cls, patches], 1), this.#pos).reshape([b * l, d]);
      for (const blk of this.#blocks) {
        const y = layerNorm(x, blk.norm1);
        // Fused qkv: output columns q | k | v, heads contiguous inside each.
        const qkv = linear(y, blk.qkv);
        const [q, k, v] = tf.split(qkv, 3, -1).map((t) => t.reshape([b, l, d]));
        const att = multiHeadAttention(q, k, v, c.heads).reshape([b * l, d]);
        x = tf.add(x, linear(att, blk.proj));
        const z = layerNorm(x, blk.norm2);
        x = tf.add(x, linear(clipActivate(linear(z, blk.fc1), "gelu"), blk.fc2));
      }
      return layerNorm(x, this.#norm).reshape([b, l, d]) as Tensor3D;
    });
  }

  /** Release all weights. */
  dispose(): void {
    this.#patch.dispose();
    this.#patchBias.dispose();
    this.#cls.dispose();
    this.#pos.dispose();
    for (const blk of this.#blocks) {
      for (const n of [blk.norm1, blk.norm2]) {
        n.weight.dispose();
        n.bias.dispose();
      }
      for (const w of [blk.qkv, blk.proj, blk.fc1, blk.fc2]) disposeLinear(w);
    }
    this.#norm.weight.dispose();
    this.#norm.bias.dispose();
    this.#blocks = [];
  }
}
