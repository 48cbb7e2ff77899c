/**
 * The registry of built-in plugins: the `clip-lora` encoder, the `ddim` sampler, the `adamw`
 * optimizer and the built-in rewards.
 *
 * @module
 */
import { adamwPlugin } from "./adapters/adamw.ts";
import { clipLoraEncoderPlugin } from "./adapters/mod.ts";
import { ddimSamplerPlugin } from "./samplers/mod.ts";
import { type AnyPlugin, PluginRegistry } from "./core/plugin.ts";
import { rewardPlugins } from "./rewards/mod.ts";

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
