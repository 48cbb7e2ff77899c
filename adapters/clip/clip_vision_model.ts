/**
 * The CLIP image tower (transformers' `CLIPVisionModel`) and a whole `CLIPModel` (both towers,
 * their projections and the logit scale), for rewards that score images: patch embedding,
 * class and position embeddings, `pre_layrnorm`, pre-LayerNorm encoder layers, and
 * `post_layernorm` on the class token as the pooled output.
 *
 * Inference only: the weights are constants and nothing here needs gradients.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import type { WeightSource } from "../../core/io/safetensors.ts";
import { openWeights } from "../../core/io/weights.ts";
import { readJsonFile } from "../../core/io/model_folder.ts";
import { multiHeadAttention } from "../nn/attention.ts";
import { layerNorm, type LayerNormWeights } from "../nn/layer_norm.ts";
import { disposeLinear, linear, type LinearWeights, loadLinear } from "../nn/linear.ts";
import { WeightReader } from "../nn/weight_reader.ts";
import {
  type ClipActivation,
  type ClipTextConfig,
  ClipTextModel,
  parseClipTextConfig,
} from "./clip_text_model.ts";
import type { Tensor, Tensor2D, Tensor3D, Tensor4D } from "../../core/tensor_types.ts";
import {
  clipActivate,
  clipConfigFields,
  type ClipLayer,
  clipLoaders,
  loadClipLayers,
} from "./_clip_tower.ts";

/** The fields of a `CLIPVisionConfig` the model uses. */
export interface ClipVisionConfig {
  /** Width D (1024 in ViT-L/14). */
  hiddenSize: number;
  /** MLP width (4096 in ViT-L/14). */
  intermediateSize: number;
  /** Number of encoder layers (24 in ViT-L/14). */
  numHiddenLayers: number;
  /** Attention heads (16 in ViT-L/14). */
  numAttentionHeads: number;
  /** Input side in pixels (224). */
  imageSize: number;
  /** Patch side in pixels (14). */
  patchSize: number;
  /** Input channels (3). */
  numChannels: number;
  /** MLP activation. */
  hiddenAct: ClipActivation;
  /** LayerNorm epsilon. */
  layerNormEps: number;
}

/** Output of {@linkcode ClipVisionModel.forward}. */
export interface ClipVisionOutput {
  /** [B, 1 + P, D]: the last encoder layer's output (no final LayerNorm, as transformers). */
  lastHiddenState: Tensor3D;
  /** [B, D]: `post_layernorm` of the class token. */
  pooledOutput: Tensor2D;
}

/**
 * Read a `CLIPVisionConfig` from the JSON of `config.json` (a `CLIPVisionModel`'s, or a whole
 * `CLIPModel`'s with `vision_config`), with transformers' defaults for absent fields.
 *
 * @example
 * ```ts
 * import { parseClipVisionConfig } from "@texforce/core/adapters";
 * const c = parseClipVisionConfig({ vision_config: { patch_size: 14 } }, "config.json");
 * console.log(c.imageSize / c.patchSize); // 16
 * ```
 */
export function parseClipVisionConfig(
  json: Record<string, unknown>,
  file: string,
): ClipVisionConfig {
  const fields = clipConfigFields(json, "vision_config", file);
  const int = fields.int;
  const act = fields.activation();
  const eps = fields.layerNormEps();
  const config: ClipVisionConfig = {
    hiddenSize: int("hidden_size", 768),
    intermediateSize: int("intermediate_size", 3072),
    numHiddenLayers: int("num_hidden_layers", 12),
    numAttentionHeads: int("num_attention_heads", 12),
    imageSize: int("image_size", 224),
    patchSize: int("patch_size", 32),
    numChannels: int("num_channels", 3),
    hiddenAct: act,
    layerNormEps: eps,
  };
  if (config.hiddenSize % config.numAttentionHeads !== 0) {
    throw new Error(
      `${file}: hidden_size ${config.hiddenSize} is not divisible by num_attention_heads ` +
        `${config.numAttentionHeads}`,
    );
  }
  if (config.imageSize % config.patchSize !== 0) {
    throw new Error(
      `${file}: image_size ${config.imageSize} is not a multiple of patch_size ` +
        `${config.patchSize}`,
    );
  }
  return config;
}

/**
 * Detect the key layout of CLIP vision weights: `vision_model.` (a `CLIPModel`, and
 * `CLIPVisionModel` checkpoints) or no prefix.
 *
 * @example
 * ```ts
 * import { openWeights } from "@texforce/core";
 * import { clipVisionKeyPrefix } from "@texforce/core/adapters";
 * const prefix = clipVisionKeyPrefix(await openWeights("clip-vit-large-patch14"));
 * ```
 */
export function clipVisionKeyPrefix(source: WeightSource): "" | "vision_model." {
  if (source.has("vision_model.embeddings.class_embedding")) return "vision_model.";
  if (source.has("embeddings.class_embedding")) return "";
  const sample = source.keys().slice(0, 3).map((k) => `'${k}'`).join(", ");
  throw new Error(
    `${source.path}: not CLIP vision weights: no 'vision_model.embeddings.class_embedding' or ` +
      `'embeddings.class_embedding' (keys start with ${sample || "nothing"})`,
  );
}

/**
 * transformers' `CLIPVisionModel` in tfjs. Pixels are NHWC (tfjs' layout), already resized
 * and normalised (see {@linkcode ClipImageProcessor}).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { ClipVisionModel } from "@texforce/core/adapters";
 * const model = await ClipVisionModel.load("clip-vit-large-patch14");
 * const { pooledOutput } = model.forward(tf.zeros([1, 224, 224, 3]) as tf.Tensor4D);
 * ```
 */
export class ClipVisionModel {
  /** The configuration. */
  readonly config: ClipVisionConfig;
  /** Where the weights came from. */
  readonly source: string;
  #patch: Tensor4D;
  #classEmbedding: Tensor;
  #positionEmbedding: Tensor2D;
  #preNorm: LayerNormWeights;
  #postNorm: LayerNormWeights;
  #layers: ClipLayer[];

  private constructor(
    config: ClipVisionConfig,
    source: string,
    parts: {
      patch: Tensor4D;
      classEmbedding: Tensor;
      positionEmbedding: Tensor2D;
      preNorm: LayerNormWeights;
      postNorm: LayerNormWeights;
      layers: ClipLayer[];
    },
  ) {
    this.config = config;
    this.source = source;
    this.#patch = parts.patch;
    this.#classEmbedding = parts.classEmbedding;
    this.#positionEmbedding = parts.positionEmbedding;
    this.#preNorm = parts.preNorm;
    this.#postNorm = parts.postNorm;
    this.#layers = parts.layers;
  }

  /**
   * Load a folder holding `config.json` and `model.safetensors` (a `CLIPVisionModel`, or a
   * whole `CLIPModel` whose vision tower is taken).
   *
   * @example
   * ```ts
   * import { ClipVisionModel } from "@texforce/core/adapters";
   * const model = await ClipVisionModel.load("clip-vit-large-patch14");
   * ```
   */
  static async load(dir: string): Promise<ClipVisionModel> {
    const configPath = join(dir, "config.json");
    const config = parseClipVisionConfig(await readJsonFile(configPath), configPath);
    const source = await openWeights(dir, { names: ["model"] });
    try {
      return await ClipVisionModel.fromSource(source, config);
    } finally {
      source.close();
    }
  }

  /**
   * Build from any weight source and a config (the source stays open; close it yourself).
   *
   * @example
   * ```ts
   * import { openWeights } from "@texforce/core";
   * import { ClipVisionModel, parseClipVisionConfig } from "@texforce/core/adapters";
   * const src = await openWeights("clip/model.safetensors");
   * const model = await ClipVisionModel.fromSource(src, parseClipVisionConfig({}, "defaults"));
   * src.close();
   * ```
   */
  static async fromSource(
    source: WeightSource,
    config: ClipVisionConfig,
  ): Promise<ClipVisionModel> {
    const prefix = clipVisionKeyPrefix(source);
    const r = new WeightReader(source, prefix);
    const { hiddenSize: d, intermediateSize: m, layerNormEps: eps, patchSize: p } = config;
    const positions = (config.imageSize / p) ** 2 + 1;
    const created: Tensor[] = [];
    const keep = <T extends Tensor>(t: T): T => {
      created.push(t);
      return t;
    };
    try {
      const conv = await r.tensor("embeddings.patch_embedding.weight", [
        d,
        config.numChannels,
        p,
        p,
      ]);
      // PyTorch OIHW → tfjs HWIO.
      const patch = keep(tf.tidy(() => conv.transpose([2, 3, 1, 0]) as Tensor4D));
      conv.dispose();
      const classEmbedding = keep(await r.tensor("embeddings.class_embedding", [d]));
      const positionEmbedding = keep(
        await r.tensor("embeddings.position_embedding.weight", [positions, d]),
      ) as Tensor2D;
      const { ln } = clipLoaders(r, d, eps, keep);
      const preNorm = await ln("pre_layrnorm");
      const layers = await loadClipLayers(
        r,
        source,
        prefix,
        config.numHiddenLayers,
        d,
        m,
        eps,
        keep,
      );
      const postNorm = await ln("post_layernorm");
      return new ClipVisionModel(config, source.path, {
        patch,
        classEmbedding,
        positionEmbedding,
        preNorm,
        postNorm,
        layers,
      });
    } catch (e) {
      for (const t of created) t.dispose();
      throw e;
    }
  }

  /** Width D. */
  get hiddenSize(): number {
    return this.config.hiddenSize;
  }

  /**
   * Run the tower on normalised pixels [B, S, S, C] (NHWC, S = `imageSize`).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { ClipVisionModel } from "@texforce/core/adapters";
   * declare const model: ClipVisionModel;
   * const s = model.config.imageSize;
   * const { lastHiddenState, pooledOutput } = model.forward(tf.zeros([2, s, s, 3]) as tf.Tensor4D);
   * ```
   */
  forward(pixels: Tensor4D): ClipVisionOutput {
    const cfg = this.config;
    const [b, h, w, c] = pixels.shape;
    if (pixels.rank !== 4 || h !== cfg.imageSize || w !== cfg.imageSize || c !== cfg.numChannels) {
      // transformers would interpolate position embeddings only when asked; the processor
      // always crops to imageSize, so a mismatch is a caller error.
      throw new Error(
        `ClipVisionModel: expected pixels [B, ${cfg.imageSize}, ${cfg.imageSize}, ` +
          `${cfg.numChannels}] (NHWC), got [${pixels.shape.join(", ")}]`,
      );
    }
    const d = cfg.hiddenSize;
    const g = cfg.imageSize / cfg.patchSize;
    const l = g * g + 1;
    return tf.tidy(() => {
      let x = this.embeddings(pixels).reshape([b * l, d]);
      for (const layer of this.#layers) {
        const y = layerNorm(x, layer.ln1);
        const q = linear(y, layer.q).reshape([b, l, d]);
        const k = linear(y, layer.k).reshape([b, l, d]);
        const v = linear(y, layer.v).reshape([b, l, d]);
        const att = multiHeadAttention(q, k, v, cfg.numAttentionHeads).reshape([b * l, d]);
        x = tf.add(x, linear(att, layer.out));
        const z = layerNorm(x, layer.ln2);
        x = tf.add(x, linear(clipActivate(linear(z, layer.fc1), cfg.hiddenAct), layer.fc2));
      }
      const last = x.reshape([b, l, d]) as Tensor3D;
      const cls0 = last.slice([0, 0, 0], [b, 1, d]).reshape([b, d]);
      const pooled = layerNorm(cls0, this.#postNorm) as Tensor2D;
      return { lastHiddenState: last, pooledOutput: pooled } as unknown as tf.TensorContainer;
    }) as unknown as ClipVisionOutput;
  }

  /**
   * The tokens the encoder layers receive ([B, 1 + P, D]): patch embedding, class token,
   * position embeddings, then `pre_layrnorm` (open_clip's `ln_pre`). Pixels as in `forward`.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { ClipVisionModel } from "@texforce/core/adapters";
   * declare const model: ClipVisionModel;
   * const s = model.config.imageSize;
   * const tokens = model.embeddings(tf.zeros([1, s, s, 3]) as tf.Tensor4D);
   * ```
   */
  embeddings(pixels: Tensor4D): Tensor3D {
    const cfg = this.config;
    const b = pixels.shape[0];
    const d = cfg.hiddenSize;
    const g = cfg.imageSize / cfg.patchSize;
    return tf.tidy(() => {
      // Row-major patches match torch's flatten(2).transpose(1, 2) of the NCHW conv output.
      const patches = tf.conv2d(pixels, this.#patch, cfg.patchSize, "valid").reshape([b, g * g, d]);
      const cls = tf.broadcastTo(this.#classEmbedding.reshape([1, 1, d]), [b, 1, d]);
      const x = tf.add(tf.concat([cls, patches], 1), this.#positionEmbedding);
      return layerNorm(x, this.#preNorm) as Tensor3D;
    });
  }

  /** Release all weights. */
  dispose(): void {
    this.#patch.dispose();
    this.#classEmbedding.dispose();
    this.#positionEmbedding.dispose();
    for (const n of [this.#preNorm, this.#postNorm]) {
      n.weight.dispose();
      n.bias.dispose();
    }
    for (const l of this.#layers) {
      for (const n of [l.ln1, l.ln2]) {
        n.weight.dispose();
        n.bias.dispose();
      }
      for (const w of [l.q, l.k, l.v, l.out, l.fc1, l.fc2]) disposeLinear(w);
    }
    this.#layers = [];
  }
}

/** Output of {@linkcode ClipModel.forward}. */
export interface ClipModelOutput {
  /** [B_img, P]: L2-normalised projected image features. */
  imageEmbeds: Tensor2D;
  /** [B_txt, P]: L2-normalised projected text features. */
  textEmbeds: Tensor2D;
  /** [B_img, B_txt]: exp(logit_scale) · image · textᵀ. */
  logitsPerImage: Tensor2D;
}

/**
 * L2-normalise the rows of x (as transformers: x / ‖x‖, no epsilon).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { l2Normalize } from "@texforce/core/adapters";
 * const y = l2Normalize(tf.tensor2d([[3, 4]])); // [[0.6, 0.8]]
 * ```
 */
export function l2Normalize(x: Tensor2D): Tensor2D {
  return tf.tidy(() => tf.div(x, tf.norm(x, 2, -1, true)) as Tensor2D);
}

/**
 * transformers' `CLIPModel`: both towers, `visual_projection`, `text_projection` (no biases)
 * and `logit_scale`, read from one folder (`config.json` with `text_config`, `vision_config`
 * and `projection_dim`; `model.safetensors` with `vision_model.*`, `text_model.*`,
 * `visual_projection.weight`, `text_projection.weight`, `logit_scale`).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { ClipModel } from "@texforce/core/adapters";
 * const clip = await ClipModel.load("clip-vit-large-patch14");
 * const features = clip.imageFeatures(tf.zeros([1, 224, 224, 3]) as tf.Tensor4D);
 * ```
 */
export class ClipModel {
  /** The image tower. */
  readonly vision: ClipVisionModel;
  /** The text tower. */
  readonly text: ClipTextModel;
  /** Width P of the joint embedding. */
  readonly projectionDim: number;
  /** exp(logit_scale), the temperature CLIP multiplies cosine similarities by (100 for OpenAI's). */
  readonly logitScale: number;
  #visualProjection: LinearWeights;
  #textProjection: LinearWeights;

  private constructor(
    vision: ClipVisionModel,
    text: ClipTextModel,
    projectionDim: number,
    logitScale: number,
    visualProjection: LinearWeights,
    textProjection: LinearWeights,
  ) {
    this.vision = vision;
    this.text = text;
    this.projectionDim = projectionDim;
    this.logitScale = logitScale;
    this.#visualProjection = visualProjection;
    this.#textProjection = textProjection;
  }

  /**
   * Load a `CLIPModel` folder (`config.json` plus `model.safetensors`, fp16 variant or shards).
   *
   * @example
   * ```ts
   * import { ClipModel } from "@texforce/core/adapters";
   * const clip = await ClipModel.load("clip-vit-large-patch14");
   * console.log(clip.projectionDim); // 768
   * ```
   */
  static async load(dir: string): Promise<ClipModel> {
    const configPath = join(dir, "config.json");
    const json = await readJsonFile(configPath);
    if (!json.vision_config || !json.text_config) {
      throw new Error(
        `${configPath}: not a CLIPModel config (needs 'vision_config' and 'text_config')`,
      );
    }
    const visionConfig = parseClipVisionConfig(json, configPath);
    const textConfig: ClipTextConfig = parseClipTextConfig(json, configPath);
    const projectionDim = json.projection_dim ?? 512;
    if (!Number.isInteger(projectionDim) || (projectionDim as number) < 1) {
      throw new Error(`${configPath}: 'projection_dim' must be a positive integer`);
    }
    const source = await openWeights(dir, { names: ["model"] });
    try {
      return await ClipModel.fromSource(source, visionConfig, textConfig, projectionDim as number);
    } finally {
      source.close();
    }
  }

  /**
   * Build from any weight source in `CLIPModel` layout (the source stays open; close it
   * yourself). open_clip checkpoints reach here through a key-mapping source.
   *
   * @example
   * ```ts
   * import { openWeights } from "@texforce/core";
   * import {
   *   ClipModel,
   *   parseClipTextConfig,
   *   parseClipVisionConfig,
   * } from "@texforce/core/adapters";
   * const src = await openWeights("clip/model.safetensors");
   * const clip = await ClipModel.fromSource(
   *   src,
   *   parseClipVisionConfig({}, "defaults"),
   *   parseClipTextConfig({}, "defaults"),
   *   512,
   * );
   * src.close();
   * ```
   */
  static async fromSource(
    source: WeightSource,
    visionConfig: ClipVisionConfig,
    textConfig: ClipTextConfig,
    projectionDim: number,
  ): Promise<ClipModel> {
    const p = projectionDim;
    const made: { dispose(): void }[] = [];
    try {
      const vision = await ClipVisionModel.fromSource(source, visionConfig);
      made.push(vision);
      const text = await ClipTextModel.fromSource(source, textConfig);
      made.push(text);
      const r = new WeightReader(source);
      const vp = await loadLinear(r, "visual_projection", visionConfig.hiddenSize, p, false);
      made.push({ dispose: () => disposeLinear(vp) });
      const tp = await loadLinear(r, "text_projection", textConfig.hiddenSize, p, false);
      made.push({ dispose: () => disposeLinear(tp) });
      const scaleT = await r.tensor("logit_scale");
      const scale = Math.exp((await scaleT.data())[0]);
      scaleT.dispose();
      return new ClipModel(vision, text, p, scale, vp, tp);
    } catch (e) {
      for (const m of made) m.dispose();
      throw e;
    }
  }

  /**
   * Projected image features before normalisation ([B, P]; what aesthetic heads normalise).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { ClipModel } from "@texforce/core/adapters";
   * declare const clip: ClipModel;
   * const f = clip.imageFeatures(tf.zeros([1, 224, 224, 3]) as tf.Tensor4D);
   * ```
   */
  imageFeatures(pixels: Tensor4D): Tensor2D {
    return tf.tidy(() => {
      const { lastHiddenState, pooledOutput } = this.vision.forward(pixels);
      lastHiddenState.dispose();
      return linear(pooledOutput, this.#visualProjection) as Tensor2D;
    });
  }

  /**
   * Projected text features before normalisation ([B, P]) of token ids [B, L].
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { ClipModel } from "@texforce/core/adapters";
   * declare const clip: ClipModel;
   * const f = clip.textFeatures(tf.tensor2d([[49406, 320, 49407]], undefined, "int32"));
   * ```
   */
  textFeatures(ids: Tensor2D): Tensor2D {
    return tf.tidy(() => {
      const { lastHiddenState, pooledOutput } = this.text.forward(ids, { pooled: true });
      lastHiddenState.dispose();
      return linear(pooledOutput!, this.#textProjection) as Tensor2D;
    });
  }

  /**
   * Normalised embeddings of both and `logits_per_image`, as `CLIPModel.forward`.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { ClipModel } from "@texforce/core/adapters";
   * declare const clip: ClipModel;
   * const ids = tf.tensor2d([[49406, 320, 49407]], undefined, "int32");
   * const { logitsPerImage } = clip.forward(tf.zeros([1, 224, 224, 3]) as tf.Tensor4D, ids);
   * ```
   */
  forward(pixels: Tensor4D, ids: Tensor2D): ClipModelOutput {
    return tf.tidy(() => {
      const imageEmbeds = l2Normalize(this.imageFeatures(pixels));
      const textEmbeds = l2Normalize(this.textFeatures(ids));
      const logitsPerImage = tf.mul(
        tf.matMul(imageEmbeds, textEmbeds, false, true),
        this.logitScale,
      ) as Tensor2D;
      return { imageEmbeds, textEmbeds, logitsPerImage } as unknown as tf.TensorContainer;
    }) as unknown as ClipModelOutput;
  }

  /** Release all weights. */
  dispose(): void {
    this.vision.dispose();
    this.text.dispose();
    disposeLinear(this.#visualProjection);
    disposeLinear(this.#textProjection);
  }
}
