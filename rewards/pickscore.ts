/**
 * `pickscore`: PickScore_v1 (Kirstain et al. 2023), a CLIP ViT-H/14 fine-tuned on Pick-a-Pic
 * preferences, scored as its authors define it: `logit_scale.exp() × cos(image, prompt)`
 * (≈ 18…23 for real images), or the plain cosine that TexForce's code uses (`output: cosine`).
 *
 * `model` is the transformers `CLIPModel` folder of `yuvalkirstain/PickScore_v1`; its processor
 * is `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`'s (224, bicubic, centre crop, CLIP mean/std), given
 * as `processor` (a folder with `preprocessor_config.json`, `vocab.json`, `merges.txt`) unless
 * the model folder holds those files itself.
 *
 * @module
 */
import { resolve } from "node:path";
import { z } from "zod";
import { definePlugin, type Plugin } from "../core/plugin.ts";
import type { Reward, RewardInput } from "../core/reward.ts";
import type { ModelCache } from "../core/model_cache.ts";
import { ClipImageProcessor } from "../adapters/clip/clip_image_processor.ts";
import { ClipTokenizer } from "../adapters/clip/clip_tokenizer.ts";
import { clipPairScores, sharedClipModel } from "./_shared_models.ts";

/**
 * Options of the pickscore reward.
 *
 * @example
 * ```ts
 * import type { PickScoreOptions } from "@texforce/core/rewards";
 * const o: PickScoreOptions = {
 *   model: "models/PickScore_v1",
 *   processor: "models/CLIP-ViT-H-14-laion2B-s32B-b79K",
 *   output: "logit",
 * };
 * ```
 */
export interface PickScoreOptions {
  /** The PickScore_v1 `CLIPModel` folder (config.json, model.safetensors). */
  model: string;
  /** Processor folder (preprocessor_config.json, vocab.json, merges.txt); default `model`. */
  processor?: string;
  /** Tokenizer folder (vocab.json, merges.txt) when not in `processor`. */
  tokenizer?: string;
  /** `logit` (default): exp(logit_scale) × cosine, as PickScore's authors; `cosine`: plain. */
  output: "logit" | "cosine";
}

const defaults = { output: "logit" } satisfies Partial<PickScoreOptions>;

/**
 * A reward that scores each (image, prompt) pair with PickScore. Paths resolve against
 * `baseDir`; with `models` (the run's cache) the CLIP is shared with other rewards on it.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { pickScoreReward } from "@texforce/core/rewards";
 * const r = await pickScoreReward({ model: "models/PickScore_v1", processor: "models/laion-h14" });
 * console.log(await r.score({ images: tf.ones([1, 512, 512, 3]), prompts: ["a white square"] }));
 * r.dispose?.();
 * ```
 */
export async function pickScoreReward(
  options: Pick<PickScoreOptions, "model"> & Partial<PickScoreOptions>,
  baseDir: string = Deno.cwd(),
  models?: ModelCache,
): Promise<Reward> {
  const o: PickScoreOptions = { ...defaults, ...options };
  const modelDir = resolve(baseDir, o.model);
  const processorDir = resolve(baseDir, o.processor ?? o.model);
  const wrap = (e: unknown): never => {
    throw new Error(`pickscore: ${(e as Error).message}`, { cause: e });
  };
  const tokenizer = await ClipTokenizer.load(resolve(baseDir, o.tokenizer ?? processorDir))
    .catch(wrap);
  const processor = await ClipImageProcessor.load(processorDir).catch(wrap);
  const shared = await sharedClipModel(models, modelDir).catch(wrap);
  const clip = shared.value;
  const scale = o.output === "logit" ? clip.logitScale : 1;
  return {
    name: "pickscore",
    score: (input: RewardInput): Promise<number[]> =>
      clipPairScores("pickscore", clip, tokenizer, processor, input, scale),
    dispose(): void {
      shared.release();
    },
  };
}

/**
 * The `pickscore` reward plugin (paths relative to the pipeline file's folder).
 *
 * @example
 * ```yaml
 * rewards:
 *   - use: pickscore
 *     options:
 *       model: ../models/PickScore_v1
 *       processor: ../models/CLIP-ViT-H-14-laion2B-s32B-b79K
 * ```
 */
export const pickScorePlugin: Plugin<"reward", PickScoreOptions> = definePlugin({
  kind: "reward",
  name: "pickscore",
  version: "0.1.0",
  description: "PickScore_v1: exp(logit_scale) × cosine of CLIP ViT-H/14 embeddings",
  options: z.strictObject({
    model: z.string().min(1),
    processor: z.string().min(1).optional(),
    tokenizer: z.string().min(1).optional(),
    output: z.enum(["logit", "cosine"]).default(defaults.output),
  }),
  create: (options: PickScoreOptions, context): Promise<Reward> =>
    pickScoreReward(options, context.baseDir, context.models),
});
