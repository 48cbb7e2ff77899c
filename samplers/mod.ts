/**
 * Samplers: the `ddim` sampler plugin, the DDIM scheduler with DDPO log-probs, the seeded noise
 * generator, and loading of a Stable Diffusion pipeline's frozen parts (UNet, VAE decoder).
 *
 * @example
 * ```ts
 * import { ddimSampler } from "@texforce/core/samplers";
 * const sampler = await ddimSampler({ modelPath: "stable-diffusion-v1-5", steps: 50 });
 * ```
 *
 * @module
 */
export * from "./ddim_scheduler.ts";
export * from "../core/seeded_noise.ts";
export * from "./stable_diffusion.ts";
export {
  DdimSampler,
  ddimSampler,
  ddimSamplerPlugin,
  type Options as DdimSamplerOptions,
} from "./ddim_sampler.ts";
export * from "./text_to_image.ts";
