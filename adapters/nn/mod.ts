/**
 * Neural-network building blocks shared by the CLIP, UNet and VAE adapters.
 *
 * @module
 */
export * from "./weight_reader.ts";
export * from "./linear.ts";
export * from "./layer_norm.ts";
export * from "./group_norm.ts";
export * from "./conv2d.ts";
export * from "./attention.ts";
export * from "./recompute.ts";
export * from "./owned_tensors.ts";
export { releaseWeightCopies } from "./weight_copies.ts";
