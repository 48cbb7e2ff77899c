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
export * from "./advantages.ts";
export * from "./checkpoint.ts";
export * from "./gradients.ts";
export * from "./lr_schedule.ts";
export * from "./model_cache.ts";
export * from "./ppo_loss.ts";
export * from "./ppo_step.ts";
export * from "./progress.ts";
export * from "./run_plan.ts";
export * from "./report.ts";
export * from "./rng.ts";
export * from "./seeded_noise.ts";
export * from "./trainer.ts";
export * from "./train.ts";
export * from "./assemble.ts";
export * from "./run_folder.ts";
export * from "./preflight.ts";
