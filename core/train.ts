/**
 * A whole run from a pipeline: assemble its plugins ({@linkcode assemble}), open the run folder,
 * build the parts, hand both to the PPO loop ({@linkcode Trainer}), then export the LoRA and
 * write the report through the run folder.
 *
 * @example
 * ```ts
 * import { builtinRegistry, loadPipeline, train } from "@texforce/core";
 * const result = await train(await loadPipeline("examples/tiny_brightness.yaml"), {
 *   registry: builtinRegistry(),
 * });
 * console.log(result.checkpoint);
 * ```
 *
 * @module
 */
import { assemble, buildParts } from "./assemble.ts";
import { type BackendInfo, useBackend } from "./backend.ts";
import { ModelCache } from "./model_cache.ts";
import type { Pipeline } from "./pipeline_schema.ts";
import type { PluginRegistry } from "./plugin.ts";
import { resolvePrompts } from "./prompts.ts";
import { pngImageWriter, preflightRunFolder, RunFolder } from "./run_folder.ts";
import { formatPlan, planRun } from "./run_plan.ts";
import { Trainer, type TrainerOptions, type TrainResult } from "./trainer.ts";

/**
 * Options of {@linkcode train}.
 *
 * @example
 * ```ts
 * import { builtinRegistry, type TrainOptions } from "@texforce/core";
 * const o: TrainOptions = { registry: builtinRegistry(), resume: true };
 * ```
 */
export interface TrainOptions extends Omit<TrainerOptions, "runFolder" | "runInfo"> {
  /** Where plugins named in the pipeline are found (`builtinRegistry()` for the built-ins). */
  registry: PluginRegistry;
}

/**
 * Build every plugin of a pipeline, train, export the LoRA in the configured formats and
 * write the HTML report. Cancel with `options.signal` (a final checkpoint is written).
 *
 * @example
 * ```ts
 * import { builtinRegistry, loadPipeline, train } from "@texforce/core";
 * const result = await train(await loadPipeline("examples/tiny_brightness.yaml"), {
 *   registry: builtinRegistry(),
 * });
 * console.log(result.checkpoint);
 * ```
 */
export async function train(pipeline: Pipeline, options: TrainOptions): Promise<TrainResult> {
  // Silent unless the app asks: no default console output.
  const log = options.log ?? (() => {});
  const resume = Boolean(options.resume || pipeline.checkpoint.resume);
  // The run folder's policy first: a refused run loads no weights and changes nothing (the
  // folder is opened, and what it holds reported, once the parts are built).
  await preflightRunFolder(pipeline, { resume, force: options.force });
  const assembly = await assemble(pipeline, options.registry);
  const backend = await useBackend(pipeline.backend);
  const steps = assembly.sampler.options.steps;
  for (const line of runHeader(pipeline, backend, typeof steps === "number" ? steps : undefined)) {
    log(line);
  }
  const prompts = await resolvePrompts(pipeline);
  const built = await buildParts(assembly, { models: new ModelCache() });
  try {
    const imageWriter = options.saveImages ??
      (pipeline.output.saveImages ? await pngImageWriter() : undefined);
    const runFolder = await RunFolder.open(pipeline, {
      resume,
      force: options.force,
      warn: (l) => log(l),
      runInfo: { backend: backend.name, rewards: built.rewardRecords },
    }, imageWriter);
    const trainer = new Trainer(pipeline, {
      encoder: built.encoder,
      sampler: built.sampler,
      rewards: built.rewards,
      optimizer: built.optimizer,
      prompts,
      encoderOptions: built.encoderOptions,
    }, { ...options, log, runFolder });
    const result = await trainer.run();
    for (
      const { format, files } of await runFolder.writeExports(
        built.encoder,
        pipeline.output.exportFormats,
      )
    ) {
      log(`exported ${format}: ${files.join(", ")}`);
    }
    log(`report: ${await runFolder.writeReport(pipeline.name)}`);
    return result;
  } finally {
    built.dispose();
  }
}

/**
 * The lines a run starts with: what runs where, and how much work it is (for a sampler of
 * `steps` denoising steps; default `sampler.steps`).
 *
 * @example
 * ```ts
 * import { parsePipeline, runHeader } from "@texforce/core";
 * const p = parsePipeline({ model: "m", rewards: [{ use: "brightness" }], prompts: ["a"] });
 * console.log(runHeader(p, { name: "wasm", device: "WebAssembly" }).join("\n"));
 * ```
 */
export function runHeader(
  pipeline: Pipeline,
  backend: BackendInfo,
  steps: number | undefined = pipeline.sampler.steps,
): string[] {
  const requested = pipeline.backend === backend.name ? "" : ` (asked for ${pipeline.backend})`;
  return [
    `texforce run: ${pipeline.name} → ${pipeline.output.dir}`,
    `model:    ${pipeline.model}`,
    `backend:  ${backend.name} on ${backend.device}${requested}`,
    ...formatPlan(pipeline, planRun(pipeline, 0, steps)),
    `time:     estimated once the first epoch is timed`,
  ];
}
