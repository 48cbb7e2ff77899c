/**
 * Models behind the core interfaces: CLIP (tokenizer, text model, LoRA), UNet, VAE, AdamW.
 *
 * @module
 */
export * from "./nn/mod.ts";
