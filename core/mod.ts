/**
 * The core of texforce: interfaces (`Encoder`, `Sampler`, `Reward`, `Optimizer`), the plugin
 * registry, backends and weight I/O.
 *
 * @module
 */
export * from "./backend.ts";
export * from "./encoder.ts";
export * from "./sampler.ts";
export * from "./reward.ts";
export * from "./optimizer.ts";
export * from "./plugin.ts";
export * from "./io/mod.ts";
export * from "./tensor_types.ts";
