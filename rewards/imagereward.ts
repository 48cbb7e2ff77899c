/**
 * `imagereward`: ImageReward-v1.0 (Xu et al. 2023), a BLIP model fine-tuned on human
 * preference rankings: how well an image matches its prompt and pleases, normalised so that
 * 0 is the average of its training images (roughly −2…2).
 *
 * `model` is a folder with `model.safetensors` (converted from `ImageReward.pt`, see
 * {@linkcode ImageRewardModel}), `med_config.json` and `tokenizer/` (bert-base-uncased with
 * `[DEC]` and `[ENC]`); an optional `config.json` overrides the sizes.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { join, resolve } from "node:path";
import { z } from "zod";
import { definePlugin, type Plugin } from "../core/plugin.ts";
import type { Reward, RewardInput } from "../core/reward.ts";
import { ModelCache } from "../core/model_cache.ts";
import { BertTokenizer } from "../adapters/image_reward/bert_tokenizer.ts";
import {
  ImageRewardModel,
  imageRewardPreprocess,
} from "../adapters/image_reward/image_reward_model.ts";
import { checkImages, toUint8 } from "./_images.ts";

/**
 * Options of the imagereward reward.
 *
 * @example
 * ```ts
 * import type { ImageRewardOptions } from "@texforce/core/rewards";
 * const o: ImageRewardOptions = { model: "models/ImageReward" };
 * ```
 */
export interface ImageRewardOptions {
  /** Folder with `model.safetensors`, `med_config.json`, `tokenizer/`, optional `config.json`. */
  model: string;
  /** Tokenizer folder (default `<model>/tokenizer`). */
  tokenizer?: string;
}

/**
 * A reward that scores each (image, prompt) pair with ImageReward, as its `score()` does: the
 * image quantised to 8 bits, BLIP's transform, WordPiece ids padded to 35, the head on `[CLS]`.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { imageRewardReward } from "@texforce/core/rewards";
 * const r = await imageRewardReward({ model: "models/ImageReward" });
 * console.log(await r.score({ images: tf.ones([1, 512, 512, 3]), prompts: ["a white square"] }));
 * r.dispose?.();
 * ```
 */
export async function imageRewardReward(
  options: ImageRewardOptions,
  baseDir: string = Deno.cwd(),
  models?: ModelCache,
): Promise<Reward> {
  const dir = resolve(baseDir, options.model);
  const wrap = (e: unknown): never => {
    throw new Error(`imagereward: ${(e as Error).message}`, { cause: e });
  };
  const tokenizer = await BertTokenizer.load(
    options.tokenizer ? resolve(baseDir, options.tokenizer) : join(dir, "tokenizer"),
  ).catch(wrap);
  const shared = await (models ?? new ModelCache()).acquire(
    `imagereward:${dir}`,
    () => ImageRewardModel.load(dir),
    (m) => m.dispose(),
  ).catch(wrap);
  const model = shared.value;
  const c = model.config;
  const size = c.vision.imageSize;
  return {
    name: "imagereward",
    async score({ images, prompts }: RewardInput): Promise<number[]> {
      const [b, h, w] = checkImages("imagereward", images);
      if (prompts.length !== b) {
        throw new Error(`imagereward: ${b} images but ${prompts.length} prompts`);
      }
      const bytes = toUint8(await images.data() as Float32Array);
      const per = h * w * 3;
      const chw = new Float32Array(b * 3 * size * size);
      for (let i = 0; i < b; i++) {
        chw.set(
          imageRewardPreprocess(
            bytes.subarray(i * per, (i + 1) * per),
            h,
            w,
            size,
            c.imageMean,
            c.imageStd,
          ),
          i * 3 * size * size,
        );
      }
      const enc = tokenizer.encodeBatch(prompts, { maxLength: c.textMaxLength });
      const ids = tf.tensor2d(enc.inputIds, undefined, "int32");
      const mask = tf.tensor2d(enc.attentionMask, undefined, "float32");
      const scores = tf.tidy(() => {
        const pixels = tf.tensor4d(chw, [b, 3, size, size]).transpose([0, 2, 3, 1]) as tf.Tensor4D;
        return model.score(pixels, ids, mask);
      });
      ids.dispose();
      mask.dispose();
      const values = Array.from(await scores.data());
      scores.dispose();
      return values;
    },
    dispose(): void {
      shared.release();
    },
  };
}

/**
 * The `imagereward` reward plugin (paths relative to the pipeline file's folder).
 *
 * @example
 * ```yaml
 * rewards:
 *   - use: imagereward
 *     options: { model: ../models/ImageReward }
 * ```
 */
export const imageRewardPlugin: Plugin<"reward", ImageRewardOptions> = definePlugin({
  kind: "reward",
  name: "imagereward",
  version: "0.1.0",
  description: "ImageReward-v1.0: BLIP image-text preference score",
  options: z.strictObject({
    model: z.string().min(1),
    tokenizer: z.string().min(1).optional(),
  }),
  create: (options: ImageRewardOptions, context): Promise<Reward> =>
    imageRewardReward(options, context.baseDir, context.models),
});
