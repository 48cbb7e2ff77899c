// `texforce run --dry-run`: what a run would do and what it costs, without loading weights.
import { join } from "node:path";
import { useBackend } from "../core/backend.ts";
import { readModelFolder } from "../core/io/model_folder.ts";
import type { Pipeline } from "../core/pipeline_schema.ts";
import { resolvePrompts } from "../core/prompts.ts";
import { formatPlan, planRun } from "../core/run_plan.ts";

function megabytes(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

/** Sizes of the weight files of each component, from the file system only (nothing is read). */
async function weightsOnDisk(model: string): Promise<string> {
  const folder = await readModelFolder(model);
  const parts: string[] = [];
  let total = 0;
  for (const [name, c] of Object.entries(folder.components)) {
    let bytes = 0;
    for await (const e of Deno.readDir(c.path)) {
      if (e.isFile && /\.(safetensors|bin|ckpt|pt)$/.test(e.name)) {
        bytes += (await Deno.stat(join(c.path, e.name))).size;
      }
    }
    if (bytes > 0) parts.push(`${name} ${megabytes(bytes)}`);
    total += bytes;
  }
  return `${megabytes(total)} of weights on disk (${parts.join(", ") || "none found"})`;
}

/** What is in the output folder already. */
async function outputState(dir: string): Promise<string> {
  try {
    const entries = [...Deno.readDirSync(join(dir, "checkpoints"))].filter((e) => e.isDirectory);
    if (entries.length) {
      return `${dir} (holds a run with ${entries.length} checkpoint(s): --resume continues it)`;
    }
  } catch { /* no checkpoints */ }
  try {
    await Deno.stat(join(dir, "metrics.jsonl"));
    return `${dir} (holds metrics of an earlier run: choose another output.dir or --resume)`;
  } catch {
    return `${dir} (new)`;
  }
}

/** The dry run's lines: the validated pipeline's plan, its cost, and where it would run. */
export async function dryRun(file: string, pipeline: Pipeline): Promise<string[]> {
  const backend = await useBackend(pipeline.backend);
  const prompts = await resolvePrompts(pipeline);
  const rewards = pipeline.rewards.map((r) => `${r.name ?? r.use} ×${r.weight}`).join(", ");
  return [
    `dry run: ${file} is valid; nothing is trained and no weights are read`,
    `model:    ${pipeline.model}: ${await weightsOnDisk(pipeline.model)}`,
    `backend:  ${backend.name} on ${backend.device}` +
    (pipeline.backend === backend.name ? "" : ` (asked for ${pipeline.backend})`),
    `encoder:  ${pipeline.encoder.use} ${JSON.stringify(pipeline.encoder.options)}`,
    `rewards:  ${rewards}`,
    `prompts:  ${prompts.length} training prompts`,
    ...formatPlan(pipeline, planRun(pipeline)),
    `output:   ${await outputState(pipeline.output.dir)}`,
  ];
}
