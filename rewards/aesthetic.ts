/**
 * `aesthetic`: the LAION "improved aesthetic predictor" (an MLP over L2-normalised CLIP image
 * features, trained on SAC + LOGOS + AVA ratings; ViT-L/14 for the released head), as in
 * TexForce's and DDPO's aesthetic experiments. Higher means prettier (roughly 1…10).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { resolve } from "node:path";
import { z } from "zod";
import { definePlugin, type Plugin, type PluginIssue } from "../core/plugin.ts";
import { clipModelIssues, weightsFileIssues } from "./_clip_files.ts";
import type { Reward, RewardInput } from "../core/reward.ts";
import { openWeights } from "../core/io/weights.ts";
import { l2Normalize } from "../adapters/clip/clip_vision_model.ts";
import type { ModelCache } from "../core/model_cache.ts";
import { sharedClipModel } from "./_shared_models.ts";
import { ClipImageProcessor } from "../adapters/clip/clip_image_processor.ts";
import { disposeLinear, linear, type LinearWeights } from "../adapters/nn/linear.ts";
import { WeightReader } from "../adapters/nn/weight_reader.ts";
import type { Tensor1D, Tensor2D } from "../core/tensor_types.ts";
import { checkImages } from "./_images.ts";

/**
 * Options of the aesthetic reward.
 *
 * @example
 * ```ts
 * import type { AestheticOptions } from "@texforce/core/rewards";
 * const o: AestheticOptions = {
 *   clipModel: "models/clip-vit-large-patch14",
 *   head: "models/sac+logos+ava1-l14-linearMSE.safetensors",
 * };
 * ```
 */
export interface AestheticOptions {
  /** A transformers `CLIPModel` folder (config.json, model.safetensors, preprocessor_config.json). */
  clipModel: string;
  /** The aesthetic MLP as safetensors (`layers.{0,2,4,6,7}.{weight,bias}`). */
  head: string;
}

// The head's Linear layers (Dropouts sit at 1, 3, 5); it has no activations between them.
const HEAD_LAYERS = [0, 2, 4, 6, 7];

/**
 * Load the LAION aesthetic MLP from safetensors; its input width must equal `inputDim`.
 *
 * @example
 * ```ts
 * import { loadAestheticHead } from "@texforce/core/rewards";
 * const head = await loadAestheticHead("sac+logos+ava1-l14-linearMSE.safetensors", 768);
 * ```
 */
export async function loadAestheticHead(path: string, inputDim: number): Promise<LinearWeights[]> {
  const source = await openWeights(path);
  const layers: LinearWeights[] = [];
  try {
    const r = new WeightReader(source);
    let width = inputDim;
    for (const i of HEAD_LAYERS) {
      const key = `layers.${i}.weight`;
      if (!r.has(key)) {
        throw new Error(
          `${path}: missing weight '${key}' (expected the LAION aesthetic MLP, ` +
            `layers.{${HEAD_LAYERS.join(",")}}.{weight,bias})`,
        );
      }
      const shape = source.info(key).shape;
      if (shape.length !== 2 || shape[1] !== width) {
        throw new Error(
          `${path}: '${key}' has shape ${JSON.stringify(shape)}, expected [*, ${width}] ` +
            `(the CLIP model's projection_dim is ${inputDim})`,
        );
      }
      const w = await r.tensor(key);
      const b = await r.tensor(`layers.${i}.bias`, [shape[0]]);
      layers.push({ weight: tf.tidy(() => w.transpose() as Tensor2D), bias: b as Tensor1D });
      w.dispose();
      width = shape[0];
    }
    if (width !== 1) throw new Error(`${path}: the last layer has ${width} outputs, expected 1`);
    return layers;
  } catch (e) {
    for (const l of layers) disposeLinear(l);
    throw e;
  } finally {
    source.close();
  }
}

/**
 * A reward that scores each image with the LAION aesthetic predictor: the image is quantised
 * to 8 bits, processed as `CLIPImageProcessor` does, embedded by CLIP, L2-normalised, and
 * passed through the head. Paths resolve against `baseDir` (default: the working directory);
 * with `models` (the run's cache) the CLIP is shared with other rewards on the same folder.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { aestheticReward } from "@texforce/core/rewards";
 * const r = await aestheticReward({
 *   clipModel: "models/clip-vit-large-patch14",
 *   head: "models/sac+logos+ava1-l14-linearMSE.safetensors",
 * });
 * console.log(await r.score({ images: tf.ones([1, 512, 512, 3]), prompts: ["a cat"] }));
 * r.dispose?.();
 * ```
 */
export async function aestheticReward(
  options: AestheticOptions,
  baseDir: string = Deno.cwd(),
  models?: ModelCache,
): Promise<Reward> {
  const clipDir = resolve(baseDir, options.clipModel);
  const headPath = resolve(baseDir, options.head);
  const wrap = (e: unknown): never => {
    throw new Error(`aesthetic: ${(e as Error).message}`, { cause: e });
  };
  const processor = await ClipImageProcessor.load(clipDir).catch(wrap);
  const shared = await sharedClipModel(models, clipDir).catch(wrap);
  const clip = shared.value;
  let head: LinearWeights[];
  try {
    head = await loadAestheticHead(headPath, clip.projectionDim);
  } catch (e) {
    shared.release();
    return wrap(e);
  }
  return {
    name: "aesthetic",
    async score({ images }: RewardInput): Promise<number[]> {
      checkImages("aesthetic", images);
      const pixels = await processor.preprocess(images);
      const scores = tf.tidy(() => {
        let x: tf.Tensor = l2Normalize(clip.imageFeatures(pixels));
        for (const layer of head) x = linear(x, layer);
        return x.reshape([-1]);
      });
      pixels.dispose();
      const values = Array.from(await scores.data());
      scores.dispose();
      return values;
    },
    dispose(): void {
      shared.release();
      for (const l of head) disposeLinear(l);
    },
  };
}

/**
 * The `aesthetic` reward plugin (paths relative to the pipeline file's folder).
 *
 * @example
 * ```yaml
 * rewards:
 *   - use: aesthetic
 *     options:
 *       clipModel: ../models/clip-vit-large-patch14
 *       head: ../models/sac+logos+ava1-l14-linearMSE.safetensors
 * ```
 */
export const aestheticPlugin: Plugin<"reward", AestheticOptions> = definePlugin({
  kind: "reward",
  name: "aesthetic",
  version: "0.1.0",
  description: "LAION improved aesthetic predictor over CLIP image features",
  options: z.strictObject({
    clipModel: z.string().min(1),
    head: z.string().min(1),
  }),
  create: (options: AestheticOptions, context): Promise<Reward> =>
    aestheticReward(options, context.baseDir, context.models),
  preflight: async (options: AestheticOptions, context): Promise<PluginIssue[]> => [
    ...await clipModelIssues(context.baseDir, "clipModel", options.clipModel),
    ...await weightsFileIssues(context.baseDir, "head", options.head, "layers.0.weight"),
  ],
});
