/**
 * A colour-saturation reward plugin for {@link https://jsr.io/@texforce/core | texforce}: each
 * image scores the mean over its pixels of `max(r, g, b) - min(r, g, b)` (0 for greys, 1 for
 * pure colours), times `scale`.
 *
 * Use it in a pipeline by module specifier:
 *
 * ```yaml
 * rewards:
 *   - use: jsr:@example/saturation-reward   # in a checkout: ./custom_reward/mod.ts
 *     options: { scale: 2 }
 * ```
 *
 * The public types are spelled out here (rather than re-exporting `Plugin` and `Reward` from
 * texforce) so that the package documents itself completely: `deno doc --lint` passes.
 *
 * @example
 * ```ts
 * import plugin from "@example/saturation-reward";
 * const reward = plugin.create({ scale: 1 });
 * console.log(reward.name); // "saturation"
 * ```
 *
 * @module
 */
import { z } from "zod";
// A published version imports this from "jsr:@texforce/core/plugin" (types only: no model loads).
import type { Plugin } from "../../plugin.ts";

/**
 * Options of the saturation reward.
 *
 * @example
 * ```ts
 * import type { Options } from "@example/saturation-reward";
 * const options: Options = { scale: 2 };
 * ```
 */
export interface Options {
  /** Multiplies the score (default 1). */
  scale: number;
}

const defaults = { scale: 1 } satisfies Options;

/**
 * A batch of images as the reward reads it: a tfjs `Tensor4D` [B, H, W, 3] with values in
 * [0, 1].
 *
 * @example
 * ```ts
 * import type { ImageBatch } from "@example/saturation-reward";
 * const batch: ImageBatch = { shape: [1, 1, 1, 3], data: () => Promise.resolve([1, 0, 0]) };
 * ```
 */
export interface ImageBatch {
  /** [B, H, W, 3]. */
  readonly shape: readonly number[];
  /** The values, row-major NHWC. */
  data(): Promise<ArrayLike<number>>;
}

/**
 * The reward object (a texforce `Reward`).
 *
 * @example
 * ```ts
 * import { saturationReward, type SaturationReward } from "@example/saturation-reward";
 * const reward: SaturationReward = saturationReward();
 * ```
 */
export interface SaturationReward {
  /** `saturation`. */
  readonly name: string;
  /** One score per image. */
  score(input: { images: ImageBatch; prompts: string[] }): Promise<number[]>;
}

/**
 * The plugin definition (a texforce `Plugin<"reward", Options>`).
 *
 * @example
 * ```ts
 * import plugin, { type SaturationPlugin } from "@example/saturation-reward";
 * const p: SaturationPlugin = plugin;
 * console.log(p.kind, p.name); // reward saturation
 * ```
 */
export interface SaturationPlugin {
  /** Always `reward`. */
  readonly kind: "reward";
  /** Name in logs: `saturation`. */
  readonly name: string;
  /** Semver of the plugin. */
  readonly version: string;
  /** One line for listings. */
  readonly description: string;
  /** The zod schema of the options (`{ scale?: number }`, unknown keys rejected). */
  readonly options: {
    safeParse(value: unknown): { success: boolean; data?: Options; error?: unknown };
  };
  /** Create the reward from validated options. */
  create(options: Options): SaturationReward;
}

/**
 * Mean saturation `max(rgb) - min(rgb)` of each image of NHWC pixel data in [0, 1].
 *
 * @example
 * ```ts
 * import { meanSaturation } from "@example/saturation-reward";
 * console.log(meanSaturation([1, 0, 0, 0.5, 0.5, 0.5], 2)); // [1, 0]
 * ```
 */
export function meanSaturation(pixels: ArrayLike<number>, batch: number): number[] {
  const perImage = pixels.length / batch;
  if (!Number.isInteger(perImage) || perImage % 3 !== 0) {
    throw new Error(`saturation: ${pixels.length} values do not make ${batch} RGB images`);
  }
  const out: number[] = [];
  for (let b = 0; b < batch; b++) {
    let sum = 0;
    for (let i = b * perImage; i < (b + 1) * perImage; i += 3) {
      const [r, g, bl] = [pixels[i], pixels[i + 1], pixels[i + 2]];
      sum += Math.max(r, g, bl) - Math.min(r, g, bl);
    }
    out.push(sum / (perImage / 3));
  }
  return out;
}

/**
 * Create the saturation reward.
 *
 * @example
 * ```ts
 * import { saturationReward } from "@example/saturation-reward";
 * const red = { shape: [1, 1, 1, 3], data: () => Promise.resolve([1, 0, 0]) };
 * console.log(await saturationReward({ scale: 2 }).score({ images: red, prompts: ["red"] })); // [2]
 * ```
 */
export function saturationReward(options: Partial<Options> = {}): SaturationReward {
  const o: Options = { ...defaults, ...options };
  return {
    name: "saturation",
    async score({ images }: { images: ImageBatch; prompts: string[] }): Promise<number[]> {
      const [batch, , , channels] = images.shape;
      if (images.shape.length !== 4 || channels !== 3) {
        throw new Error(`saturation: expected images [B, H, W, 3], got [${images.shape}]`);
      }
      return meanSaturation(await images.data(), batch).map((s) => s * o.scale);
    },
  };
}

// Checked against texforce's Plugin type at compile time.
const definition = {
  kind: "reward" as const,
  name: "saturation",
  version: "0.1.0",
  description: "mean colour saturation max(rgb) - min(rgb), times scale",
  options: z.strictObject({ scale: z.number().positive().default(defaults.scale) }),
  create: (options: Options): SaturationReward => saturationReward(options),
} satisfies Plugin<"reward", Options>;

/**
 * The `saturation` reward plugin: the module's default export, which texforce loads.
 *
 * @example
 * ```ts
 * import plugin from "@example/saturation-reward";
 * console.log(plugin.kind, plugin.name, plugin.version); // reward saturation 0.1.0
 * ```
 */
const plugin: SaturationPlugin = definition;
export default plugin;
