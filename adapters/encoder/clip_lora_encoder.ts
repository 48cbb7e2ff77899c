/**
 * The `clip-lora` encoder: Stable Diffusion's CLIP tokenizer and text model with LoRA on the
 * attention projections (TexForce: rank 16, alpha 16, q/k/v/out), trainable, plus any number of
 * pre-trained adapters loaded from PEFT, diffusers or kohya files and fused with weights.
 *
 * @example
 * ```ts
 * import { clipLoraEncoder, saveLora } from "@texforce/core/adapters";
 * const encoder = await clipLoraEncoder({ modelPath: "stable-diffusion-v1-5" });
 * const hidden = encoder.encode(["a photo of a hand"]); // [1, 77, 768]
 * console.log([...encoder.trainableVariables().keys()][0]);
 * await saveLora(encoder, "out/lora", "peft");
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { dirname, isAbsolute, resolve } from "node:path";
import { z } from "zod";
import type { Encoder, ExportOptions } from "../../core/encoder.ts";
import { componentFile, readModelFolder, requireComponent } from "../../core/io/model_folder.ts";
import { definePlugin, type Plugin } from "../../core/plugin.ts";
import { ClipTextModel, type ClipTextOutput } from "../clip/clip_text_model.ts";
import { ClipTokenizer } from "../clip/clip_tokenizer.ts";
import {
  DEFAULT_LORA_TARGETS,
  LORA_TARGETABLE,
  LoraAdapter,
  type LoraInit,
  LoraStack,
} from "../lora/lora.ts";
import {
  LORA_FORMATS,
  type LoraFormat,
  readLora,
  writeLora,
  type WriteLoraOptions,
  type WriteMergedOptions,
  writeMergedTextEncoder,
} from "../lora/lora_formats.ts";
import { DEFAULT_EXPORT_LAYOUT, EXPORT_LAYOUTS } from "../../core/pipeline_schema.ts";
import type { Tensor2D, Tensor3D, Variable } from "../../core/tensor_types.ts";

/** A pre-trained adapter to load next to (or instead of) the fresh trainable one. */
export interface AdapterSpec {
  /** A PEFT folder or a LoRA `.safetensors` file (any supported layout). */
  path: string;
  /** Adapter name (default: `adapter<i>`; `default` when trainable). */
  name?: string;
  /** Multiplier of its contribution (default 1). */
  weight?: number;
  /** Train it (continue training) instead of creating a fresh adapter (default false). */
  trainable?: boolean;
  /** Override its alpha (for kohya files saved with alpha = rank). */
  alpha?: number;
}

/** Options of the `clip-lora` encoder. */
export interface Options {
  /** The diffusers model folder (default: the run's model). */
  modelPath?: string;
  /** Rank of the fresh trainable adapter. */
  rank: number;
  /** Alpha of the fresh adapter (scale = alpha / rank). */
  alpha: number;
  /** Linear layers to adapt: some of q_proj, k_proj, v_proj, out_proj, fc1, fc2. */
  targets: string[];
  /** Init of A (B is zero): PEFT's `kaiming` (default) or `gaussian`. */
  init: LoraInit;
  /** Seed of the init (random when absent). */
  seed?: number;
  /** Use the hidden state k layers before the last (diffusers' `clip_skip`); 0 = last. */
  clipSkip: number;
  /** Create a fresh trainable adapter `default` (off for inference with loaded adapters). */
  train: boolean;
  /** Pre-trained adapters to load and fuse. */
  adapters: AdapterSpec[];
  /** Weight variant of the text encoder (e.g. `fp16`). */
  variant?: string;
}

const defaults = {
  rank: 16,
  alpha: 16,
  targets: [...DEFAULT_LORA_TARGETS],
  init: "kaiming",
  clipSkip: 0,
  train: true,
  adapters: [],
} satisfies Options;

/**
 * The CLIP text encoder with LoRA adapters, implementing `Encoder`.
 *
 * @example
 * ```ts
 * import { ClipLoraEncoder } from "@texforce/core/adapters";
 * const enc = await ClipLoraEncoder.load("stable-diffusion-v1-5", { rank: 16, alpha: 16 });
 * const h = enc.encode(["a cat"]);
 * ```
 */
export class ClipLoraEncoder implements Encoder {
  /** Plugin name. */
  readonly name = "clip-lora";
  /** The tokenizer. */
  readonly tokenizer: ClipTokenizer;
  /** The text model. */
  readonly model: ClipTextModel;
  /** The adapters applied to the model. */
  readonly lora: LoraStack;
  /** The model's `text_encoder/` folder (for merged exports). */
  readonly textEncoderDir: string;
  /** The diffusers model folder (written into PEFT's `base_model_name_or_path`). */
  readonly modelPath: string;
  /** Hidden state used: k layers before the last. */
  clipSkip: number;
  /** Init of the trainable adapter, recorded in exported PEFT configs. */
  readonly init: LoraInit;

  private constructor(
    parts: {
      tokenizer: ClipTokenizer;
      model: ClipTextModel;
      lora: LoraStack;
      textEncoderDir: string;
      modelPath: string;
      clipSkip: number;
      init: LoraInit;
    },
  ) {
    this.tokenizer = parts.tokenizer;
    this.model = parts.model;
    this.lora = parts.lora;
    this.textEncoderDir = parts.textEncoderDir;
    this.modelPath = parts.modelPath;
    this.clipSkip = parts.clipSkip;
    this.init = parts.init;
  }

  /**
   * Load the tokenizer and text encoder of a diffusers model folder, add a fresh trainable
   * adapter (unless `train` is false or an adapter spec is trainable) and load `adapters`.
   *
   * @example
   * ```ts
   * import { ClipLoraEncoder } from "@texforce/core/adapters";
   * const enc = await ClipLoraEncoder.load("sd15", {
   *   train: false,
   *   adapters: [{ path: "face_lora/", weight: 1 }, { path: "hand_lora/", weight: 0.5 }],
   * });
   * ```
   */
  static async load(modelPath: string, options: Partial<Options> = {}): Promise<ClipLoraEncoder> {
    const o = { ...defaults, ...options };
    const folder = await readModelFolder(modelPath);
    const tokDir = dirname(await componentFile(folder, "tokenizer", "vocab.json"));
    const teDir = requireComponent(folder, "text_encoder").path;
    const tokenizer = await ClipTokenizer.load(tokDir);
    const model = await ClipTextModel.load(teDir, { variant: o.variant });
    const lora = new LoraStack();
    const enc = new ClipLoraEncoder({
      tokenizer,
      model,
      lora,
      textEncoderDir: teDir,
      modelPath: folder.path,
      clipSkip: o.clipSkip,
      init: o.init,
    });
    try {
      if (tokenizer.vocabSize > model.config.vocabSize) {
        throw new Error(
          `${tokDir}: the vocabulary has ${tokenizer.vocabSize} tokens but the text encoder ` +
            `(${teDir}) embeds only ${model.config.vocabSize}: tokenizer and model do not match`,
        );
      }
      if (tokenizer.maxLength > model.config.maxPositionEmbeddings) {
        throw new Error(
          `${tokDir}: model_max_length ${tokenizer.maxLength} exceeds the text encoder's ` +
            `${model.config.maxPositionEmbeddings} positions`,
        );
      }
      if (o.clipSkip < 0 || o.clipSkip >= model.config.numHiddenLayers) {
        throw new Error(
          `clipSkip ${o.clipSkip} must be in 0…${model.config.numHiddenLayers - 1} for this model`,
        );
      }
      const trainableSpecs = o.adapters.filter((a) => a.trainable);
      if (trainableSpecs.length > 1) {
        throw new Error("at most one adapter can be trainable");
      }
      if (o.train && trainableSpecs.length === 0) {
        const fresh = LoraAdapter.create("default", model.linearShapes(), {
          rank: o.rank,
          alpha: o.alpha,
          targets: o.targets,
          init: o.init,
          seed: o.seed,
        });
        enc.#addAdapter(fresh);
      }
      for (const [i, spec] of o.adapters.entries()) {
        await enc.loadAdapter(spec.path, {
          name: spec.name ?? (spec.trainable ? "default" : `adapter${i}`),
          weight: spec.weight,
          trainable: spec.trainable,
          alpha: spec.alpha,
        });
      }
    } catch (e) {
      enc.dispose();
      throw e;
    }
    return enc;
  }

  #addAdapter(adapter: LoraAdapter): void {
    // Names follow the checkpoint's layout, as PEFT's do on the same model.
    adapter.textModelPrefix = this.model.keyPrefix === "text_model.";
    this.lora.add(adapter);
  }

  /**
   * Load a LoRA file or PEFT folder as a named adapter (checked against the model's shapes).
   *
   * @example
   * ```ts
   * import type { ClipLoraEncoder } from "@texforce/core/adapters";
   * declare const enc: ClipLoraEncoder;
   * await enc.loadAdapter("hand_lora.safetensors", { name: "hand", weight: 0.7 });
   * ```
   */
  async loadAdapter(
    path: string,
    options: { name?: string; weight?: number; trainable?: boolean; alpha?: number } = {},
  ): Promise<LoraAdapter> {
    const weights = await readLora(path, { alpha: options.alpha });
    const adapter = LoraAdapter.fromWeights(
      options.name ?? `adapter${this.lora.adapters.size}`,
      weights,
      this.model.linearShapes(),
      { trainable: options.trainable ?? false },
    );
    adapter.weight = options.weight ?? 1;
    try {
      this.#addAdapter(adapter);
    } catch (e) {
      adapter.dispose();
      throw e;
    }
    return adapter;
  }

  /** Width D of the hidden states. */
  get hiddenSize(): number {
    return this.model.config.hiddenSize;
  }

  /** Sequence length (77). */
  get maxLength(): number {
    return this.tokenizer.maxLength;
  }

  /** Token ids [B, 77] (int32). */
  tokenize(prompts: string[]): Tensor2D {
    const { inputIds } = this.tokenizer.encodeBatch(prompts);
    return tf.tensor2d(inputIds, [inputIds.length, this.maxLength], "int32");
  }

  /** Hidden states [B, L, D] of token ids, with the enabled adapters. */
  encodeIds(ids: Tensor2D): Tensor3D {
    return this.model.forward(ids, { clipSkip: this.clipSkip, lora: this.lora }).lastHiddenState;
  }

  /** Hidden states [B, 77, D] of prompts. */
  encode(prompts: string[]): Tensor3D {
    const ids = this.tokenize(prompts);
    try {
      return this.encodeIds(ids);
    } finally {
      ids.dispose();
    }
  }

  /**
   * Hidden states and pooled output (at the first end-of-text token) of token ids.
   *
   * @example
   * ```ts
   * import type { ClipLoraEncoder } from "@texforce/core/adapters";
   * declare const enc: ClipLoraEncoder;
   * const ids = enc.tokenize(["a cat"]);
   * const { lastHiddenState, pooledOutput } = enc.forward(ids);
   * ```
   */
  forward(ids: Tensor2D): ClipTextOutput {
    return this.model.forward(ids, { clipSkip: this.clipSkip, lora: this.lora, pooled: true });
  }

  /** Trainable LoRA variables by PEFT runtime name (`…q_proj.lora_A.default.weight`). */
  trainableVariables(): Map<string, Variable> {
    return this.lora.trainableVariables();
  }

  /**
   * Write the adapters for other tools under `dir`: `peft` (the folder gets
   * `adapter_config.json` + `adapter_model.safetensors`), `diffusers`
   * (`pytorch_lora_weights.safetensors`), `kohya` (`texforce_lora.safetensors`) or `merged`
   * (`model.safetensors` + `config.json` with every enabled adapter folded in). `layout`
   * (default `transformers-4`, keys with `text_model.`) applies to peft, diffusers and merged;
   * kohya keys are always the `lora_te_text_model_…` ones A1111 and ComfyUI read.
   *
   * @example
   * ```ts
   * import type { ClipLoraEncoder } from "@texforce/core/adapters";
   * declare const enc: ClipLoraEncoder;
   * const files = await enc.exportWeights("out/export/peft", "peft", { layout: "transformers-5" });
   * ```
   */
  async exportWeights(
    dir: string,
    format: LoraFormat | "merged",
    options: ExportOptions = {},
  ): Promise<string[]> {
    const layout = options.layout ?? DEFAULT_EXPORT_LAYOUT;
    if (!EXPORT_LAYOUTS.includes(layout)) {
      throw new Error(
        `clip-lora: unknown export layout '${layout}' (expected ${EXPORT_LAYOUTS.join(", ")})`,
      );
    }
    const textModelPrefix = layout === "transformers-4";
    if (format === "merged") return await saveMergedTextEncoder(this, dir, { textModelPrefix });
    if (!LORA_FORMATS.includes(format)) {
      throw new Error(
        `clip-lora: unknown export format '${format}' (expected ${
          [...LORA_FORMATS, "merged"].join(", ")
        })`,
      );
    }
    return await saveLora(this, dir, format, format === "kohya" ? {} : { textModelPrefix });
  }

  /** Release weights and adapters. */
  dispose(): void {
    this.lora.dispose();
    this.model.dispose();
  }
}

/**
 * Save one adapter (default: the trainable `default`, or the only one loaded) in `format`; see `writeLora` for the
 * paths. PEFT configs record the base model folder. Returns the files written.
 *
 * @example
 * ```ts
 * import { type ClipLoraEncoder, saveLora } from "@texforce/core/adapters";
 * declare const enc: ClipLoraEncoder;
 * await saveLora(enc, "out/peft", "peft");
 * await saveLora(enc, "out/lora_a1111.safetensors", "kohya");
 * await saveLora(enc, "out/diffusers", "diffusers");
 * ```
 */
export async function saveLora(
  encoder: ClipLoraEncoder,
  path: string,
  format: LoraFormat,
  options: WriteLoraOptions & { adapter?: string } = {},
): Promise<string[]> {
  const adapters = encoder.lora.adapters;
  // The trained adapter by default; a lone loaded adapter when nothing is trained.
  const name = options.adapter ??
    (adapters.has("default") || adapters.size !== 1 ? "default" : [...adapters.keys()][0]);
  const adapter = encoder.lora.get(name);
  const weights = await adapter.toWeights();
  return await writeLora(path, weights, format, {
    baseModel: encoder.modelPath,
    init: adapter.init ?? encoder.init,
    ...options,
  });
}

/**
 * Write the text encoder with every enabled adapter folded in (`model.safetensors` +
 * `config.json`, same dtypes as the input, keys in the transformers-4 layout unless
 * `options.textModelPrefix` says otherwise) to `outDir`.
 *
 * @example
 * ```ts
 * import { type ClipLoraEncoder, saveMergedTextEncoder } from "@texforce/core/adapters";
 * declare const enc: ClipLoraEncoder;
 * await saveMergedTextEncoder(enc, "out/text_encoder");
 * ```
 */
export async function saveMergedTextEncoder(
  encoder: ClipLoraEncoder,
  outDir: string,
  options: WriteMergedOptions = {},
): Promise<string[]> {
  return await writeMergedTextEncoder(
    outDir,
    encoder.textEncoderDir,
    await encoder.lora.mergedDeltas(),
    options,
  );
}

/**
 * Build the `clip-lora` encoder (the factory behind the plugin); `modelPath` is required.
 *
 * @example
 * ```ts
 * import { clipLoraEncoder } from "@texforce/core/adapters";
 * const enc = await clipLoraEncoder({ modelPath: "sd15", rank: 8, targets: ["q_proj", "v_proj"] });
 * ```
 */
export async function clipLoraEncoder(options: Partial<Options> = {}): Promise<ClipLoraEncoder> {
  if (!options.modelPath) {
    throw new Error("clip-lora: no model folder (set modelPath, or the run's model)");
  }
  return await ClipLoraEncoder.load(options.modelPath, options);
}

const optionsSchema = z.strictObject({
  modelPath: z.string().optional(),
  rank: z.number().int().positive().default(defaults.rank),
  alpha: z.number().positive().default(defaults.alpha),
  targets: z.array(z.enum(LORA_TARGETABLE as [string, ...string[]])).min(1)
    .default(defaults.targets),
  init: z.enum(["kaiming", "gaussian"]).default("kaiming"),
  seed: z.number().int().optional(),
  clipSkip: z.number().int().min(0).default(0),
  train: z.boolean().default(true),
  adapters: z.array(z.strictObject({
    path: z.string().min(1),
    name: z.string().regex(/^[A-Za-z0-9_-]+$/).optional(),
    weight: z.number().optional(),
    trainable: z.boolean().optional(),
    alpha: z.number().positive().optional(),
  })).default([]),
  variant: z.string().optional(),
});

/**
 * The `clip-lora` encoder plugin. Relative `modelPath` and adapter paths resolve against the
 * pipeline file's folder.
 *
 * @example
 * ```ts
 * import { PluginRegistry } from "@texforce/core";
 * import { clipLoraEncoderPlugin } from "@texforce/core/adapters";
 * const registry = new PluginRegistry([clipLoraEncoderPlugin]);
 * ```
 */
export const clipLoraEncoderPlugin: Plugin<"encoder", Options> = definePlugin(
  {
    kind: "encoder",
    name: "clip-lora",
    version: "0.1.0",
    description: "CLIP text encoder of Stable Diffusion with trainable LoRA (TexForce)",
    options: optionsSchema,
    create: async (o, context) => {
      const abs = (p: string) => (isAbsolute(p) ? p : resolve(context.baseDir, p));
      const modelPath = o.modelPath ? abs(o.modelPath) : context.modelPath;
      return await clipLoraEncoder({
        ...o,
        // A run is reproducible only if the LoRA's random initialisation is seeded.
        seed: o.seed ?? context.seed,
        modelPath,
        adapters: o.adapters.map((a) => ({ ...a, path: abs(a.path) })),
      });
    },
  },
);
