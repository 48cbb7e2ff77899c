/**
 * Models behind the core interfaces: CLIP (tokenizer, text model, LoRA), UNet, VAE, AdamW.
 *
 * @module
 */
export * from "./nn/mod.ts";
export * from "./clip_tokenizer.ts";
export * from "./clip_text_model.ts";
export * from "./lora.ts";
export * from "./lora_formats.ts";
export {
  type AdapterSpec,
  ClipLoraEncoder,
  clipLoraEncoder,
  clipLoraEncoderPlugin,
  type Options as ClipLoraEncoderOptions,
  saveLora,
  saveMergedTextEncoder,
} from "./clip_lora_encoder.ts";
