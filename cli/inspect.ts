/**
 * `texforce inspect <model>`: a diffusers model folder's components, classes, key config values,
 * parameter counts and dtypes, read from `model_index.json`, the configs and the safetensors
 * headers (no tensor data is read). On an export (a LoRA file or folder, or a merged text
 * encoder) it says the format, key layout, rank and alpha, and which loader calls read it.
 *
 * @module
 */
import { join } from "node:path";
import { openWeights } from "../core/io/weights.ts";
import { readJsonFile, readModelFolder } from "../core/io/model_folder.ts";
import { boolFlag, EXIT, InputError, parseCommandArgs, positionals, reportError } from "./_args.ts";
import { formatExportSummary, inspectExport, isExportPath } from "./_inspect_lora.ts";

/** Help of `texforce inspect`. */
const INSPECT_HELP: string = `Usage: texforce inspect <model | export> [options]

Summarise a diffusers model folder: components and classes, key config values, parameter counts
and dtypes (from the safetensors headers; no weights are loaded).

On an export (a PEFT folder, a diffusers or kohya .safetensors file or its folder, or a merged
text encoder folder): its format, key layout (transformers-4: keys with text_model.,
transformers-5: without), rank, alpha and scale, and the loader calls that read it.

Options:
  --json      Print everything (full configs included) as JSON
  -h, --help  Show this help
`;

/**
 * Weights of one component as its safetensors headers describe them.
 *
 * @example
 * ```ts
 * import { inspectModel } from "@texforce/core/cli";
 * const s = await inspectModel("tests/fixtures/sd-tiny/tiny-sd");
 * console.log(s.components.unet.weights?.byDtype); // { F32: 2157252 }
 * ```
 */
export interface WeightsSummary {
  /** The safetensors file (or sharded index) read. */
  file: string;
  /** Number of tensors. */
  tensors: number;
  /** Total number of elements. */
  parameters: number;
  /** Elements per on-disk dtype (`F32`, `F16`, …). */
  byDtype: Record<string, number>;
  /** Bytes of tensor data. */
  bytes: number;
}

/**
 * One component of a model folder.
 *
 * @example
 * ```ts
 * import { inspectModel } from "@texforce/core/cli";
 * const s = await inspectModel("tests/fixtures/sd-tiny/tiny-sd");
 * console.log(s.components.text_encoder.className); // transformers.CLIPTextModel
 * ```
 */
export interface ComponentSummary {
  /** `library.ClassName` from `model_index.json`. */
  className: string;
  /** The component's config (`config.json`, `scheduler_config.json` or `tokenizer_config.json`). */
  config?: Record<string, unknown>;
  /** Vocabulary size (tokenizers). */
  vocabSize?: number;
  /** Weights, when the component has any. */
  weights?: WeightsSummary;
}

/**
 * What `texforce inspect` reports.
 *
 * @example
 * ```ts
 * import { inspectModel, type ModelSummary } from "@texforce/core/cli";
 * const s: ModelSummary = await inspectModel("tests/fixtures/sd-tiny/tiny-sd");
 * console.log(s.pipelineClass, s.totalParameters);
 * ```
 */
export interface ModelSummary {
  /** Absolute folder. */
  path: string;
  /** `_class_name` of `model_index.json`. */
  pipelineClass: string;
  /** Components by name. */
  components: Record<string, ComponentSummary>;
  /** Parameters over all components. */
  totalParameters: number;
}

const KEY_CONFIG: Record<string, string[]> = {
  text_encoder: [
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "vocab_size",
    "hidden_act",
    "projection_dim",
  ],
  unet: [
    "sample_size",
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "cross_attention_dim",
    "attention_head_dim",
    "down_block_types",
    "up_block_types",
    "norm_num_groups",
  ],
  vae: ["sample_size", "in_channels", "latent_channels", "block_out_channels", "scaling_factor"],
  scheduler: [
    "num_train_timesteps",
    "beta_schedule",
    "beta_start",
    "beta_end",
    "prediction_type",
    "timestep_spacing",
    "steps_offset",
    "set_alpha_to_one",
    "clip_sample",
  ],
  tokenizer: ["model_max_length", "do_lower_case"],
};

async function tryJson(path: string): Promise<Record<string, unknown> | undefined> {
  try {
    await Deno.stat(path);
  } catch {
    return undefined;
  }
  return await readJsonFile<Record<string, unknown>>(path);
}

async function componentConfig(dir: string): Promise<Record<string, unknown> | undefined> {
  for (const f of ["config.json", "scheduler_config.json", "tokenizer_config.json"]) {
    const c = await tryJson(join(dir, f));
    if (c) return c;
  }
  return undefined;
}

async function weightsSummary(dir: string): Promise<WeightsSummary | undefined> {
  let w;
  try {
    w = await openWeights(dir);
  } catch (e) {
    if (/no safetensors weights found/.test((e as Error).message)) {
      // Tokenizers and schedulers have no weights; others may hold only .bin files.
      if (/PyTorch pickle/.test((e as Error).message)) throw e;
      return undefined;
    }
    throw e;
  }
  try {
    const byDtype: Record<string, number> = {};
    let parameters = 0;
    let bytes = 0;
    const keys = w.keys();
    for (const k of keys) {
      const info = w.info(k);
      const n = info.shape.reduce((a, b) => a * b, 1);
      byDtype[info.dtype] = (byDtype[info.dtype] ?? 0) + n;
      parameters += n;
      bytes += info.end - info.begin;
    }
    return { file: w.path, tensors: keys.length, parameters, byDtype, bytes };
  } finally {
    w.close();
  }
}

/**
 * Summarise a diffusers model folder from its index, configs and safetensors headers.
 *
 * @example
 * ```ts
 * import { inspectModel } from "@texforce/core/cli";
 * const s = await inspectModel("tests/fixtures/sd-tiny/tiny-sd");
 * console.log(s.totalParameters);
 * ```
 */
export async function inspectModel(path: string): Promise<ModelSummary> {
  const folder = await readModelFolder(path);
  const components: Record<string, ComponentSummary> = {};
  let total = 0;
  for (const [name, c] of Object.entries(folder.components)) {
    const s: ComponentSummary = { className: `${c.library}.${c.className}` };
    const config = await componentConfig(c.path);
    if (config) s.config = config;
    const vocab = await tryJson(join(c.path, "vocab.json"));
    if (vocab) s.vocabSize = Object.keys(vocab).length;
    let weights: WeightsSummary | undefined;
    try {
      weights = await weightsSummary(c.path);
    } catch (e) {
      throw new InputError(`component '${name}': ${(e as Error).message}`);
    }
    if (weights) {
      s.weights = weights;
      total += weights.parameters;
    }
    components[name] = s;
  }
  return {
    path: folder.path,
    pipelineClass: folder.pipelineClass,
    components,
    totalParameters: total,
  };
}

function count(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

function size(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  if (bytes >= 1e3) return `${(bytes / 1e3).toFixed(1)} kB`;
  return `${bytes} B`;
}

function configLine(name: string, config: Record<string, unknown>): string {
  const keys = KEY_CONFIG[name] ??
    Object.keys(config).filter((k) => !k.startsWith("_") && typeof config[k] !== "object")
      .slice(0, 8);
  return keys.filter((k) => config[k] !== undefined && config[k] !== null)
    .map((k) => `${k}=${JSON.stringify(config[k]).replaceAll('"', "")}`).join(" ");
}

/**
 * The text `texforce inspect` prints.
 *
 * @example
 * ```ts
 * import { formatModelSummary, inspectModel } from "@texforce/core/cli";
 * console.log(formatModelSummary(await inspectModel("tests/fixtures/sd-tiny/tiny-sd")));
 * ```
 */
export function formatModelSummary(s: ModelSummary): string {
  const lines = [`${s.path}`, `  pipeline: ${s.pipelineClass}`];
  const width = Math.max(...Object.keys(s.components).map((k) => k.length), 4);
  for (const [name, c] of Object.entries(s.components)) {
    lines.push(`  ${name.padEnd(width)}  ${c.className}`);
    const cfg = c.config ? configLine(name, c.config) : "";
    if (cfg) lines.push(`  ${"".padEnd(width)}    config: ${cfg}`);
    if (c.vocabSize !== undefined) {
      lines.push(`  ${"".padEnd(width)}    vocab: ${c.vocabSize} tokens`);
    }
    if (c.weights) {
      const w = c.weights;
      const dtypes = Object.entries(w.byDtype).map(([d, n]) => `${d} ${count(n)}`).join(", ");
      lines.push(
        `  ${"".padEnd(width)}    weights: ${count(w.parameters)} parameters in ${w.tensors} ` +
          `tensors (${dtypes}), ${size(w.bytes)}`,
      );
    }
  }
  lines.push(`  total: ${count(s.totalParameters)} parameters`);
  return lines.join("\n");
}

/**
 * Run `texforce inspect` with its arguments (after `inspect`); returns the exit code.
 *
 * @example
 * ```ts
 * import { inspectCommand } from "@texforce/core/cli";
 * Deno.exitCode = await inspectCommand(["tests/fixtures/sd-tiny/tiny-sd"]);
 * ```
 */
export async function inspectCommand(args: string[]): Promise<number> {
  try {
    const p = parseCommandArgs("inspect", args, { json: { type: "boolean" } });
    if (boolFlag(p, "help")) {
      console.log(INSPECT_HELP.trimEnd());
      return EXIT.ok;
    }
    const [model] = positionals("inspect", p, ["model"]);
    if (await isExportPath(model)) {
      let s;
      try {
        s = await inspectExport(model);
      } catch (e) {
        throw new InputError((e as Error).message);
      }
      console.log(boolFlag(p, "json") ? JSON.stringify(s, null, 2) : formatExportSummary(s));
      return EXIT.ok;
    }
    const summary = await inspectModel(model);
    console.log(
      boolFlag(p, "json") ? JSON.stringify(summary, null, 2) : formatModelSummary(summary),
    );
    return EXIT.ok;
  } catch (e) {
    return reportError(e);
  }
}
