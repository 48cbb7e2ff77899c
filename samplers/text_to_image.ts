/**
 * Text to image in one object, for apps that embed texforce: a CLIP LoRA encoder and a DDIM
 * sampler over one diffusers folder, with `generate` and `score`.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import {
  ClipLoraEncoder,
  type Options as ClipLoraEncoderOptions,
} from "../adapters/encoder/clip_lora_encoder.ts";
import type { Reward } from "../core/reward.ts";
import { type DdimSampler, ddimSampler, type Options as DdimOptions } from "./ddim_sampler.ts";
import type { Tensor4D } from "../core/tensor_types.ts";

/** Options of {@linkcode loadTextToImage}. */
export interface TextToImageOptions {
  /** Encoder options (LoRA rank, adapters to load, clip skip, …). */
  encoder?: Partial<ClipLoraEncoderOptions>;
  /** Sampler options (steps, eta, guidance, …). */
  sampler?: Partial<DdimOptions>;
}

/** A loaded text-to-image model. */
export interface TextToImage {
  /** The text encoder (with its LoRA adapters). */
  encoder: ClipLoraEncoder;
  /** The sampler. */
  sampler: DdimSampler;
  /** Images [B, H, W, 3] in [0, 1] for prompts at a seed (caller disposes). */
  generate(
    prompts: string[],
    options?: { seed?: number; negativePrompt?: string },
  ): Promise<Tensor4D>;
  /** Scores of images under a reward. */
  score(reward: Reward, images: Tensor4D, prompts: string[]): Promise<number[]>;
  /** Release all weights. */
  dispose(): void;
}

/**
 * Load the encoder and sampler of a diffusers folder.
 *
 * @example
 * ```ts
 * import { loadTextToImage } from "@texforce/core";
 * const m = await loadTextToImage("stable-diffusion-v1-5", {
 *   encoder: { adapters: [{ path: "runs/x/export/peft" }] },
 *   sampler: { steps: 25 },
 * });
 * const images = await m.generate(["a photo of a hand"], { seed: 1 });
 * m.dispose();
 * ```
 */
export async function loadTextToImage(
  modelPath: string,
  options: TextToImageOptions = {},
): Promise<TextToImage> {
  const encoder = await ClipLoraEncoder.load(modelPath, { train: false, ...options.encoder });
  let sampler: DdimSampler;
  try {
    sampler = await ddimSampler({ ...options.sampler, modelPath });
  } catch (e) {
    encoder.dispose();
    throw e;
  }
  return {
    encoder,
    sampler,
    async generate(prompts, o = {}) {
      const cond = tf.tidy(() => ({
        prompt: encoder.encode(prompts),
        negative: encoder.encode(prompts.map(() => o.negativePrompt ?? "")),
      }));
      try {
        const t = await sampler.sample(cond, { seed: o.seed });
        t.latents.dispose();
        t.logProbs.dispose();
        return t.images;
      } finally {
        cond.prompt.dispose();
        cond.negative.dispose();
      }
    },
    score: (reward, images, prompts) => reward.score({ images, prompts }),
    dispose() {
      sampler.dispose();
      encoder.dispose();
    },
  };
}
