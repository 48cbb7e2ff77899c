/**
 * DDPO's JPEG (in)compressibility rewards: each image is encoded as a JPEG (quality 95) and
 * scored by its size in kB (1 kB = 1000 bytes). `jpeg-compressibility` rewards small files
 * (`-kB`), `jpeg-incompressibility` large ones (`+kB`).
 *
 * @module
 */
import { z } from "zod";
import { definePlugin, type Plugin } from "../core/plugin.ts";
import type { Reward, RewardInput } from "../core/reward.ts";
import { checkImages, toUint8 } from "./_images.ts";

/**
 * Options of the JPEG rewards.
 *
 * @example
 * ```ts
 * import type { JpegCompressibilityOptions } from "@texforce/core/rewards";
 * const o: JpegCompressibilityOptions = { quality: 95 };
 * ```
 */
export interface JpegCompressibilityOptions {
  /** JPEG quality 1–100 (default 95, as in DDPO). */
  quality: number;
}

const defaults = { quality: 95 } satisfies JpegCompressibilityOptions;

type SharpFactory = typeof import("sharp").default;
let sharpModule: Promise<SharpFactory> | undefined;

// sharp is a native module: load it only when a JPEG reward scores its first batch.
function loadSharp(): Promise<SharpFactory> {
  sharpModule ??= import("sharp").then((m) => m.default).catch((e) => {
    sharpModule = undefined;
    throw new Error(
      `jpeg rewards need the 'sharp' npm package, which failed to load: ${(e as Error).message}`,
    );
  });
  return sharpModule;
}

/**
 * JPEG size in kB of each image of a batch [B, H, W, 3] in [0, 1].
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { jpegSizesKb } from "@texforce/core/rewards";
 * console.log(await jpegSizesKb(tf.zeros([2, 32, 32, 3]), 95));
 * ```
 */
export async function jpegSizesKb(images: RewardInput["images"], quality = 95): Promise<number[]> {
  const [batch, height, width] = checkImages("jpeg", images);
  const sharp = await loadSharp();
  const pixels = toUint8(await images.data() as Float32Array);
  const per = height * width * 3;
  const sizes: Promise<number>[] = [];
  for (let b = 0; b < batch; b++) {
    const raw = pixels.subarray(b * per, (b + 1) * per);
    sizes.push(
      sharp(raw, { raw: { width, height, channels: 3 } })
        .jpeg({ quality })
        .toBuffer()
        .then((buf) => buf.length / 1000),
    );
  }
  return await Promise.all(sizes);
}

/**
 * DDPO's JPEG compressibility reward: `-(JPEG size in kB)`, higher for simpler images.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { jpegCompressibilityReward } from "@texforce/core/rewards";
 * const r = jpegCompressibilityReward({ quality: 95 });
 * console.log(await r.score({ images: tf.zeros([1, 64, 64, 3]), prompts: ["x"] }));
 * ```
 */
export function jpegCompressibilityReward(
  options: Partial<JpegCompressibilityOptions> = {},
): Reward {
  const o: JpegCompressibilityOptions = { ...defaults, ...options };
  return {
    name: "jpeg-compressibility",
    score: async ({ images }: RewardInput): Promise<number[]> =>
      (await jpegSizesKb(images, o.quality)).map((kb) => -kb),
  };
}

/**
 * DDPO's JPEG incompressibility reward: `+(JPEG size in kB)`, higher for detailed images.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { jpegIncompressibilityReward } from "@texforce/core/rewards";
 * const r = jpegIncompressibilityReward();
 * console.log(await r.score({ images: tf.randomUniform([1, 64, 64, 3]) as tf.Tensor4D, prompts: ["x"] }));
 * ```
 */
export function jpegIncompressibilityReward(
  options: Partial<JpegCompressibilityOptions> = {},
): Reward {
  const o: JpegCompressibilityOptions = { ...defaults, ...options };
  return {
    name: "jpeg-incompressibility",
    score: async ({ images }: RewardInput): Promise<number[]> =>
      await jpegSizesKb(images, o.quality),
  };
}

const optionsSchema = z.strictObject({
  quality: z.int().min(1).max(100).default(defaults.quality),
});

/**
 * The `jpeg-compressibility` reward plugin.
 *
 * @example
 * ```yaml
 * rewards:
 *   - use: jpeg-compressibility
 *     options: { quality: 95 }
 * ```
 */
export const jpegCompressibilityPlugin: Plugin<"reward", JpegCompressibilityOptions> = definePlugin(
  {
    kind: "reward",
    name: "jpeg-compressibility",
    version: "0.1.0",
    description: "-(JPEG size in kB) at quality 95 (DDPO)",
    options: optionsSchema,
    create: (options: JpegCompressibilityOptions): Reward => jpegCompressibilityReward(options),
  },
);

/**
 * The `jpeg-incompressibility` reward plugin.
 *
 * @example
 * ```yaml
 * rewards:
 *   - use: jpeg-incompressibility
 * ```
 */
export const jpegIncompressibilityPlugin: Plugin<"reward", JpegCompressibilityOptions> =
  definePlugin({
    kind: "reward",
    name: "jpeg-incompressibility",
    version: "0.1.0",
    description: "+(JPEG size in kB) at quality 95 (DDPO)",
    options: optionsSchema,
    create: (options: JpegCompressibilityOptions): Reward => jpegIncompressibilityReward(options),
  });
