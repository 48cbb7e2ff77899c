/**
 * The plugin contract, for plugin authors: {@linkcode definePlugin}, the plugin types and the
 * interfaces plugins create (`Encoder`, `Sampler`, `Reward`, `Optimizer`). It loads no model and
 * no tfjs backend: a reward plugin that imports only this entry costs nothing to import.
 *
 * @example
 * ```ts
 * import { definePlugin } from "@texforce/core/plugin";
 * import { z } from "zod";
 * export default definePlugin({
 *   kind: "reward",
 *   name: "zero",
 *   version: "0.1.0",
 *   options: z.strictObject({}),
 *   create: () => ({ name: "zero", score: ({ prompts }) => Promise.resolve(prompts.map(() => 0)) }),
 * });
 * ```
 *
 * @module
 */
export {
  type AnyPlugin,
  definePlugin,
  type Plugin,
  type PluginContext,
  PluginError,
  type PluginIssue,
  type PluginKind,
  type PluginKinds,
} from "./core/plugin.ts";
export type * from "./core/encoder.ts";
export type * from "./core/sampler.ts";
export type * from "./core/reward.ts";
export type * from "./core/optimizer.ts";
export type * from "./core/tensor_types.ts";
