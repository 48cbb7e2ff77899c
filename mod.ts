/**
 * texforce: fine-tune the text encoder of Stable Diffusion with reinforcement learning
 * (TexForce, ECCV 2024) in Deno.
 *
 * @example
 * ```ts
 * import { useBackend } from "@texforce/core";
 * console.log(await useBackend("auto"));
 * ```
 *
 * @module
 */
export * from "./core/mod.ts";
export {
  applyPipelineOverrides,
  type LoadPipelineOptions,
  type ValidatePipelineOptions,
} from "./core/pipeline.ts";
export * from "./core/pipeline_schema.ts";
export * from "./core/pipeline_error.ts";
export * from "./core/prompt_sets.ts";
export * from "./core/prompts.ts";
export * from "./builtin_plugins.ts";
export * from "./adapters/mod.ts";
export * from "./samplers/mod.ts";
