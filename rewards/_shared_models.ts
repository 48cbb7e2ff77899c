// Loading models through the run's ModelCache, so rewards on the same weights share one copy,
// and the CLIP image–prompt similarity that clip-score and pickscore compute.
import * as tf from "@tensorflow/tfjs";
import { ClipModel, l2Normalize } from "../adapters/clip/clip_vision_model.ts";
import type { ClipImageProcessor } from "../adapters/clip/clip_image_processor.ts";
import type { ClipTokenizer } from "../adapters/clip/clip_tokenizer.ts";
import { ModelCache, type SharedModel } from "../core/model_cache.ts";
import type { RewardInput } from "../core/reward.ts";
import { checkImages } from "./_images.ts";

/** The transformers CLIPModel in `dir` (an absolute path), shared through `cache`. */
export function sharedClipModel(
  cache: ModelCache | undefined,
  dir: string,
): Promise<SharedModel<ClipModel>> {
  return (cache ?? new ModelCache()).acquire(
    `clip-model:${dir}`,
    () => ClipModel.load(dir),
    (m) => m.dispose(),
  );
}

/** `scale · cos(image embedding, prompt embedding)` per (image, prompt) pair. */
export async function clipPairScores(
  reward: string,
  clip: ClipModel,
  tokenizer: ClipTokenizer,
  processor: ClipImageProcessor,
  { images, prompts }: RewardInput,
  scale: number,
): Promise<number[]> {
  const [b] = checkImages(reward, images);
  if (prompts.length !== b) throw new Error(`${reward}: ${b} images but ${prompts.length} prompts`);
  const { inputIds } = tokenizer.encodeBatch(prompts, {
    maxLength: clip.text.config.maxPositionEmbeddings,
  });
  const pixels = await processor.preprocess(images);
  const ids = tf.tensor2d(inputIds, undefined, "int32");
  const scores = tf.tidy(() => {
    const img = l2Normalize(clip.imageFeatures(pixels));
    const txt = l2Normalize(clip.textFeatures(ids));
    return tf.mul(tf.sum(tf.mul(img, txt), -1), scale);
  });
  pixels.dispose();
  ids.dispose();
  const values = Array.from(await scores.data());
  scores.dispose();
  return values;
}
