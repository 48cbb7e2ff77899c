/**
 * Models behind the core interfaces: CLIP (tokenizer, text model, LoRA), UNet, VAE, AdamW, and
 * the reward models (CLIP image tower, open_clip, BLIP/ImageReward, BERT WordPiece).
 *
 * @module
 */
export * from "./nn/mod.ts";
export * from "./clip/clip_tokenizer.ts";
export * from "./clip/clip_bpe_trainer.ts";
export * from "./clip/clip_text_model.ts";
export * from "./lora/lora.ts";
export * from "./lora/lora_formats.ts";
export * from "./lora/lora_loaders.ts";
export {
  type AdapterSpec,
  ClipLoraEncoder,
  clipLoraEncoder,
  clipLoraEncoderPlugin,
  type Options as ClipLoraEncoderOptions,
  saveLora,
  saveMergedTextEncoder,
} from "./encoder/clip_lora_encoder.ts";
export * from "./unet/unet_2d_condition.ts";
export * from "./vae/vae_decoder.ts";
export { adamw, adamwPlugin, type Options as AdamwOptions } from "./optim/adamw.ts";
export * from "./unet/mod.ts";
export type { LinearRegistry } from "./unet/_linear_registry.ts";
export * from "./clip/clip_vision_model.ts";
export * from "./clip/clip_image_processor.ts";
export * from "./clip/open_clip.ts";
export * from "./clip/open_clip_tokenizer.ts";
export * from "./clip/open_clip_image_transform.ts";
export * from "./clip/torch_resize.ts";
export * from "./image_reward/bert_tokenizer.ts";
export * from "./image_reward/blip_vit.ts";
export * from "./image_reward/bert_cross_encoder.ts";
export * from "./image_reward/image_reward_model.ts";
export * from "./webgpu/mod.ts";
export * from "./wasm/mod.ts";
