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
