/**
 * `definePipeline`: a pipeline declared in TypeScript that runs when it is the main module.
 * It lives in the command line's layer because running as main parses `Deno.args` and exits
 * the process with the run's exit code, which library code never does.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type { PipelineInput } from "../core/pipeline_schema.ts";
import { runCommand } from "./run.ts";

/**
 * Declare a pipeline in TypeScript. Returns `config` unchanged (typed); when `meta` is the
 * declaring module's `import.meta` and that module is the main module
 * (`deno run -A pipeline.ts`), the pipeline also runs, exactly like `texforce run pipeline.ts`
 * (the command line's `--set` and `--resume` apply), and the process exits with its exit code.
 * Importing the module never starts a run.
 *
 * @example
 * ```ts
 * import { definePipeline } from "@texforce/core/cli";
 * export default definePipeline({
 *   model: "./models/stable-diffusion-v1-5",
 *   rewards: [{ use: "jpeg-compressibility" }],
 *   prompts: { builtin: "simple-animals" },
 * }, import.meta);
 * ```
 */
export function definePipeline(config: PipelineInput, meta?: ImportMeta): PipelineInput {
  if (meta?.main) {
    // Run after the module has finished evaluating (its default export must exist).
    setTimeout(() => void runAsMain(meta.url), 0);
  }
  return config;
}

async function runAsMain(url: string): Promise<void> {
  const file = url.startsWith("file:") ? fileURLToPath(url) : url;
  const code = await runCommand([file, ...Deno.args]);
  Deno.exit(code);
}
