/**
 * The registry of built-in plugins: the `clip-lora` encoder, the `ddim` sampler, the `adamw`
 * optimizer and the built-in rewards; and loading / validating a pipeline against it.
 *
 * @module
 */
import { adamwPlugin } from "./adapters/optim/adamw.ts";
import { clipLoraEncoderPlugin } from "./adapters/mod.ts";
import { ddimSamplerPlugin } from "./samplers/mod.ts";
import { type AnyPlugin, PluginRegistry } from "./core/plugin.ts";
import { rewardPlugins } from "./rewards/mod.ts";
import {
  loadPipeline as loadPipelineWith,
  type LoadPipelineOptions,
  validatePipeline as validatePipelineWith,
  type ValidatePipelineOptions,
} from "./core/pipeline.ts";
import type { Pipeline } from "./core/pipeline_schema.ts";

/**
 * Every built-in plugin.
 *
 * @example
 * ```ts
 * import { builtinPlugins } from "@texforce/core";
 * console.log(builtinPlugins().map((p) => `${p.kind}:${p.name}`));
 * ```
 */
export function builtinPlugins(): AnyPlugin[] {
  return [clipLoraEncoderPlugin, ddimSamplerPlugin, adamwPlugin, ...rewardPlugins()];
}

/**
 * A fresh registry holding every built-in plugin (register your own on it).
 *
 * @example
 * ```ts
 * import { builtinRegistry } from "@texforce/core";
 * const registry = builtinRegistry();
 * console.log(registry.list("reward").map((p) => p.name));
 * ```
 */
export function builtinRegistry(): PluginRegistry {
  return new PluginRegistry(builtinPlugins());
}

/**
 * `loadPipeline` of `core/pipeline.ts` with the built-in registry unless `options.registry` names
 * another: load a pipeline file, apply `--set` overrides, validate it.
 *
 * @example
 * ```ts
 * import { loadPipeline } from "@texforce/core";
 * const p = await loadPipeline("examples/tiny_brightness.yaml", { set: ["train.epochs=1"] });
 * console.log(p.train.epochs); // 1
 * ```
 */
export async function loadPipeline(
  path: string,
  options: LoadPipelineOptions = {},
): Promise<Pipeline> {
  return await loadPipelineWith(path, {
    ...options,
    registry: options.registry ?? builtinRegistry(),
  });
}

/**
 * `validatePipeline` of `core/pipeline.ts` with the built-in registry unless `options.registry` names
 * another.
 *
 * @example
 * ```ts
 * import { parsePipeline, validatePipeline } from "@texforce/core";
 * const p = parsePipeline({ model: "m", rewards: [{ use: "brightness" }], prompts: ["a"] });
 * await validatePipeline(p, { checkModel: false });
 * ```
 */
export async function validatePipeline(
  pipeline: Pipeline,
  options: ValidatePipelineOptions = {},
): Promise<void> {
  await validatePipelineWith(pipeline, {
    ...options,
    registry: options.registry ?? builtinRegistry(),
  });
}
