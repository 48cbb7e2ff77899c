/**
 * ImageReward (Xu et al. 2023, THUDM/ImageReward): BLIP's ViT image encoder, its
 * image-grounded BERT text encoder, and an affine MLP head on the `[CLS]` state; score =
 * (mlp − mean) / std. Sizes come from `med_config.json` (required, it ships with the model) and
 * an optional `config.json` (`vision`, `mlp`, `score_mean`, `score_std`, `text_max_length`,
 * `preprocess`), whose absent fields default to ImageReward-v1.0 (ViT-L/16 at 224, MLP
 * 768→1024→128→64→16→1).
 *
 * The weights are `ImageReward.pt`, a pickle the project never loads: convert it once with
 * PyTorch and safetensors installed,
 *
 * ```sh
 * python -c "import torch; from safetensors.torch import save_file; sd = torch.load('ImageReward.pt', map_location='cpu', weights_only=True); save_file({k: v.contiguous() for k, v in sd.items()}, 'model.safetensors')"
 * ```
 *
 * and put `model.safetensors` next to `med_config.json` (and a `tokenizer/` folder: the
 * `bert-base-uncased` files plus `[DEC]`/`[ENC]`, as `BertTokenizer.save_pretrained` writes it
 * from `blip.init_tokenizer()`).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { dirname, join } from "node:path";
import type { WeightSource } from "../../core/io/safetensors.ts";
import { openWeights } from "../../core/io/weights.ts";
import { pathExists } from "../../core/io/path_exists.ts";
import { readJsonFile } from "../../core/io/model_folder.ts";
import { BlipVit, type BlipVitConfig, blipVitLayout } from "./blip_vit.ts";
import {
  type BertCrossConfig,
  BertCrossEncoder,
  bertCrossLayout,
  parseBertCrossConfig,
} from "./bert_cross_encoder.ts";
import { pilResize } from "../clip/clip_image_processor.ts";
import { disposeLinear, linear, type LinearWeights, loadLinear } from "../nn/linear.ts";
import { WeightReader } from "../nn/weight_reader.ts";
import { roundHalfEven } from "../clip/open_clip_image_transform.ts";
import type { Tensor1D, Tensor2D, Tensor3D, Tensor4D } from "../../core/tensor_types.ts";

/** Everything an ImageReward model is sized by. */
export interface ImageRewardConfig {
  /** The BLIP ViT. */
  vision: BlipVitConfig;
  /** The BERT with cross-attention. */
  text: BertCrossConfig;
  /** Widths of the head's linear layers, input first (768, 1024, 128, 64, 16, 1). */
  mlpLayers: number[];
  /** Subtracted from the head's output (0.16717362830052426). */
  scoreMean: number;
  /** Divides it after (1.0333394966054072). */
  scoreStd: number;
  /** Token rows (35). */
  textMaxLength: number;
  /** Per-channel mean (CLIP's). */
  imageMean: [number, number, number];
  /** Per-channel std (CLIP's). */
  imageStd: [number, number, number];
}

// The head's Linear layers; Dropouts sit at 1, 3, 5 and the ReLUs are commented out upstream.
const MLP_LAYERS = [0, 2, 4, 6, 7];

/**
 * ImageReward's sizes from `med_config.json` and the optional `config.json` contents.
 *
 * @example
 * ```ts
 * import { parseImageRewardConfig } from "@texforce/core/adapters";
 * const c = parseImageRewardConfig({}, "config.json", {
 *   hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072,
 *   vocab_size: 30524, max_position_embeddings: 512, encoder_width: 1024,
 *   add_cross_attention: true,
 * }, "med_config.json");
 * console.log(c.vision.depth); // 24
 * ```
 */
export function parseImageRewardConfig(
  json: Record<string, unknown>,
  file: string,
  med: Record<string, unknown>,
  medFile: string,
): ImageRewardConfig {
  const text = parseBertCrossConfig(med, medFile);
  const v = (json.vision ?? {}) as Record<string, unknown>;
  const num = (src: Record<string, unknown>, where: string, key: string, fallback: number) => {
    const x = src[key] ?? fallback;
    if (typeof x !== "number" || !(x > 0)) {
      throw new Error(
        `${file}: '${where}${key}' must be a positive number, got ${JSON.stringify(x)}`,
      );
    }
    return x;
  };
  const int = (src: Record<string, unknown>, where: string, key: string, fallback: number) => {
    const x = num(src, where, key, fallback);
    if (!Number.isInteger(x)) throw new Error(`${file}: '${where}${key}' must be an integer`);
    return x;
  };
  const width = int(v, "vision.", "embed_dim", 1024);
  const vision: BlipVitConfig = {
    imageSize: int(v, "vision.", "img_size", 224),
    patchSize: int(v, "vision.", "patch_size", 16),
    width,
    depth: int(v, "vision.", "depth", 24),
    heads: int(v, "vision.", "num_heads", 16),
    mlpWidth: Math.trunc(width * num(v, "vision.", "mlp_ratio", 4)),
    eps: num(v, "vision.", "layer_norm_eps", 1e-6),
  };
  if (v.qkv_bias === false) throw new Error(`${file}: 'vision.qkv_bias' false is not supported`);
  if (vision.imageSize % vision.patchSize !== 0 || width % vision.heads !== 0) {
    throw new Error(
      `${file}: vision sizes do not divide (img_size/patch_size, embed_dim/num_heads)`,
    );
  }
  if (text.encoderWidth !== width) {
    throw new Error(
      `${medFile}: encoder_width ${text.encoderWidth} differs from the ViT width ${width} (${file})`,
    );
  }
  const mlp = (json.mlp ?? {}) as Record<string, unknown>;
  const layers = mlp.layers ?? [text.hiddenSize, 1024, 128, 64, 16, 1];
  if (
    !Array.isArray(layers) || layers.length !== MLP_LAYERS.length + 1 ||
    !layers.every((x) => Number.isInteger(x) && x > 0)
  ) {
    throw new Error(`${file}: 'mlp.layers' must list ${MLP_LAYERS.length + 1} positive widths`);
  }
  if (layers[0] !== text.hiddenSize || layers[layers.length - 1] !== 1) {
    throw new Error(
      `${file}: 'mlp.layers' must start at the text hidden size ${text.hiddenSize} and end at 1`,
    );
  }
  const pre = (json.preprocess ?? {}) as Record<string, unknown>;
  const triple = (key: string, fallback: number[]): [number, number, number] => {
    const x = pre[key] ?? fallback;
    if (!Array.isArray(x) || x.length !== 3 || !x.every((y) => typeof y === "number")) {
      throw new Error(`${file}: 'preprocess.${key}' must be three numbers`);
    }
    return x as [number, number, number];
  };
  const scoreMean = json.score_mean ?? 0.16717362830052426;
  const scoreStd = json.score_std ?? 1.0333394966054072;
  if (typeof scoreMean !== "number" || typeof scoreStd !== "number" || !(scoreStd > 0)) {
    throw new Error(`${file}: 'score_mean' and 'score_std' must be numbers (std > 0)`);
  }
  return {
    vision,
    text,
    mlpLayers: layers as number[],
    scoreMean,
    scoreStd,
    textMaxLength: int(json, "", "text_max_length", 35),
    imageMean: triple("mean", [0.48145466, 0.4578275, 0.40821073]),
    imageStd: triple("std", [0.26862954, 0.26130258, 0.27577711]),
  };
}

/**
 * Every key of ImageReward's state dict with its PyTorch shape, in the reference layout (the
 * contrastive projections `blip.vision_proj` / `blip.text_proj` are in the checkpoint but
 * unused by the score; their output width is not fixed, so only their input width is given,
 * as −1 for the output).
 *
 * @example
 * ```ts
 * import { imageRewardLayout, type ImageRewardConfig } from "@texforce/core/adapters";
 * declare const config: ImageRewardConfig;
 * console.log(imageRewardLayout(config).get("blip.visual_encoder.cls_token")); // [1, 1, 1024]
 * ```
 */
export function imageRewardLayout(c: ImageRewardConfig): Map<string, number[]> {
  const m = blipVitLayout(c.vision, "blip.visual_encoder.");
  for (const [k, s] of bertCrossLayout(c.text, "blip.text_encoder.")) m.set(k, s);
  m.set("blip.vision_proj.weight", [-1, c.vision.width]);
  m.set("blip.vision_proj.bias", [-1]);
  m.set("blip.text_proj.weight", [-1, c.text.hiddenSize]);
  m.set("blip.text_proj.bias", [-1]);
  MLP_LAYERS.forEach((i, j) => {
    m.set(`mlp.layers.${i}.weight`, [c.mlpLayers[j + 1], c.mlpLayers[j]]);
    m.set(`mlp.layers.${i}.bias`, [c.mlpLayers[j + 1]]);
  });
  return m;
}

/**
 * Check every key and shape of `source` against {@linkcode imageRewardLayout}; also that the
 * weights hold no block or layer beyond the config. Throws one error listing every problem,
 * each naming the key, its shape and the expected one.
 *
 * @example
 * ```ts
 * import { openWeights } from "@texforce/core";
 * import { checkImageRewardWeights, type ImageRewardConfig } from "@texforce/core/adapters";
 * declare const config: ImageRewardConfig;
 * checkImageRewardWeights(await openWeights("ImageReward/model.safetensors"), config);
 * ```
 */
export function checkImageRewardWeights(source: WeightSource, c: ImageRewardConfig): void {
  const problems: string[] = [];
  for (const [key, want] of imageRewardLayout(c)) {
    if (!source.has(key)) {
      problems.push(`missing '${key}' (expected shape [${want.join(", ")}])`);
      continue;
    }
    const got = source.info(key).shape;
    if (got.length !== want.length || got.some((d, i) => want[i] !== -1 && d !== want[i])) {
      problems.push(
        `'${key}' has shape [${got.join(", ")}], expected [${
          want.map((d) => d === -1 ? "*" : d).join(", ")
        }]`,
      );
    }
  }
  const extraBlock = `blip.visual_encoder.blocks.${c.vision.depth}.norm1.weight`;
  if (source.has(extraBlock)) {
    problems.push(`holds '${extraBlock}' but the config says depth ${c.vision.depth}`);
  }
  const extraLayer =
    `blip.text_encoder.encoder.layer.${c.text.numHiddenLayers}.output.LayerNorm.weight`;
  if (source.has(extraLayer)) {
    problems.push(
      `holds '${extraLayer}' but med_config.json says num_hidden_layers ${c.text.numHiddenLayers}`,
    );
  }
  if (source.has("blip.text_encoder.embeddings.token_type_embeddings.weight")) {
    problems.push(
      "holds 'blip.text_encoder.embeddings.token_type_embeddings.weight': BLIP's encoder has " +
        "no token-type embeddings (is this a plain BERT checkpoint?)",
    );
  }
  if (problems.length) {
    throw new Error(
      `${source.path}: not an ImageReward state dict of these sizes:\n  ${problems.join("\n  ")}`,
    );
  }
}

/**
 * ImageReward's `_transform(size)` on an 8-bit HWC image: Pillow bicubic resize of the shorter
 * side to `size` (the longer `int(size · long / short)`), centre crop with
 * `top = int(round((h − size) / 2))`, /255, mean/std. Returns CHW floats [3, size, size].
 *
 * @example
 * ```ts
 * import { imageRewardPreprocess } from "@texforce/core/adapters";
 * const chw = imageRewardPreprocess(new Uint8Array(40 * 48 * 3), 40, 48, 224);
 * ```
 */
export function imageRewardPreprocess(
  hwc: Uint8Array,
  h: number,
  w: number,
  size: number,
  mean: readonly number[] = [0.48145466, 0.4578275, 0.40821073],
  std: readonly number[] = [0.26862954, 0.26130258, 0.27577711],
): Float32Array {
  const [rh, rw] = h <= w ? [size, Math.trunc(size * w / h)] : [Math.trunc(size * h / w), size];
  const img = rh === h && rw === w ? hwc : pilResize(hwc, h, w, 3, rh, rw, 3);
  const top = Math.trunc(roundHalfEven((rh - size) / 2));
  const left = Math.trunc(roundHalfEven((rw - size) / 2));
  const out = new Float32Array(3 * size * size);
  for (let k = 0; k < 3; k++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const v = img[((y + top) * rw + x + left) * 3 + k] / 255;
        out[(k * size + y) * size + x] = (v - mean[k]) / std[k];
      }
    }
  }
  return out;
}

/**
 * The whole model.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { ImageRewardModel } from "@texforce/core/adapters";
 * const model = await ImageRewardModel.load("models/ImageReward");
 * const s = model.config.vision.imageSize;
 * const image = model.vision.forward(tf.zeros([1, s, s, 3]) as tf.Tensor4D);
 * ```
 */
export class ImageRewardModel {
  /** The sizes. */
  readonly config: ImageRewardConfig;
  /** `blip.visual_encoder`. */
  readonly vision: BlipVit;
  /** `blip.text_encoder`. */
  readonly text: BertCrossEncoder;
  #head: LinearWeights[];

  private constructor(
    config: ImageRewardConfig,
    vision: BlipVit,
    text: BertCrossEncoder,
    head: LinearWeights[],
  ) {
    this.config = config;
    this.vision = vision;
    this.text = text;
    this.#head = head;
  }

  /**
   * Load a folder holding `model.safetensors`, `med_config.json` and optionally `config.json`;
   * or give `weights` / `medConfig` / `config` paths explicitly.
   *
   * @example
   * ```ts
   * import { ImageRewardModel } from "@texforce/core/adapters";
   * const model = await ImageRewardModel.load("models/ImageReward");
   * ```
   */
  static async load(
    dir: string,
    paths: { weights?: string; medConfig?: string; config?: string } = {},
  ): Promise<ImageRewardModel> {
    const weights = paths.weights ?? dir;
    const pickle = /\.(pt|pth|bin)$/.test(weights)
      ? weights
      : (await pathExists(join(dir, "ImageReward.pt")) &&
          !(await pathExists(join(dir, "model.safetensors"))))
      ? join(dir, "ImageReward.pt")
      : undefined;
    if (pickle) {
      throw new Error(
        `${pickle}: a PyTorch pickle, which texforce never loads; convert it once: ` +
          `python -c "import torch; from safetensors.torch import save_file; ` +
          `sd = torch.load('${pickle}', map_location='cpu', weights_only=True); ` +
          `save_file({k: v.contiguous() for k, v in sd.items()}, '${
            join(dirname(pickle), "model.safetensors")
          }')"`,
      );
    }
    const medPath = paths.medConfig ?? join(dir, "med_config.json");
    const cfgPath = paths.config ?? join(dir, "config.json");
    const cfgJson = (paths.config || await pathExists(cfgPath)) ? await readJsonFile(cfgPath) : {};
    const config = parseImageRewardConfig(cfgJson, cfgPath, await readJsonFile(medPath), medPath);
    const source = await openWeights(weights, { names: ["model", "ImageReward"] });
    try {
      return await ImageRewardModel.fromSource(source, config);
    } finally {
      source.close();
    }
  }

  /**
   * Build from any weight source (checked with {@linkcode checkImageRewardWeights} first).
   *
   * @example
   * ```ts
   * import { openWeights } from "@texforce/core";
   * import { ImageRewardModel, type ImageRewardConfig } from "@texforce/core/adapters";
   * declare const config: ImageRewardConfig;
   * const src = await openWeights("ImageReward/model.safetensors");
   * const model = await ImageRewardModel.fromSource(src, config);
   * src.close();
   * ```
   */
  static async fromSource(
    source: WeightSource,
    config: ImageRewardConfig,
  ): Promise<ImageRewardModel> {
    checkImageRewardWeights(source, config);
    const vision = await BlipVit.load(
      new WeightReader(source, "blip.visual_encoder."),
      config.vision,
    );
    let text: BertCrossEncoder | undefined;
    const head: LinearWeights[] = [];
    try {
      text = await BertCrossEncoder.load(
        new WeightReader(source, "blip.text_encoder."),
        config.text,
      );
      const r = new WeightReader(source, "mlp.layers.");
      for (let j = 0; j < MLP_LAYERS.length; j++) {
        head.push(
          await loadLinear(r, `${MLP_LAYERS[j]}`, config.mlpLayers[j], config.mlpLayers[j + 1]),
        );
      }
      return new ImageRewardModel(config, vision, text, head);
    } catch (e) {
      vision.dispose();
      text?.dispose();
      for (const l of head) disposeLinear(l);
      throw e;
    }
  }

  /**
   * The head on `[CLS]` features [B, D] → raw outputs [B] (before mean/std).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { ImageRewardModel } from "@texforce/core/adapters";
   * declare const model: ImageRewardModel;
   * const raw = model.head(tf.zeros([1, 768]) as tf.Tensor2D);
   * ```
   */
  head(cls: Tensor2D): Tensor1D {
    return tf.tidy(() => {
      let x: tf.Tensor = cls;
      for (const l of this.#head) x = linear(x, l);
      return x.reshape([-1]) as tf.Tensor1D;
    });
  }

  /**
   * Scores of (image, prompt) pairs: pixels [B, S, S, 3] (NHWC, normalised), token ids and
   * masks [B, L]. Returns (head − mean) / std, [B].
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { ImageRewardModel } from "@texforce/core/adapters";
   * declare const model: ImageRewardModel;
   * const s = model.config.vision.imageSize;
   * const ids = tf.tensor2d([[101, 102]], undefined, "int32");
   * const score = model.score(tf.zeros([1, s, s, 3]) as tf.Tensor4D, ids, tf.ones([1, 2]) as tf.Tensor2D);
   * ```
   */
  score(pixels: Tensor4D, ids: Tensor2D, mask: Tensor2D): Tensor1D {
    return tf.tidy(() => {
      const image = this.vision.forward(pixels);
      const h = this.text.forward(ids, mask, image as Tensor3D);
      const [b, , d] = h.shape;
      const raw = this.head(h.slice([0, 0, 0], [b, 1, d]).reshape([b, d]) as Tensor2D);
      return tf.div(tf.sub(raw, this.config.scoreMean), this.config.scoreStd) as tf.Tensor1D;
    });
  }

  /** Release all weights. */
  dispose(): void {
    this.vision.dispose();
    this.text.dispose();
    for (const l of this.#head) disposeLinear(l);
    this.#head = [];
  }
}
