/**
 * `brightness`: the mean pixel value of each image, a simple reward for tests and demos.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { z } from "zod";
import { definePlugin, type Plugin } from "../core/plugin.ts";
import type { Reward, RewardInput } from "../core/reward.ts";
import { checkImages } from "./_images.ts";

/**
 * Options of the brightness reward.
 *
 * @example
 * ```ts
 * import type { BrightnessOptions } from "@texforce/core/rewards";
 * const o: BrightnessOptions = { scale: 1, target: 0.5 };
 * ```
 */
export interface BrightnessOptions {
  /** Multiplies the reward (default 1). */
  scale: number;
  /** When set, the reward is `-scale * |mean - target|` (prefer this brightness) instead of `scale * mean`. */
  target?: number;
}

const defaults = { scale: 1 } satisfies BrightnessOptions;

/**
 * A reward that scores each image by its mean pixel value in [0, 1] (or by closeness to a
 * target brightness).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { brightnessReward } from "@texforce/core/rewards";
 * const r = brightnessReward();
 * console.log(await r.score({ images: tf.ones([1, 8, 8, 3]), prompts: ["x"] })); // [1]
 * ```
 */
export function brightnessReward(options: Partial<BrightnessOptions> = {}): Reward {
  const o: BrightnessOptions = { ...defaults, ...options };
  return {
    name: "brightness",
    async score({ images }: RewardInput): Promise<number[]> {
      checkImages("brightness", images);
      const means = tf.tidy(() => tf.mean(images, [1, 2, 3]));
      const values = Array.from(await means.data());
      means.dispose();
      return values.map((m) =>
        o.target === undefined ? o.scale * m : 0 - o.scale * Math.abs(m - o.target)
      );
    },
  };
}

/**
 * The `brightness` reward plugin.
 *
 * @example
 * ```yaml
 * rewards:
 *   - use: brightness
 *     options: { target: 0.7 }
 * ```
 */
export const brightnessPlugin: Plugin<"reward", BrightnessOptions> = definePlugin({
  kind: "reward",
  name: "brightness",
  version: "0.1.0",
  description: "mean pixel value in [0, 1] (or -|mean - target|)",
  options: z.strictObject({
    scale: z.number().default(defaults.scale),
    target: z.number().min(0).max(1).optional(),
  }),
  create: (options: BrightnessOptions): Reward => brightnessReward(options),
});
