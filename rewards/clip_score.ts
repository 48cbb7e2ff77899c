/**
 * `clip-score`: CLIPScore-style prompt alignment, the cosine similarity of each image's CLIP
 * embedding with its prompt's, times a scale (100, or the model's own exp(logit_scale), which
 * is what `logits_per_image` uses).
 *
 * @module
 */
import { resolve } from "node:path";
import { z } from "zod";
import { definePlugin, type Plugin, type PluginIssue } from "../core/plugin.ts";
import { clipModelIssues, tokenizerIssues } from "./_clip_files.ts";
import type { Reward, RewardInput } from "../core/reward.ts";
import type { ModelCache } from "../core/model_cache.ts";
import { ClipImageProcessor } from "../adapters/clip/clip_image_processor.ts";
import { ClipTokenizer } from "../adapters/clip/clip_tokenizer.ts";
import { clipPairScores, sharedClipModel } from "./_shared_models.ts";

/**
 * Options of the CLIP-score reward.
 *
 * @example
 * ```ts
 * import type { ClipScoreOptions } from "@texforce/core/rewards";
 * const o: ClipScoreOptions = { clipModel: "models/clip-vit-large-patch14", scale: 100 };
 * ```
 */
export interface ClipScoreOptions {
  /** A transformers `CLIPModel` folder (config.json, model.safetensors, preprocessor_config.json). */
  clipModel: string;
  /** Tokenizer folder (vocab.json, merges.txt); default: `clipModel` itself. */
  tokenizer?: string;
  /** Multiplies the cosine: a number, or `"logit_scale"` for the model's exp(logit_scale). */
  scale: number | "logit_scale";
}

const defaults = { scale: 100 } satisfies Partial<ClipScoreOptions>;

/**
 * A reward that scores each image by `scale · cos(image embedding, prompt embedding)`. Paths
 * resolve against `baseDir` (default: the working directory).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { clipScoreReward } from "@texforce/core/rewards";
 * const r = await clipScoreReward({ clipModel: "models/clip-vit-large-patch14" });
 * console.log(await r.score({ images: tf.ones([1, 512, 512, 3]), prompts: ["a white square"] }));
 * r.dispose?.();
 * ```
 */
export async function clipScoreReward(
  options: Omit<ClipScoreOptions, "scale"> & Partial<ClipScoreOptions>,
  baseDir: string = Deno.cwd(),
  models?: ModelCache,
): Promise<Reward> {
  const o: ClipScoreOptions = { ...defaults, ...options };
  const clipDir = resolve(baseDir, o.clipModel);
  const tokDir = resolve(baseDir, o.tokenizer ?? o.clipModel);
  const wrap = (e: unknown): never => {
    throw new Error(`clip-score: ${(e as Error).message}`, { cause: e });
  };
  const tokenizer = await ClipTokenizer.load(tokDir).catch(wrap);
  const processor = await ClipImageProcessor.load(clipDir).catch(wrap);
  const shared = await sharedClipModel(models, clipDir).catch(wrap);
  const clip = shared.value;
  const scale = o.scale === "logit_scale" ? clip.logitScale : o.scale;
  return {
    name: "clip-score",
    score: (input: RewardInput): Promise<number[]> =>
      clipPairScores("clip-score", clip, tokenizer, processor, input, scale),
    dispose(): void {
      shared.release();
    },
  };
}

/**
 * The `clip-score` reward plugin (paths relative to the pipeline file's folder).
 *
 * @example
 * ```yaml
 * rewards:
 *   - use: clip-score
 *     options: { clipModel: ../models/clip-vit-large-patch14, scale: logit_scale }
 * ```
 */
export const clipScorePlugin: Plugin<"reward", ClipScoreOptions> = definePlugin({
  kind: "reward",
  name: "clip-score",
  version: "0.1.0",
  description: "scale × cosine of CLIP image and prompt embeddings",
  options: z.strictObject({
    clipModel: z.string().min(1),
    tokenizer: z.string().min(1).optional(),
    scale: z.union([z.number(), z.literal("logit_scale")]).default(defaults.scale),
  }),
  create: (options: ClipScoreOptions, context): Promise<Reward> =>
    clipScoreReward(options, context.baseDir, context.models),
  preflight: async (options: ClipScoreOptions, context): Promise<PluginIssue[]> => [
    ...await clipModelIssues(context.baseDir, "clipModel", options.clipModel),
    ...await tokenizerIssues(
      context.baseDir,
      options.tokenizer ? "tokenizer" : "clipModel",
      options.tokenizer ?? options.clipModel,
    ),
  ],
});
