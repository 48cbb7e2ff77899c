/**
 * Models behind the core interfaces: CLIP (tokenizer, text model, LoRA), UNet, VAE, AdamW, and
 * the reward models (CLIP image tower, open_clip, BLIP/ImageReward, BERT WordPiece).
 *
 * @module
 */
export * from "./nn/mod.ts";
export * from "./clip_tokenizer.ts";
export * from "./clip_bpe_trainer.ts";
export * from "./clip_text_model.ts";
export * from "./lora.ts";
export * from "./lora_formats.ts";
export * from "./lora_loaders.ts";
export {
  type AdapterSpec,
  ClipLoraEncoder,
  clipLoraEncoder,
  clipLoraEncoderPlugin,
  type Options as ClipLoraEncoderOptions,
  saveLora,
  saveMergedTextEncoder,
} from "./clip_lora_encoder.ts";
export * from "./unet_2d_condition.ts";
export * from "./vae_decoder.ts";
export { adamw, adamwPlugin, type Options as AdamwOptions } from "./adamw.ts";
export * from "./unet/mod.ts";
export type { LinearRegistry } from "./unet/_linear_registry.ts";
export * from "./clip_vision_model.ts";
export * from "./clip_image_processor.ts";
export * from "./open_clip.ts";
export * from "./open_clip_tokenizer.ts";
export * from "./open_clip_image_transform.ts";
export * from "./torch_resize.ts";
export * from "./bert_tokenizer.ts";
export * from "./blip_vit.ts";
export * from "./bert_cross_encoder.ts";
export * from "./image_reward_model.ts";
export * from "./webgpu/mod.ts";
