/**
 * BLIP's text encoder (`models/BLIP/med.py`, a BERT): word + absolute position embeddings →
 * LayerNorm (no token-type embeddings: `med.py` drops them whatever `type_vocab_size` says),
 * then per layer, all post-LN: self-attention with the additive padding mask
 * `(1 − mask) · −10000` on keys, cross-attention over every image token (keys and values from
 * the image width), and the GELU feed-forward. No pooler.
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
import type { ClipActivation } from "../clip/clip_text_model.ts";
import type { Tensor, Tensor2D, Tensor3D } from "../../core/tensor_types.ts";

/** The fields of a BLIP `med_config.json` the encoder uses. */
export interface BertCrossConfig {
  /** `vocab_size` (30524 = bert-base-uncased + `[DEC]` + `[ENC]`). */
  vocabSize: number;
  /** `hidden_size` (768). */
  hiddenSize: number;
  /** `num_hidden_layers` (12). */
  numHiddenLayers: number;
  /** `num_attention_heads` (12). */
  numAttentionHeads: number;
  /** `intermediate_size` (3072). */
  intermediateSize: number;
  /** `max_position_embeddings` (512). */
  maxPositionEmbeddings: number;
  /** `layer_norm_eps` (1e-12). */
  layerNormEps: number;
  /** `hidden_act` (`gelu`: exact erf). */
  hiddenAct: ClipActivation;
  /** `encoder_width`: width of the image tokens (1024 for ViT-L). */
  encoderWidth: number;
}

/**
 * Read a BLIP `med_config.json`; errors name the file and key.
 *
 * @example
 * ```ts
 * import { parseBertCrossConfig } from "@texforce/core/adapters";
 * const c = parseBertCrossConfig({
 *   hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072,
 *   vocab_size: 30524, max_position_embeddings: 512, layer_norm_eps: 1e-12, hidden_act: "gelu",
 *   encoder_width: 1024, add_cross_attention: true,
 * }, "med_config.json");
 * ```
 */
export function parseBertCrossConfig(json: Record<string, unknown>, file: string): BertCrossConfig {
  const int = (key: string): number => {
    const v = json[key];
    if (!Number.isInteger(v) || (v as number) < 1) {
      throw new Error(`${file}: '${key}' must be a positive integer, got ${JSON.stringify(v)}`);
    }
    return v as number;
  };
  const eps = json.layer_norm_eps ?? 1e-12;
  if (typeof eps !== "number" || !(eps > 0)) {
    throw new Error(`${file}: 'layer_norm_eps' must be a positive number`);
  }
  const act = json.hidden_act ?? "gelu";
  if (act !== "gelu" && act !== "gelu_new" && act !== "relu") {
    throw new Error(`${file}: 'hidden_act' ${JSON.stringify(act)} is not supported (gelu, relu)`);
  }
  if (json.add_cross_attention !== true) {
    throw new Error(`${file}: 'add_cross_attention' must be true (BLIP's image-grounded encoder)`);
  }
  const pe = json.position_embedding_type ?? "absolute";
  if (pe !== "absolute") {
    throw new Error(`${file}: 'position_embedding_type' ${JSON.stringify(pe)}: only absolute`);
  }
  const c: BertCrossConfig = {
    vocabSize: int("vocab_size"),
    hiddenSize: int("hidden_size"),
    numHiddenLayers: int("num_hidden_layers"),
    numAttentionHeads: int("num_attention_heads"),
    intermediateSize: int("intermediate_size"),
    maxPositionEmbeddings: int("max_position_embeddings"),
    layerNormEps: eps,
    hiddenAct: act as ClipActivation,
    encoderWidth: int("encoder_width"),
  };
  if (c.hiddenSize % c.numAttentionHeads !== 0) {
    throw new Error(
      `${file}: hidden_size ${c.hiddenSize} is not divisible by num_attention_heads ` +
        `${c.numAttentionHeads}`,
    );
  }
  return c;
}

/**
 * Every key of the encoder under `prefix` with its PyTorch shape (`position_ids` included).
 *
 * @example
 * ```ts
 * import { bertCrossLayout, type BertCrossConfig } from "@texforce/core/adapters";
 * declare const config: BertCrossConfig;
 * const keys = bertCrossLayout(config, "blip.text_encoder.");
 * ```
 */
export function bertCrossLayout(c: BertCrossConfig, prefix: string): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const d = c.hiddenSize;
  const e = `${prefix}embeddings.`;
  m.set(`${e}word_embeddings.weight`, [c.vocabSize, d]);
  m.set(`${e}position_embeddings.weight`, [c.maxPositionEmbeddings, d]);
  m.set(`${e}LayerNorm.weight`, [d]);
  m.set(`${e}LayerNorm.bias`, [d]);
  m.set(`${e}position_ids`, [1, c.maxPositionEmbeddings]);
  const lin = (name: string, o: number, i: number) => {
    m.set(`${name}.weight`, [o, i]);
    m.set(`${name}.bias`, [o]);
  };
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `${prefix}encoder.layer.${i}.`;
    for (const a of ["attention", "crossattention"]) {
      const kv = a === "attention" ? d : c.encoderWidth;
      lin(`${p}${a}.self.query`, d, d);
      lin(`${p}${a}.self.key`, d, kv);
      lin(`${p}${a}.self.value`, d, kv);
      lin(`${p}${a}.output.dense`, d, d);
      m.set(`${p}${a}.output.LayerNorm.weight`, [d]);
      m.set(`${p}${a}.output.LayerNorm.bias`, [d]);
    }
    lin(`${p}intermediate.dense`, c.intermediateSize, d);
    lin(`${p}output.dense`, d, c.intermediateSize);
    m.set(`${p}output.LayerNorm.weight`, [d]);
    m.set(`${p}output.LayerNorm.bias`, [d]);
  }
  return m;
}

interface Attention {
  query: LinearWeights;
  key: LinearWeights;
  value: LinearWeights;
  dense: LinearWeights;
  norm: LayerNormWeights;
}

interface Layer {
  self: Attention;
  cross: Attention;
  intermediate: LinearWeights;
  output: LinearWeights;
  norm: LayerNormWeights;
}

/**
 * BLIP's image-grounded BERT encoder in tfjs (inference).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import type { BertCrossEncoder } from "@texforce/core/adapters";
 * declare const bert: BertCrossEncoder;
 * const ids = tf.tensor2d([[101, 1037, 4937, 102]], undefined, "int32");
 * const mask = tf.ones([1, 4]) as tf.Tensor2D;
 * const image = tf.zeros([1, 197, 1024]) as tf.Tensor3D;
 * const h = bert.forward(ids, mask, image); // [1, 4, 768]
 * ```
 */
export class BertCrossEncoder {
  /** The configuration. */
  readonly config: BertCrossConfig;
  #word: Tensor2D;
  #pos: Tensor2D;
  #embNorm: LayerNormWeights;
  #layers: Layer[];

  private constructor(
    config: BertCrossConfig,
    word: Tensor2D,
    pos: Tensor2D,
    embNorm: LayerNormWeights,
    layers: Layer[],
  ) {
    this.config = config;
    this.#word = word;
    this.#pos = pos;
    this.#embNorm = embNorm;
    this.#layers = layers;
  }

  /**
   * Read the weights under `r` (e.g. `blip.text_encoder.`); shapes are checked.
   *
   * @example
   * ```ts
   * import { openWeights } from "@texforce/core";
   * import { BertCrossEncoder, WeightReader, parseBertCrossConfig } from "@texforce/core/adapters";
   * const src = await openWeights("ImageReward/model.safetensors");
   * const config = parseBertCrossConfig(
   *   JSON.parse(await Deno.readTextFile("ImageReward/med_config.json")),
   *   "med_config.json",
   * );
   * const bert = await BertCrossEncoder.load(new WeightReader(src, "blip.text_encoder."), config);
   * ```
   */
  static async load(r: WeightReader, c: BertCrossConfig): Promise<BertCrossEncoder> {
    const owned = new OwnedTensors(r);
    const keep = <T extends Tensor>(t: T): T => owned.keep(t);
    const d = c.hiddenSize;
    const lin = (name: string, i: number, o: number) => owned.linear(name, i, o);
    const ln = (name: string) => owned.layerNorm(name, d, c.layerNormEps);
    const attention = async (p: string, kv: number): Promise<Attention> => ({
      query: await lin(`${p}.self.query`, d, d),
      key: await lin(`${p}.self.key`, kv, d),
      value: await lin(`${p}.self.value`, kv, d),
      dense: await lin(`${p}.output.dense`, d, d),
      norm: await ln(`${p}.output.LayerNorm`),
    });
    try {
      const word = keep(
        await r.tensor("embeddings.word_embeddings.weight", [c.vocabSize, d]),
      ) as Tensor2D;
      const pos = keep(
        await r.tensor("embeddings.position_embeddings.weight", [c.maxPositionEmbeddings, d]),
      ) as Tensor2D;
      const embNorm = await ln("embeddings.LayerNorm");
      const layers: Layer[] = [];
      for (let i = 0; i < c.numHiddenLayers; i++) {
        const p = `encoder.layer.${i}`;
        layers.push({
          self: await attention(`${p}.attention`, d),
          cross: await attention(`${p}.crossattention`, c.encoderWidth),
          intermediate: await lin(`${p}.intermediate.dense`, d, c.intermediateSize),
          output: await lin(`${p}.output.dense`, c.intermediateSize, d),
          norm: await ln(`${p}.output.LayerNorm`),
        });
      }
      return new BertCrossEncoder(c, word, pos, embNorm, layers);
    } catch (e) {
      owned.dispose();
      throw e;
    }
  }

  /**
   * `embeddings(input_ids)`: word + position embeddings → LayerNorm, [B, L, D].
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { BertCrossEncoder } from "@texforce/core/adapters";
   * declare const bert: BertCrossEncoder;
   * const e = bert.embeddings(tf.tensor2d([[101, 102]], undefined, "int32"));
   * ```
   */
  embeddings(ids: Tensor2D): Tensor3D {
    const [b, l] = ids.shape;
    const d = this.config.hiddenSize;
    if (l > this.config.maxPositionEmbeddings) {
      throw new Error(
        `BertCrossEncoder: ${l} tokens exceed max_position_embeddings ` +
          `${this.config.maxPositionEmbeddings}`,
      );
    }
    return tf.tidy(() => {
      const idsI = ids.dtype === "int32" ? ids : ids.toInt();
      const x = tf.add(
        tf.gather(this.#word, idsI.reshape([-1])).reshape([b, l, d]),
        this.#pos.slice([0, 0], [l, d]),
      );
      return layerNorm(x, this.#embNorm) as Tensor3D;
    });
  }

  /**
   * `text_encoder(ids, attention_mask, encoder_hidden_states=image, encoder_attention_mask=1)`:
   * the last hidden state [B, L, D] (padded positions included).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { BertCrossEncoder } from "@texforce/core/adapters";
   * declare const bert: BertCrossEncoder;
   * const h = bert.forward(
   *   tf.tensor2d([[101, 102, 0]], undefined, "int32"),
   *   tf.tensor2d([[1, 1, 0]]),
   *   tf.zeros([1, 197, 1024]) as tf.Tensor3D,
   * );
   * ```
   */
  forward(ids: Tensor2D, attentionMask: Tensor2D, image: Tensor3D): Tensor3D {
    const c = this.config;
    const [b, l] = ids.shape;
    const d = c.hiddenSize;
    const [bi, li, wi] = image.shape;
    if (bi !== b || wi !== c.encoderWidth) {
      throw new Error(
        `BertCrossEncoder: image tokens must be [${b}, N, ${c.encoderWidth}], got ` +
          `[${image.shape.join(", ")}]`,
      );
    }
    return tf.tidy(() => {
      let h: Tensor = this.embeddings(ids).reshape([b * l, d]);
      // get_extended_attention_mask: [B, 1, 1, L], (1 − mask) · −10000 on keys.
      const mask = tf.mul(tf.sub(1, tf.cast(attentionMask, "float32")), -10000)
        .reshape([b, 1, 1, l]);
      const img = image.reshape([b * li, wi]);
      const attend = (a: Attention, x: Tensor, kvIn: Tensor, lk: number, m?: Tensor) => {
        const q = linear(x, a.query).reshape([b, l, d]);
        const k = linear(kvIn, a.key).reshape([b, lk, d]);
        const v = linear(kvIn, a.value).reshape([b, lk, d]);
        const ctx = multiHeadAttention(q, k, v, c.numAttentionHeads, m).reshape([b * l, d]);
        return layerNorm(tf.add(linear(ctx, a.dense), x), a.norm);
      };
      for (const layer of this.#layers) {
        h = attend(layer.self, h, h, l, mask);
        h = attend(layer.cross, h, img, li);
        const f = clipActivate(linear(h, layer.intermediate), c.hiddenAct);
        h = layerNorm(tf.add(linear(f, layer.output), h), layer.norm);
      }
      return h.reshape([b, l, d]) as Tensor3D;
    });
  }

  /** Release all weights. */
  dispose(): void {
    this.#word.dispose();
    this.#pos.dispose();
    const norms = [this.#embNorm];
    for (const l of this.#layers) {
      norms.push(l.self.norm, l.cross.norm, l.norm);
      for (const a of [l.self, l.cross]) {
        for (const w of [a.query, a.key, a.value, a.dense]) disposeLinear(w);
      }
      disposeLinear(l.intermediate);
      disposeLinear(l.output);
    }
    for (const n of norms) {
      n.weight.dispose();
      n.bias.dispose();
    }
    this.#layers = [];
  }
}
