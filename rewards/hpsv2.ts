/**
 * `hpsv2`: Human Preference Score v2 / v2.1 (Wu et al. 2023), the cosine of an open_clip
 * ViT-H-14's normalised image and prompt embeddings, as HPSv2's `img_score.py` computes it
 * (no logit scale; roughly 0.2…0.3 for real images).
 *
 * The weights are `HPS_v2_compressed.pt` / `HPS_v2.1_compressed.pt`, a pickle the project never
 * loads: convert its `state_dict` once with PyTorch and safetensors installed,
 *
 * ```sh
 * python -c "import torch; from safetensors.torch import save_file; sd = torch.load('HPS_v2_compressed.pt', map_location='cpu', weights_only=True)['state_dict']; save_file({k.removeprefix('module.'): v.float().contiguous() for k, v in sd.items()}, 'HPS_v2.safetensors')"
 * ```
 *
 * and point `checkpoint` at the `.safetensors` file. `bpe` is open_clip's
 * `bpe_simple_vocab_16e6.txt.gz` (in the `open_clip` / `hpsv2` Python packages).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { resolve } from "node:path";
import { z } from "zod";
import { definePlugin, type Plugin } from "../core/plugin.ts";
import type { Reward, RewardInput } from "../core/reward.ts";
import { ModelCache } from "../core/model_cache.ts";
import { l2Normalize } from "../adapters/clip/clip_vision_model.ts";
import { loadOpenClip, type OpenClipConfig } from "../adapters/clip/open_clip.ts";
import { OpenClipTokenizer } from "../adapters/clip/open_clip_tokenizer.ts";
import { openClipTransform } from "../adapters/clip/open_clip_image_transform.ts";
import type { ClipModel } from "../adapters/clip/clip_vision_model.ts";
import { checkImages, toUint8 } from "./_images.ts";

/**
 * Options of the hpsv2 reward.
 *
 * @example
 * ```ts
 * import type { Hpsv2Options } from "@texforce/core/rewards";
 * const o: Hpsv2Options = {
 *   checkpoint: "models/HPS_v2.1.safetensors",
 *   bpe: "models/bpe_simple_vocab_16e6.txt.gz",
 *   antialias: false,
 *   preprocess: "resize-max-pad",
 * };
 * ```
 */
export interface Hpsv2Options {
  /** The converted `HPS_v2*_compressed.pt` state dict as safetensors (open_clip key names). */
  checkpoint: string;
  /** open_clip model config (`ViT-H-14.json` format); default: ViT-H-14's, built in. */
  modelConfig?: string;
  /** open_clip's `bpe_simple_vocab_16e6.txt.gz`. */
  bpe: string;
  /**
   * Antialiasing of the tensor bicubic resize. false (default): what torchvision ≤ 0.16 did and
   * what HPSv2 was trained and evaluated with; true: what `img_score.py` gets with torchvision
   * ≥ 0.17. They differ noticeably on detailed images.
   */
  antialias: boolean;
  /** `resize-max-pad` (default, `img_score.py`'s transform) or open_clip's `resize-center-crop`. */
  preprocess: "resize-max-pad" | "resize-center-crop";
}

const defaults = {
  antialias: false,
  preprocess: "resize-max-pad",
} satisfies Partial<Hpsv2Options>;

/**
 * open_clip's `ViT-H-14.json`, the architecture of every HPSv2 release.
 *
 * @example
 * ```ts
 * import { VIT_H_14_CONFIG } from "@texforce/core/rewards";
 * import { parseOpenClipConfig } from "@texforce/core/adapters";
 * console.log(parseOpenClipConfig(VIT_H_14_CONFIG, "ViT-H-14").vision.numHiddenLayers); // 32
 * ```
 */
export const VIT_H_14_CONFIG: Record<string, unknown> = {
  embed_dim: 1024,
  vision_cfg: { image_size: 224, layers: 32, width: 1280, head_width: 80, patch_size: 14 },
  text_cfg: { context_length: 77, vocab_size: 49408, width: 1024, heads: 16, layers: 24 },
};

/**
 * A reward that scores each (image, prompt) pair with HPSv2. Paths resolve against `baseDir`.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { hpsv2Reward } from "@texforce/core/rewards";
 * const r = await hpsv2Reward({
 *   checkpoint: "models/HPS_v2.1.safetensors",
 *   bpe: "models/bpe_simple_vocab_16e6.txt.gz",
 * });
 * console.log(await r.score({ images: tf.ones([1, 512, 512, 3]), prompts: ["a white square"] }));
 * r.dispose?.();
 * ```
 */
export async function hpsv2Reward(
  options: Pick<Hpsv2Options, "checkpoint" | "bpe"> & Partial<Hpsv2Options>,
  baseDir: string = Deno.cwd(),
  models?: ModelCache,
): Promise<Reward> {
  const o: Hpsv2Options = { ...defaults, ...options };
  const wrap = (e: unknown): never => {
    throw new Error(`hpsv2: ${(e as Error).message}`, { cause: e });
  };
  const checkpoint = resolve(baseDir, o.checkpoint);
  const configPath = o.modelConfig ? resolve(baseDir, o.modelConfig) : undefined;
  const shared = await (models ?? new ModelCache()).acquire(
    `open-clip:${checkpoint}:${configPath ?? "ViT-H-14"}`,
    () => loadOpenClip(checkpoint, configPath ?? VIT_H_14_CONFIG),
    (m: { clip: ClipModel; config: OpenClipConfig }) => m.clip.dispose(),
  ).catch(wrap);
  const { clip, config } = shared.value;
  let tokenizer: OpenClipTokenizer;
  try {
    tokenizer = await OpenClipTokenizer.load(
      resolve(baseDir, o.bpe),
      config.text.maxPositionEmbeddings,
    );
  } catch (e) {
    shared.release();
    return wrap(e);
  }
  const size = config.vision.imageSize;
  return {
    name: "hpsv2",
    async score({ images, prompts }: RewardInput): Promise<number[]> {
      const [b, h, w] = checkImages("hpsv2", images);
      if (prompts.length !== b) throw new Error(`hpsv2: ${b} images but ${prompts.length} prompts`);
      // img_score.py reads PIL images: quantise to 8 bits as a saved image would be.
      const bytes = toUint8(await images.data() as Float32Array);
      const per = h * w * 3;
      const chw = new Float32Array(b * 3 * size * size);
      for (let i = 0; i < b; i++) {
        chw.set(
          openClipTransform(bytes.subarray(i * per, (i + 1) * per), h, w, {
            size,
            mode: o.preprocess,
            antialias: o.antialias,
          }),
          i * 3 * size * size,
        );
      }
      const ids = tf.tensor2d(tokenizer.encodeBatch(prompts), undefined, "int32");
      const scores = tf.tidy(() => {
        const pixels = tf.tensor4d(chw, [b, 3, size, size]).transpose([0, 2, 3, 1]) as tf.Tensor4D;
        const img = l2Normalize(clip.imageFeatures(pixels));
        const txt = l2Normalize(clip.textFeatures(ids));
        return tf.sum(tf.mul(img, txt), -1);
      });
      ids.dispose();
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
 * The `hpsv2` reward plugin (paths relative to the pipeline file's folder).
 *
 * @example
 * ```yaml
 * rewards:
 *   - use: hpsv2
 *     options:
 *       checkpoint: ../models/HPS_v2.1.safetensors
 *       bpe: ../models/bpe_simple_vocab_16e6.txt.gz
 * ```
 */
export const hpsv2Plugin: Plugin<"reward", Hpsv2Options> = definePlugin({
  kind: "reward",
  name: "hpsv2",
  version: "0.1.0",
  description: "HPSv2: cosine of open_clip ViT-H-14 image and prompt embeddings",
  options: z.strictObject({
    checkpoint: z.string().min(1),
    modelConfig: z.string().min(1).optional(),
    bpe: z.string().min(1),
    antialias: z.boolean().default(defaults.antialias),
    preprocess: z.enum(["resize-max-pad", "resize-center-crop"]).default(defaults.preprocess),
  }),
  create: (options: Hpsv2Options, context): Promise<Reward> =>
    hpsv2Reward(options, context.baseDir, context.models),
});
