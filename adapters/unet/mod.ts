/**
 * The building blocks of the Stable Diffusion UNet and VAE decoder (diffusers layouts, NHWC):
 * attention, resnet blocks, resampling, the timestep embedding, `Transformer2DModel`, the
 * down/mid/up blocks, the config parser, UNet LoRA loading/merging and a random-weight reader
 * for benchmarks. The models themselves are in `./unet_2d_condition.ts` and
 * `../vae/vae_decoder.ts`.
 *
 * @example
 * ```ts
 * import { parseUNetConfig, RandomWeightReader, UNet2DConditionModel } from "@texforce/core/adapters";
 * const unet = await UNet2DConditionModel.fromReader(parseUNetConfig({}), new RandomWeightReader(0));
 * ```
 *
 * @module
 */
export * from "./attention.ts";
export * from "./resample.ts";
export * from "./resnet_block.ts";
export * from "./timestep_embedding.ts";
export * from "./transformer_2d.ts";
export * from "./unet_blocks.ts";
export * from "./unet_config.ts";
export * from "./unet_lora.ts";
export * from "./random_weight_reader.ts";
