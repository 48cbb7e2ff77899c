/**
 * Built-in rewards: DDPO's JPEG (in)compressibility, LAION aesthetic, CLIP score, face and hand
 * (detectors from `@vladmandic/human`), and a brightness reward for tests.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { jpegCompressibilityReward } from "@texforce/core/rewards";
 * const scores = await jpegCompressibilityReward().score({
 *   images: tf.zeros([1, 32, 32, 3]),
 *   prompts: ["a cat"],
 * });
 * ```
 *
 * @module
 */
import type { AnyPlugin } from "../core/plugin.ts";
import { brightnessPlugin } from "./brightness.ts";
import { jpegCompressibilityPlugin, jpegIncompressibilityPlugin } from "./jpeg_compressibility.ts";
import { aestheticPlugin } from "./aesthetic.ts";
import { clipScorePlugin } from "./clip_score.ts";
import { facePlugin } from "./face.ts";
import { handPlugin } from "./hand.ts";

export * from "./brightness.ts";
export * from "./jpeg_compressibility.ts";
export * from "./aesthetic.ts";
export * from "./clip_score.ts";
export * from "./face.ts";
export * from "./hand.ts";
export type { ModelRecord } from "./_human_models.ts";

/**
 * Every built-in reward plugin.
 *
 * @example
 * ```ts
 * import { rewardPlugins } from "@texforce/core/rewards";
 * console.log(rewardPlugins().map((p) => p.name));
 * ```
 */
export function rewardPlugins(): AnyPlugin[] {
  return [
    brightnessPlugin,
    jpegCompressibilityPlugin,
    jpegIncompressibilityPlugin,
    aestheticPlugin,
    clipScorePlugin,
    facePlugin,
    handPlugin,
  ];
}
