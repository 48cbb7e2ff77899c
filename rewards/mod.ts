/**
 * Built-in rewards: DDPO's JPEG (in)compressibility, a brightness reward for tests, CLIP-based
 * aesthetic / clip-score / PickScore, HPSv2, ImageReward, face and hand (detectors from
 * `@vladmandic/human`), and a reward served over HTTP.
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
import { pickScorePlugin } from "./pickscore.ts";
import { hpsv2Plugin } from "./hpsv2.ts";
import { imageRewardPlugin } from "./imagereward.ts";
import { httpRewardPlugin } from "./http.ts";
import { facePlugin } from "./face.ts";
import { handPlugin } from "./hand.ts";

export * from "./brightness.ts";
export * from "./jpeg_compressibility.ts";
export * from "./aesthetic.ts";
export * from "./clip_score.ts";
export * from "./pickscore.ts";
export * from "./hpsv2.ts";
export * from "./imagereward.ts";
export * from "./http.ts";
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
    pickScorePlugin,
    hpsv2Plugin,
    imageRewardPlugin,
    httpRewardPlugin,
    facePlugin,
    handPlugin,
  ];
}
