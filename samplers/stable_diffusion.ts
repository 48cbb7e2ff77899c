/**
 * Loading the frozen parts of a Stable Diffusion pipeline folder once (UNet, VAE decoder,
 * scheduler config), so the sampler, the trainer and the CLI can share the weights.
 *
 * @module
 */
import { readComponentConfig, readModelFolder, requireComponent } from "../core/io/model_folder.ts";
import { join } from "node:path";
import { loadUNetLora, UNet2DConditionModel } from "../adapters/unet/unet_2d_condition.ts";
import { VaeDecoder } from "../adapters/vae/vae_decoder.ts";
import { type DdimSchedulerConfig, parseDdimSchedulerConfig } from "./ddim_scheduler.ts";

/**
 * The frozen diffusion model of a pipeline folder.
 *
 * @example
 * ```ts
 * import { loadStableDiffusion, type StableDiffusion } from "@texforce/core/samplers";
 * const sd: StableDiffusion = await loadStableDiffusion("sd15");
 * console.log(sd.vae?.upscale); // 8
 * ```
 */
export interface StableDiffusion {
  /** The pipeline folder. */
  path: string;
  /** The denoiser. */
  unet: UNet2DConditionModel;
  /** The VAE decoder, or null for a pixel-space model (images = clamp(x/2 + 0.5)). */
  vae: VaeDecoder | null;
  /** The scheduler config (read as `DDIMScheduler.from_config` reads it). */
  schedulerConfig: DdimSchedulerConfig;
  /** Release the weights. */
  dispose(): void;
}

/**
 * Options of {@linkcode loadStableDiffusion}.
 *
 * @example
 * ```ts
 * import { loadStableDiffusion, type LoadStableDiffusionOptions } from "@texforce/core/samplers";
 * const o: LoadStableDiffusionOptions = { unetLora: "style_lora.safetensors", unetLoraScale: 0.8 };
 * const sd = await loadStableDiffusion("sd15", o);
 * ```
 */
export interface LoadStableDiffusionOptions {
  /** Weight variant, e.g. `fp16`. */
  variant?: string;
  /** A UNet LoRA (file or PEFT folder) to merge into the UNet. */
  unetLora?: string;
  /** Its scale (default 1). */
  unetLoraScale?: number;
}

/**
 * Load the UNet, the VAE decoder (when the pipeline has one) and the scheduler config of a
 * diffusers pipeline folder, optionally merging a UNet LoRA.
 *
 * @example
 * ```ts
 * import { loadStableDiffusion } from "@texforce/core/samplers";
 * const sd = await loadStableDiffusion("stable-diffusion-v1-5");
 * console.log(sd.unet.config.crossAttentionDim[0]); // 768
 * sd.dispose();
 * ```
 */
export async function loadStableDiffusion(
  modelPath: string,
  options: LoadStableDiffusionOptions = {},
): Promise<StableDiffusion> {
  const folder = await readModelFolder(modelPath);
  const unetDir = requireComponent(folder, "unet").path;
  const scheduler = requireComponent(folder, "scheduler");
  const schedulerConfig = parseDdimSchedulerConfig(
    await readComponentConfig(folder, "scheduler"),
    join(scheduler.path, "scheduler_config.json"),
  );
  const unet = await UNet2DConditionModel.load(unetDir, { variant: options.variant });
  let vae: VaeDecoder | null = null;
  try {
    if (folder.components.vae) {
      vae = await VaeDecoder.load(folder.components.vae.path, { variant: options.variant });
      if (vae.config.latentChannels !== unet.config.outChannels) {
        throw new Error(
          `${join(folder.components.vae.path, "config.json")}: field 'latent_channels' = ` +
            `${vae.config.latentChannels} does not match the UNet's out_channels ` +
            `${unet.config.outChannels}`,
        );
      }
    } else if (unet.config.outChannels !== 3) {
      throw new Error(
        `${join(folder.path, "model_index.json")}: the pipeline has no 'vae', so the UNet must ` +
          `work on RGB pixels, but its out_channels is ${unet.config.outChannels}`,
      );
    }
    if (options.unetLora) {
      unet.mergeLora(await loadUNetLora(options.unetLora), options.unetLoraScale ?? 1);
    }
    // Small models on a threaded wasm backend: whole samples over the cores
    // (UNet2DConditionModel.startSampleWorkers).
    await unet.startDefaultSampleWorkers();
  } catch (e) {
    unet.dispose();
    vae?.dispose();
    throw e;
  }
  return {
    path: folder.path,
    unet,
    vae,
    schedulerConfig,
    dispose() {
      unet.dispose();
      vae?.dispose();
    },
  };
}
