/**
 * The `Reward` interface: scores a batch of generated images (and their prompts).
 *
 * @module
 */
import type { Tensor4D } from "./tensor_types.ts";

/** What a reward sees of a batch. */
export interface RewardInput {
  /** Images [B, H, W, 3] (NHWC), float32 in [0, 1]. Owned by the caller: do not dispose. */
  images: Tensor4D;
  /** The prompt of each image. */
  prompts: string[];
}

/**
 * A reward function. Higher is better. Scores are plain numbers, one per image.
 *
 * @example
 * ```ts
 * import type { Reward } from "@texforce/core";
 * const brightness: Reward = {
 *   name: "brightness",
 *   score: async ({ images }) => Array.from(await images.mean([1, 2, 3]).data()),
 * };
 * ```
 */
export interface Reward {
  /** Name used in logs and metrics. */
  readonly name: string;
  /** One score per image. */
  score(input: RewardInput): Promise<number[]>;
  /**
   * What a run records about the reward (written to the run's `run.json`): e.g. the models it
   * loaded with their names, versions and files, and the options in force. JSON-serialisable.
   */
  readonly metadata?: Readonly<Record<string, unknown>>;
  /** Release models or tensors the reward holds. */
  dispose?(): void;
}
