/**
 * The shapes-world alignment reward as a texforce reward plugin, loaded by module specifier
 * exactly as a third-party plugin would be:
 *
 * ```yaml
 * rewards:
 *   - use: ./shapes/reward.ts          # published: jsr:@example/shapes-alignment
 *     options: { attribute: combined }
 * ```
 *
 * Each image scores its alignment with its caption ({@link ./alignment.ts}): one attribute
 * (`background`, `count`, `colour`, `shape`, `size`, `position`) or their mean, `combined`
 * (the default). An attribute the caption does not state scores `na` (default 1, so it neither
 * helps nor hurts). Deterministic, no learned model, about 2 ms per 32 × 32 image.
 *
 * @example
 * ```ts
 * import plugin from "./reward.ts";
 * const reward = plugin.create({ attribute: "combined", na: 1 });
 * console.log(reward.name); // "shapes-alignment"
 * ```
 *
 * @module
 */
import { z } from "zod";
import type { Plugin } from "../../mod.ts";
import { alignment, ATTRIBUTES } from "./alignment.ts";

/** What the reward scores. */
export type Target = typeof ATTRIBUTES[number] | "combined";

/**
 * Options of the alignment reward.
 *
 * @example
 * ```ts
 * import type { Options } from "./reward.ts";
 * const o: Options = { attribute: "colour", na: 1 };
 * ```
 */
export interface Options {
  /** One attribute, or `combined` (their mean). */
  attribute: Target;
  /** Score of an attribute the caption does not state. */
  na: number;
}

const defaults = { attribute: "combined", na: 1 } satisfies Options;

/**
 * A batch of images as the reward reads it: [B, H, W, 3] in [0, 1].
 *
 * @example
 * ```ts
 * import type { ImageBatch } from "./reward.ts";
 * const b: ImageBatch = { shape: [1, 1, 1, 3], data: () => Promise.resolve([0, 0, 0]) };
 * ```
 */
export interface ImageBatch {
  /** [B, H, W, 3]. */
  readonly shape: readonly number[];
  /** Values, row-major NHWC. */
  data(): Promise<ArrayLike<number>>;
}

/**
 * The reward object (a texforce `Reward`).
 *
 * @example
 * ```ts
 * import { alignmentReward, type AlignmentReward } from "./reward.ts";
 * const r: AlignmentReward = alignmentReward();
 * ```
 */
export interface AlignmentReward {
  /** `shapes-alignment`, or `shapes-<attribute>`. */
  readonly name: string;
  /** One score per image. */
  score(input: { images: ImageBatch; prompts: string[] }): Promise<number[]>;
}

/**
 * Create the reward.
 *
 * @example
 * ```ts
 * import { alignmentReward } from "./reward.ts";
 * const black = { shape: [1, 32, 32, 3], data: () => Promise.resolve(new Float32Array(3072)) };
 * const [s] = await alignmentReward().score({
 *   images: black,
 *   prompts: ["a red circle on a black background"],
 * });
 * console.log(s); // 0.25: right background, nothing else
 * ```
 */
export function alignmentReward(options: Partial<Options> = {}): AlignmentReward {
  const o: Options = { ...defaults, ...options };
  return {
    name: o.attribute === "combined" ? "shapes-alignment" : `shapes-${o.attribute}`,
    async score({ images, prompts }): Promise<number[]> {
      const [b, h, w, c] = images.shape;
      if (images.shape.length !== 4 || c !== 3) {
        throw new Error(`shapes-alignment: expected images [B, H, W, 3], got [${images.shape}]`);
      }
      if (prompts.length !== b) {
        throw new Error(`shapes-alignment: ${prompts.length} prompts for ${b} images`);
      }
      const data = await images.data();
      const per = h * w * 3;
      return prompts.map((p, i) => {
        const pixels = Array.prototype.slice.call(data, i * per, (i + 1) * per) as number[];
        const s = alignment(pixels, h, w, p);
        return (o.attribute === "combined" ? s.combined : s[o.attribute]) ?? o.na;
      });
    },
  };
}

const definition = {
  kind: "reward" as const,
  name: "shapes-alignment",
  version: "0.1.0",
  description: "alignment of a shapes-world image with its caption (per attribute or combined)",
  options: z.strictObject({
    attribute: z.enum([...ATTRIBUTES, "combined"]).default(defaults.attribute),
    na: z.number().min(0).max(1).default(defaults.na),
  }),
  create: (options: Options): AlignmentReward => alignmentReward(options),
} satisfies Plugin<"reward", Options>;

/**
 * The plugin: the module's default export, which texforce loads.
 *
 * @example
 * ```ts
 * import plugin from "./reward.ts";
 * console.log(plugin.kind, plugin.name); // reward shapes-alignment
 * ```
 */
const plugin: typeof definition = definition;
export default plugin;
