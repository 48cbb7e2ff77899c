/**
 * The shapes model's architecture: the configs written into its diffusers folder.
 *
 * Pixel space (3 × 32 × 32, no VAE): at 32 × 32 the scenes are legible, a UNet on pixels is as
 * cheap as one on a 4 × 8 × 8 latent of a VAE would be, and there is no VAE to train, store or
 * run (decoding would cost more than the UNet on two CPU cores, and a VAE's blur would make
 * colours and outlines harder to score).
 *
 * @example
 * ```ts
 * import { UNET_CONFIG } from "./model_spec.ts";
 * console.log(UNET_CONFIG.block_out_channels);
 * ```
 *
 * @module
 */

/** Tokens per caption (bos + at most 13 words + eos, padded). */
export const MAX_TOKENS = 16;

/** `text_encoder/config.json` without the vocabulary fields (added from the trained BPE). */
export const TEXT_ENCODER_CONFIG: Record<string, unknown> = {
  architectures: ["CLIPTextModel"],
  attention_dropout: 0.0,
  dropout: 0.0,
  hidden_act: "quick_gelu",
  hidden_size: 64,
  initializer_factor: 1.0,
  initializer_range: 0.02,
  intermediate_size: 128,
  layer_norm_eps: 1e-5,
  max_position_embeddings: MAX_TOKENS,
  model_type: "clip_text_model",
  num_attention_heads: 4,
  num_hidden_layers: 2,
  projection_dim: 64,
  torch_dtype: "float16",
  transformers_version: "4.46.0",
};

/** `unet/config.json`. */
export const UNET_CONFIG: Record<string, unknown> = {
  _class_name: "UNet2DConditionModel",
  _diffusers_version: "0.31.0",
  act_fn: "silu",
  attention_head_dim: 2,
  block_out_channels: [16, 32, 32],
  center_input_sample: false,
  cross_attention_dim: 64,
  down_block_types: ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
  downsample_padding: 1,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 3,
  layers_per_block: 1,
  mid_block_scale_factor: 1,
  mid_block_type: "UNetMidBlock2DCrossAttn",
  norm_eps: 1e-5,
  norm_num_groups: 8,
  out_channels: 3,
  sample_size: 32,
  transformer_layers_per_block: 1,
  up_block_types: ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
  use_linear_projection: true,
};

/**
 * `scheduler/scheduler_config.json`: DDPM's linear betas for pixels, and x₀-prediction
 * (`sample`): with the few hundred steps two shared cores allow, a UNet trained to predict the
 * clean image already gives the caption's background and colours where an ε-predictor still
 * gives noise (its errors at small t are amplified by 1/√ᾱ when sampling).
 */
export const SCHEDULER_CONFIG: Record<string, unknown> = {
  _class_name: "DDIMScheduler",
  _diffusers_version: "0.31.0",
  beta_end: 0.02,
  beta_schedule: "linear",
  beta_start: 0.0001,
  clip_sample: true,
  clip_sample_range: 1.0,
  num_train_timesteps: 1000,
  prediction_type: "sample",
  set_alpha_to_one: false,
  steps_offset: 1,
  timestep_spacing: "leading",
  trained_betas: null,
};

/** `model_index.json`: a pipeline without a VAE. */
export const MODEL_INDEX: Record<string, unknown> = {
  _class_name: "StableDiffusionPipeline",
  _diffusers_version: "0.31.0",
  scheduler: ["diffusers", "DDIMScheduler"],
  text_encoder: ["transformers", "CLIPTextModel"],
  tokenizer: ["transformers", "CLIPTokenizer"],
  unet: ["diffusers", "UNet2DConditionModel"],
};
