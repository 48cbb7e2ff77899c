/**
 * The CLIP text transformer (transformers' `CLIPTextModel`) that conditions Stable Diffusion:
 * token and position embeddings, pre-LayerNorm encoder layers with a causal mask, a final
 * LayerNorm, and the pooled state at the first end-of-text token. Linear layers accept a
 * {@linkcode LinearDelta} (LoRA), and the forward pass is differentiable with respect to its
 * variables.
 *
 * Weights are read with or without the `text_model.` prefix: transformers 5 saves without it,
 * every SD 1.x/2.x checkpoint on disk has it.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import type { WeightSource } from "../../core/io/safetensors.ts";
import { openWeights } from "../../core/io/weights.ts";
import { readJsonFile } from "../../core/io/model_folder.ts";
import { multiHeadAttention } from "../nn/attention.ts";
import { FLASH_MAX_HEAD_DIM, flashAttention } from "../webgpu/flash_attention.ts";
import { useWebgpuKernel } from "../webgpu/kernel_options.ts";
import { layerNorm, type LayerNormWeights } from "../nn/layer_norm.ts";
import { disposeLinear, type LinearWeights } from "../nn/linear.ts";
import { WeightReader } from "../nn/weight_reader.ts";
import type { LinearDelta, LinearShape } from "../nn/linear_delta.ts";
import { type ConstLinear, constLinear } from "../nn/_fast_matmul.ts";
import type { Tensor, Tensor1D, Tensor2D, Tensor3D } from "../../core/tensor_types.ts";
import {
  clipActivate,
  type ClipActivation,
  clipConfigFields,
  type ClipLayer,
  clipLoaders,
  loadClipLayers,
} from "./_clip_tower.ts";

export type { ClipActivation } from "./_clip_tower.ts";

/** The fields of a `CLIPTextConfig` the model uses. */
export interface ClipTextConfig {
  /** Vocabulary size (49408). */
  vocabSize: number;
  /** Width D (768 in SD 1.x, 1024 in SD 2.x). */
  hiddenSize: number;
  /** MLP width (3072). */
  intermediateSize: number;
  /** Number of encoder layers (12). */
  numHiddenLayers: number;
  /** Attention heads (12). */
  numAttentionHeads: number;
  /** Positions (77). */
  maxPositionEmbeddings: number;
  /** MLP activation (`quick_gelu` in SD 1.x, `gelu` in SD 2.x). */
  hiddenAct: ClipActivation;
  /** LayerNorm epsilon. */
  layerNormEps: number;
  /** End-of-text id; 2 means the legacy rule (pool at the argmax of the ids). */
  eosTokenId: number;
}

/** Output of {@linkcode ClipTextModel.forward}. */
export interface ClipTextOutput {
  /** [B, L, D]: the final LayerNorm of the last layer run (see `clipSkip`). */
  lastHiddenState: Tensor3D;
  /** [B, D]: `lastHiddenState` at the first end-of-text token, when asked for. */
  pooledOutput?: Tensor2D;
}

/** Options of {@linkcode ClipTextModel.forward}. */
export interface ClipForwardOptions {
  /** Skip the last k layers, then apply the final LayerNorm (diffusers' `clip_skip`). */
  clipSkip?: number;
  /** LoRA (or any term) added to the linear layers. */
  lora?: LinearDelta | null;
  /** Also return the pooled output (reads the ids on the host). */
  pooled?: boolean;
}

/**
 * Read a `CLIPTextConfig` from the JSON of `config.json` (a `CLIPTextModel`'s, or a whole
 * `CLIPModel`'s with `text_config`), with transformers' defaults for absent fields.
 *
 * @example
 * ```ts
 * import { parseClipTextConfig } from "@texforce/core/adapters";
 * const c = parseClipTextConfig({ hidden_size: 768, num_hidden_layers: 12 }, "config.json");
 * console.log(c.numAttentionHeads);
 * ```
 */
export function parseClipTextConfig(json: Record<string, unknown>, file: string): ClipTextConfig {
  const fields = clipConfigFields(json, "text_config", file);
  const int = fields.int;
  const act = fields.activation();
  const eps = fields.layerNormEps();
  const config: ClipTextConfig = {
    vocabSize: int("vocab_size", 49408),
    hiddenSize: int("hidden_size", 512),
    intermediateSize: int("intermediate_size", 2048),
    numHiddenLayers: int("num_hidden_layers", 12),
    numAttentionHeads: int("num_attention_heads", 8),
    maxPositionEmbeddings: int("max_position_embeddings", 77),
    hiddenAct: act,
    layerNormEps: eps,
    eosTokenId: int("eos_token_id", 49407),
  };
  if (config.hiddenSize % config.numAttentionHeads !== 0) {
    throw new Error(
      `${file}: hidden_size ${config.hiddenSize} is not divisible by num_attention_heads ` +
        `${config.numAttentionHeads}`,
    );
  }
  return config;
}

/**
 * Detect the key layout of CLIP text weights: `text_model.` or no prefix.
 *
 * @example
 * ```ts
 * import { openWeights } from "@texforce/core";
 * import { clipTextKeyPrefix } from "@texforce/core/adapters";
 * const prefix = clipTextKeyPrefix(await openWeights("sd15/text_encoder")); // "text_model."
 * ```
 */
export function clipTextKeyPrefix(source: WeightSource): "" | "text_model." {
  if (source.has("text_model.embeddings.token_embedding.weight")) return "text_model.";
  if (source.has("embeddings.token_embedding.weight")) return "";
  const sample = source.keys().slice(0, 3).map((k) => `'${k}'`).join(", ");
  throw new Error(
    `${source.path}: not CLIP text encoder weights: no 'text_model.embeddings.token_embedding.` +
      `weight' or 'embeddings.token_embedding.weight' (keys start with ${sample || "nothing"})`,
  );
}

/**
 * transformers' `CLIPTextModel` in tfjs.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { ClipTextModel } from "@texforce/core/adapters";
 * const model = await ClipTextModel.load("stable-diffusion-v1-5/text_encoder");
 * const ids = tf.tensor2d([[49406, 320, 49407]], undefined, "int32");
 * const { lastHiddenState } = model.forward(ids);
 * ```
 */
export class ClipTextModel {
  /** The configuration. */
  readonly config: ClipTextConfig;
  /** Key prefix of the checkpoint (`text_model.` or empty). */
  readonly keyPrefix: "" | "text_model.";
  /** Where the weights came from. */
  readonly source: string;
  #tokenEmbedding: Tensor2D;
  #positionEmbedding: Tensor2D;
  #layers: ClipLayer[];
  #finalNorm: LayerNormWeights;
  #linears = new Map<string, LinearWeights>();
  #apply = new Map<string, ConstLinear>();

  private constructor(
    config: ClipTextConfig,
    keyPrefix: "" | "text_model.",
    source: string,
    parts: {
      tokenEmbedding: Tensor2D;
      positionEmbedding: Tensor2D;
      layers: ClipLayer[];
      finalNorm: LayerNormWeights;
    },
  ) {
    this.config = config;
    this.keyPrefix = keyPrefix;
    this.source = source;
    this.#tokenEmbedding = parts.tokenEmbedding;
    this.#positionEmbedding = parts.positionEmbedding;
    this.#layers = parts.layers;
    this.#finalNorm = parts.finalNorm;
    parts.layers.forEach((l, i) => {
      const p = `encoder.layers.${i}`;
      this.#linears.set(`${p}.self_attn.q_proj`, l.q);
      this.#linears.set(`${p}.self_attn.k_proj`, l.k);
      this.#linears.set(`${p}.self_attn.v_proj`, l.v);
      this.#linears.set(`${p}.self_attn.out_proj`, l.out);
      this.#linears.set(`${p}.mlp.fc1`, l.fc1);
      this.#linears.set(`${p}.mlp.fc2`, l.fc2);
    });
    for (const [k, w] of this.#linears) {
      this.#apply.set(k, constLinear(w.weight, w.bias, { cacheWeights: true }));
    }
  }

  /**
   * Load a `text_encoder/` folder: `config.json` plus `model.safetensors` (or its fp16
   * variant or shards).
   *
   * @example
   * ```ts
   * import { ClipTextModel } from "@texforce/core/adapters";
   * const model = await ClipTextModel.load("stable-diffusion-v1-5/text_encoder");
   * ```
   */
  static async load(dir: string, options: { variant?: string } = {}): Promise<ClipTextModel> {
    const configPath = join(dir, "config.json");
    const config = parseClipTextConfig(await readJsonFile(configPath), configPath);
    const source = await openWeights(dir, { variant: options.variant, names: ["model"] });
    try {
      return await ClipTextModel.fromSource(source, config);
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
   * import { ClipTextModel, parseClipTextConfig } from "@texforce/core/adapters";
   * const src = await openWeights("clip/model.safetensors");
   * const model = await ClipTextModel.fromSource(src, parseClipTextConfig({}, "defaults"));
   * src.close();
   * ```
   */
  static async fromSource(source: WeightSource, config: ClipTextConfig): Promise<ClipTextModel> {
    const prefix = clipTextKeyPrefix(source);
    const r = new WeightReader(source, prefix);
    const { hiddenSize: d, intermediateSize: m, layerNormEps: eps } = config;
    const created: Tensor[] = [];
    const keep = <T extends Tensor>(t: T): T => {
      created.push(t);
      return t;
    };
    try {
      const tokenEmbedding = keep(
        await r.tensor("embeddings.token_embedding.weight", [config.vocabSize, d]),
      ) as Tensor2D;
      const positionEmbedding = keep(
        await r.tensor("embeddings.position_embedding.weight", [config.maxPositionEmbeddings, d]),
      ) as Tensor2D;
      const { ln } = clipLoaders(r, d, eps, keep);
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
      const finalNorm = await ln("final_layer_norm");
      return new ClipTextModel(config, prefix, source.path, {
        tokenEmbedding,
        positionEmbedding,
        layers,
        finalNorm,
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
   * Input and output widths of every linear layer, by module path
   * (`encoder.layers.0.self_attn.q_proj`, …): what LoRA adapts.
   *
   * @example
   * ```ts
   * import type { ClipTextModel } from "@texforce/core/adapters";
   * declare const model: ClipTextModel;
   * console.log(model.linearShapes().get("encoder.layers.0.mlp.fc1"));
   * ```
   */
  linearShapes(): Map<string, LinearShape> {
    const out = new Map<string, LinearShape>();
    for (const [k, w] of this.#linears) {
      out.set(k, { inFeatures: w.weight.shape[0], outFeatures: w.weight.shape[1] });
    }
    return out;
  }

  /** Checkpoint key of a linear module's weight (`text_model.encoder.layers.0…weight`). */
  weightKey(module: string): string {
    return `${this.keyPrefix}${module}.weight`;
  }

  #linear(module: string, x: Tensor2D, lora: LinearDelta | null | undefined): Tensor2D {
    const y = this.#apply.get(module)!(x);
    const d = lora?.delta(module, x);
    return d ? tf.add(y, d) : y;
  }

  /**
   * Run the model on token ids [B, L] (int32, L ≤ max positions).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { ClipTextModel } from "@texforce/core/adapters";
   * declare const model: ClipTextModel;
   * const ids = tf.tensor2d([[49406, 320, 49407]], undefined, "int32");
   * const { lastHiddenState, pooledOutput } = model.forward(ids, { pooled: true, clipSkip: 1 });
   * ```
   */
  forward(ids: Tensor2D, options: ClipForwardOptions = {}): ClipTextOutput {
    const [b, l] = ids.shape;
    const cfg = this.config;
    if (ids.rank !== 2) throw new Error(`ClipTextModel: ids must be [B, L], got ${ids.shape}`);
    if (l > cfg.maxPositionEmbeddings || l < 1) {
      throw new Error(
        `ClipTextModel: sequence length ${l} is outside 1…${cfg.maxPositionEmbeddings}`,
      );
    }
    const skip = options.clipSkip ?? 0;
    if (!Number.isInteger(skip) || skip < 0 || skip >= cfg.numHiddenLayers) {
      throw new Error(
        `ClipTextModel: clipSkip must be an integer in 0…${cfg.numHiddenLayers - 1}, got ${skip}`,
      );
    }
    // Pool position per row, computed on the device: tfjs-webgpu cannot read ids back
    // synchronously in Deno. Legacy configs (eos_token_id 2) take the first argmax of the ids
    // (the eos is the largest id); others the first eos.
    const eos = cfg.eosTokenId;
    const poolIndex = options.pooled
      ? tf.tidy(() => {
        // The first maximum must win, but tfjs-webgpu's argMax breaks ties arbitrarily: make the
        // keys unique with a descending position term (exact in float32 for ids < 2^24 / L).
        const value = tf.cast(eos === 2 ? ids : tf.equal(ids, tf.scalar(eos, "int32")), "float32");
        const isEos = tf.add(tf.mul(value, l), tf.range(l - 1, -1, -1, "float32"));
        const rowOffsets = tf.mul(tf.range(0, b, 1, "int32"), tf.scalar(l, "int32"));
        return tf.add(tf.cast(tf.argMax(isEos, 1), "int32"), rowOffsets) as Tensor1D;
      })
      : null;
    const mask = new Float32Array(l * l);
    // Causal: a large negative (not -inf) so fully masked rows stay finite on every backend.
    for (let i = 0; i < l; i++) for (let j = i + 1; j < l; j++) mask[i * l + j] = -1e9;
    const lora = options.lora;
    const d = cfg.hiddenSize;
    const result = tf.tidy(() => {
      const idsI = ids.dtype === "int32" ? ids : ids.toInt();
      let h = tf.add(
        tf.gather(this.#tokenEmbedding, idsI.reshape([-1])).reshape([b, l, d]),
        this.#positionEmbedding.slice([0, 0], [l, d]),
      ).reshape([b * l, d]) as Tensor2D;
      const causal = tf.tensor4d(mask, [1, 1, l, l]);
      const layersRun = cfg.numHiddenLayers - skip;
      for (let i = 0; i < layersRun; i++) {
        const layer = this.#layers[i];
        const p = `encoder.layers.${i}`;
        const x = layerNorm(h, layer.ln1) as Tensor2D;
        const q = this.#linear(`${p}.self_attn.q_proj`, x, lora).reshape([b, l, d]);
        const k = this.#linear(`${p}.self_attn.k_proj`, x, lora).reshape([b, l, d]);
        const v = this.#linear(`${p}.self_attn.v_proj`, x, lora).reshape([b, l, d]);
        const att = (useWebgpuKernel("flashAttention") &&
            d / cfg.numAttentionHeads <= FLASH_MAX_HEAD_DIM
          ? flashAttention(q, k, v, { heads: cfg.numAttentionHeads, causal: true })
          : multiHeadAttention(q, k, v, cfg.numAttentionHeads, causal))
          .reshape([b * l, d]) as Tensor2D;
        h = tf.add(h, this.#linear(`${p}.self_attn.out_proj`, att, lora));
        const y = layerNorm(h, layer.ln2) as Tensor2D;
        const f = clipActivate(this.#linear(`${p}.mlp.fc1`, y, lora), cfg.hiddenAct) as Tensor2D;
        h = tf.add(h, this.#linear(`${p}.mlp.fc2`, f, lora));
      }
      const last = layerNorm(h, this.#finalNorm);
      const out: ClipTextOutput = { lastHiddenState: last.reshape([b, l, d]) };
      if (poolIndex) out.pooledOutput = tf.gather(last, poolIndex) as Tensor2D;
      return out as unknown as tf.TensorContainer;
    }) as unknown as ClipTextOutput;
    poolIndex?.dispose();
    return result;
  }

  /** Release all weights. */
  dispose(): void {
    this.#tokenEmbedding.dispose();
    this.#positionEmbedding.dispose();
    for (const l of this.#layers) {
      for (const n of [l.ln1, l.ln2]) {
        n.weight.dispose();
        n.bias.dispose();
      }
      for (const w of [l.q, l.k, l.v, l.out, l.fc1, l.fc2]) disposeLinear(w);
    }
    this.#finalNorm.weight.dispose();
    this.#finalNorm.bias.dispose();
    for (const f of this.#apply.values()) f.dispose();
    this.#apply.clear();
    this.#layers = [];
  }
}
