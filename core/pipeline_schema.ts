/**
 * The pipeline file schema: what a `pipeline.yaml` / `.json` / `.ts` may contain, its defaults
 * (those of the TexForce paper) and the normalised {@linkcode Pipeline} the trainer consumes.
 *
 * Every object is strict: an unknown key is an error naming its path (and the keys allowed
 * there). Relative paths (`model`, `prompts.file`, `output.dir`) resolve against the pipeline
 * file's folder; the default `output.dir` is `runs/<name>` under the current directory.
 *
 * @module
 */
import { basename, extname, isAbsolute, resolve } from "node:path";
import { z } from "zod";
import type { BackendName } from "./backend.ts";
import { errorMap, zodIssues } from "./_zod_issues.ts";
import { PipelineError } from "./pipeline_error.ts";

// ---------------------------------------------------------------------------------------------
// Normalised types (what the trainer sees).

/**
 * Where the training prompts come from: an inline list, a file (one prompt per line, or a JSON
 * array; an absolute path once normalised) or a built-in set (see `PROMPT_SETS`).
 *
 * @example
 * ```ts
 * import type { PromptSource } from "@texforce/core";
 * const a: PromptSource = { list: ["a photo of a cat"] };
 * const b: PromptSource = { builtin: "simple-animals" };
 * ```
 */
export type PromptSource = { list: string[] } | { file: string } | { builtin: string };

/**
 * A plugin step: which plugin (`use`: a built-in name or a module specifier) and its options,
 * validated later by the plugin's own schema.
 *
 * @example
 * ```ts
 * import type { PluginStep } from "@texforce/core";
 * const step: PluginStep = { use: "clip-lora", options: { rank: 16 } };
 * ```
 */
export interface PluginStep {
  /** Built-in plugin name or module specifier (relative to the pipeline file). */
  use: string;
  /** Options for the plugin's schema. */
  options: Record<string, unknown>;
}

/**
 * The sampler step: DDIM settings used both to collect trajectories and to recompute log-probs.
 *
 * @example
 * ```ts
 * import type { SamplerStep } from "@texforce/core";
 * const s: SamplerStep = {
 *   use: "ddim", steps: 50, eta: 1, guidance: 5, batchSize: 2, negativePrompt: "", options: {},
 * };
 * ```
 */
export interface SamplerStep extends PluginStep {
  /** Denoising steps T. */
  steps: number;
  /** DDIM eta (1 = stochastic, needed for log-probs). */
  eta: number;
  /** Classifier-free guidance scale. */
  guidance: number;
  /** Images per sampling batch. */
  batchSize: number;
  /** Negative (unconditional) prompt. */
  negativePrompt: string;
}

/**
 * One reward term; the total reward is the weighted sum of the terms.
 *
 * @example
 * ```ts
 * import type { RewardStep } from "@texforce/core";
 * const r: RewardStep = { use: "jpeg-compressibility", weight: 1, options: { quality: 95 } };
 * ```
 */
export interface RewardStep extends PluginStep {
  /** Weight of this term in the total reward. */
  weight: number;
  /** Name in logs and metrics (default: the plugin's name). */
  name?: string;
}

/**
 * Learning-rate schedule.
 *
 * @example
 * ```ts
 * import type { LrScheduleConfig } from "@texforce/core";
 * const s: LrScheduleConfig = { type: "cosine", warmupSteps: 10, minLr: 0 };
 * ```
 */
export interface LrScheduleConfig {
  /** `constant` or `cosine` decay to `minLr`. */
  type: "constant" | "cosine";
  /** Linear warm-up steps (optimizer steps). */
  warmupSteps: number;
  /** Final learning rate of the cosine schedule. */
  minLr: number;
}

/**
 * The optimizer step (AdamW by default). The optimizer plugin's options are
 * `{ betas, weightDecay, eps }`; `lr`, `maxGradNorm` and `schedule` are applied by the trainer.
 *
 * @example
 * ```ts
 * import type { OptimizerStep } from "@texforce/core";
 * const o: OptimizerStep = {
 *   use: "adamw", lr: 3e-4, betas: [0.9, 0.999], weightDecay: 1e-4, eps: 1e-8,
 *   maxGradNorm: 1, schedule: { type: "constant", warmupSteps: 0, minLr: 0 },
 * };
 * ```
 */
export interface OptimizerStep {
  /** Built-in plugin name or module specifier. */
  use: string;
  /** Peak learning rate. */
  lr: number;
  /** Adam betas. */
  betas: [number, number];
  /** Decoupled weight decay. */
  weightDecay: number;
  /** Adam epsilon. */
  eps: number;
  /** Global gradient-norm clipping threshold. */
  maxGradNorm: number;
  /** Learning-rate schedule. */
  schedule: LrScheduleConfig;
}

/**
 * Per-prompt advantage normalisation (DDPO's stat tracking).
 *
 * @example
 * ```ts
 * import type { PerPromptTrackingConfig } from "@texforce/core";
 * const p: PerPromptTrackingConfig = { enabled: true, bufferSize: 16, minCount: 16 };
 * ```
 */
export interface PerPromptTrackingConfig {
  /** Normalise rewards per prompt (otherwise over the whole batch). */
  enabled: boolean;
  /** Rewards kept per prompt. */
  bufferSize: number;
  /** Rewards a prompt needs before its own statistics are used. */
  minCount: number;
}

/**
 * PPO training settings.
 *
 * @example
 * ```ts
 * import type { TrainConfig } from "@texforce/core";
 * declare const t: TrainConfig;
 * console.log(t.epochs * t.batchesPerEpoch);
 * ```
 */
export interface TrainConfig {
  /** Epochs (sample, then train). */
  epochs: number;
  /** Sampling batches per epoch. */
  batchesPerEpoch: number;
  /** PPO minibatch size. */
  batchSize: number;
  /** Passes over each epoch's samples. */
  innerEpochs: number;
  /** Fraction of the denoising steps trained on, in (0, 1]. */
  timestepFraction: number;
  /** PPO ratio clip range. */
  clipRange: number;
  /** Advantages are clipped to ±advClipMax. */
  advClipMax: number;
  /** Minibatches per optimizer step. */
  gradientAccumulation: number;
  /**
   * Samples per backward pass through the UNet (a minibatch is split into chunks of this size);
   * memory grows with it, results do not (beyond float rounding).
   */
  microBatchSize: number;
  /** Per-prompt reward normalisation. */
  perPromptTracking: PerPromptTrackingConfig;
}

/**
 * Evaluation: fixed prompts and seeds sampled every few epochs.
 *
 * @example
 * ```ts
 * import type { EvalConfig } from "@texforce/core";
 * const e: EvalConfig = { prompts: ["a cat"], seeds: [0, 1], every: 1 };
 * ```
 */
export interface EvalConfig {
  /** Prompts to evaluate. */
  prompts: string[];
  /** Seeds, one image per prompt and seed. */
  seeds: number[];
  /** Evaluate every N epochs. */
  every: number;
}

/**
 * Checkpointing.
 *
 * @example
 * ```ts
 * import type { CheckpointConfig } from "@texforce/core";
 * const c: CheckpointConfig = { every: 1, keep: 3, resume: false };
 * ```
 */
export interface CheckpointConfig {
  /** Save every N epochs. */
  every: number;
  /** Checkpoints kept (older ones are deleted). */
  keep: number;
  /** Resume from the latest checkpoint in `output.dir`. */
  resume: boolean;
}

/**
 * A LoRA export format: PEFT adapter folder, diffusers, kohya (A1111/ComfyUI) or weights merged
 * into a full text encoder.
 *
 * @example
 * ```ts
 * import type { ExportFormat } from "@texforce/core";
 * const f: ExportFormat = "kohya";
 * ```
 */
export type ExportFormat = "peft" | "diffusers" | "kohya" | "merged";

/**
 * The export formats, for schemas and CLI help.
 *
 * @example
 * ```ts
 * import { EXPORT_FORMATS } from "@texforce/core";
 * console.log(EXPORT_FORMATS.join("|"));
 * ```
 */
export const EXPORT_FORMATS: readonly ExportFormat[] = ["peft", "diffusers", "kohya", "merged"];

/**
 * The key layout of an export, named after the transformers major that reads it:
 * `transformers-4` keys carry the `text_model.` prefix (`text_model.encoder.layers.0…`), as every
 * Stable Diffusion 1.x/2.x checkpoint on disk does; `transformers-5` keys do not
 * (`encoder.layers.0…`), as transformers 5 saves CLIP. PEFT adapters and merged encoders load
 * only under the transformers major of their layout.
 *
 * @example
 * ```ts
 * import type { ExportLayout } from "@texforce/core";
 * const layout: ExportLayout = "transformers-5";
 * ```
 */
export type ExportLayout = "transformers-4" | "transformers-5";

/**
 * The export key layouts, for schemas and CLI help.
 *
 * @example
 * ```ts
 * import { EXPORT_LAYOUTS } from "@texforce/core";
 * console.log(EXPORT_LAYOUTS.join("|")); // transformers-4|transformers-5
 * ```
 */
export const EXPORT_LAYOUTS: readonly ExportLayout[] = ["transformers-4", "transformers-5"];

/**
 * The default export layout: `transformers-4` (keys with `text_model.`). Every SD 1.x/2.x model
 * folder on disk and every released TexForce adapter has these keys, transformers 4 reads no
 * other, and transformers 5 reads them too for every loader but `PeftModel.from_pretrained`.
 *
 * @example
 * ```ts
 * import { DEFAULT_EXPORT_LAYOUT } from "@texforce/core";
 * console.log(DEFAULT_EXPORT_LAYOUT); // transformers-4
 * ```
 */
export const DEFAULT_EXPORT_LAYOUT: ExportLayout = "transformers-4";

/**
 * Run outputs.
 *
 * @example
 * ```ts
 * import type { OutputConfig } from "@texforce/core";
 * const o: OutputConfig = { dir: "/tmp/runs/demo", saveImages: true, exportFormats: ["peft"] };
 * ```
 */
export interface OutputConfig {
  /** Absolute run folder. */
  dir: string;
  /** Save sampled and evaluation images. */
  saveImages: boolean;
  /** Formats the final LoRA is exported in. */
  exportFormats: ExportFormat[];
}

/**
 * A validated, normalised pipeline: every default filled in, every path absolute.
 *
 * @example
 * ```ts
 * import { loadPipeline, type Pipeline } from "@texforce/core";
 * const p: Pipeline = await loadPipeline("examples/tiny_brightness.yaml");
 * console.log(p.name, p.model, p.train.epochs);
 * ```
 */
export interface Pipeline {
  /** Run name (default: the pipeline file's base name). */
  name: string;
  /** Absolute folder of the pipeline file; relative plugin paths resolve against it. */
  baseDir: string;
  /** Absolute path of the diffusers model folder. */
  model: string;
  /** tfjs backend. */
  backend: BackendName;
  /** Seed of the run. */
  seed: number;
  /** The text encoder (the policy). */
  encoder: PluginStep;
  /** The sampler. */
  sampler: SamplerStep;
  /** Reward terms (at least one). */
  rewards: RewardStep[];
  /** The optimizer. */
  optimizer: OptimizerStep;
  /** PPO settings. */
  train: TrainConfig;
  /** Training prompts. */
  prompts: PromptSource;
  /** Evaluation, if any. */
  eval?: EvalConfig;
  /** Checkpointing. */
  checkpoint: CheckpointConfig;
  /** Outputs. */
  output: OutputConfig;
}

// ---------------------------------------------------------------------------------------------
// Input types (what a pipeline file may contain).

/**
 * A plugin step as written in a pipeline file.
 *
 * @example
 * ```ts
 * import type { PluginStepInput } from "@texforce/core";
 * const e: PluginStepInput = { use: "clip-lora", options: { rank: 8 } };
 * ```
 */
export interface PluginStepInput {
  /** Built-in plugin name or module specifier. */
  use?: string;
  /** Options validated by the plugin's schema (default `{}`). */
  options?: Record<string, unknown>;
}

/**
 * The sampler as written in a pipeline file.
 *
 * @example
 * ```ts
 * import type { SamplerStepInput } from "@texforce/core";
 * const s: SamplerStepInput = { steps: 20, guidance: 7.5 };
 * ```
 */
export interface SamplerStepInput extends PluginStepInput {
  /** Plugin (default `ddim`). */
  use?: string;
  /** Denoising steps (default 50). */
  steps?: number;
  /** DDIM eta (default 1). */
  eta?: number;
  /** Guidance scale (default 5). */
  guidance?: number;
  /** Images per sampling batch (default 2). */
  batchSize?: number;
  /** Negative prompt (default ""). */
  negativePrompt?: string;
}

/**
 * A reward term as written in a pipeline file.
 *
 * @example
 * ```ts
 * import type { RewardStepInput } from "@texforce/core";
 * const r: RewardStepInput = { use: "./my_reward.ts", weight: 0.5 };
 * ```
 */
export interface RewardStepInput {
  /** Built-in reward name or module specifier. */
  use: string;
  /** Weight (default 1). */
  weight?: number;
  /** Name in logs (default: the plugin's name). */
  name?: string;
  /** Plugin options (default `{}`). */
  options?: Record<string, unknown>;
}

/**
 * The optimizer as written in a pipeline file.
 *
 * @example
 * ```ts
 * import type { OptimizerStepInput } from "@texforce/core";
 * const o: OptimizerStepInput = { lr: 1e-4, schedule: { type: "cosine" } };
 * ```
 */
export interface OptimizerStepInput {
  /** Plugin (default `adamw`). */
  use?: string;
  /** Learning rate (default 3e-4). */
  lr?: number;
  /** Adam betas (default [0.9, 0.999]). */
  betas?: [number, number];
  /** Weight decay (default 1e-4). */
  weightDecay?: number;
  /** Adam epsilon (default 1e-8). */
  eps?: number;
  /** Gradient-norm clip (default 1). */
  maxGradNorm?: number;
  /** Schedule (default constant, no warm-up). */
  schedule?: Partial<LrScheduleConfig>;
}

/**
 * PPO settings as written in a pipeline file.
 *
 * @example
 * ```ts
 * import type { TrainConfigInput } from "@texforce/core";
 * const t: TrainConfigInput = { epochs: 3, perPromptTracking: { enabled: false } };
 * ```
 */
export interface TrainConfigInput {
  /** Epochs (default 100). */
  epochs?: number;
  /** Sampling batches per epoch (default 2). */
  batchesPerEpoch?: number;
  /** PPO minibatch (default 2). */
  batchSize?: number;
  /** Inner epochs (default 1). */
  innerEpochs?: number;
  /** Fraction of timesteps trained (default 0.5). */
  timestepFraction?: number;
  /** PPO clip range (default 1e-4). */
  clipRange?: number;
  /** Advantage clip (default 5). */
  advClipMax?: number;
  /** Minibatches per optimizer step (default 1). */
  gradientAccumulation?: number;
  /** Samples per backward pass (default 2; lower it to save memory). */
  microBatchSize?: number;
  /** Per-prompt tracking (default enabled, buffer 16, min count 16). */
  perPromptTracking?: Partial<PerPromptTrackingConfig>;
}

/**
 * Evaluation as written in a pipeline file.
 *
 * @example
 * ```ts
 * import type { EvalConfigInput } from "@texforce/core";
 * const e: EvalConfigInput = { prompts: ["a cat"] };
 * ```
 */
export interface EvalConfigInput {
  /** Prompts. */
  prompts: string[];
  /** Seeds (default [0, 1]). */
  seeds?: number[];
  /** Every N epochs (default 1). */
  every?: number;
}

/**
 * Outputs as written in a pipeline file.
 *
 * @example
 * ```ts
 * import type { OutputConfigInput } from "@texforce/core";
 * const o: OutputConfigInput = { dir: "./out", exportFormats: ["peft", "kohya"] };
 * ```
 */
export interface OutputConfigInput {
  /** Run folder, relative to the pipeline file (default `runs/<name>` under the current directory). */
  dir?: string;
  /** Save images (default true). */
  saveImages?: boolean;
  /** Export formats (default ["peft"]). */
  exportFormats?: ExportFormat[];
}

/**
 * A pipeline as written in a file or passed to `definePipeline`: only `model`, `rewards` and
 * `prompts` are required.
 *
 * @example
 * ```ts
 * import type { PipelineInput } from "@texforce/core";
 * const p: PipelineInput = {
 *   model: "./models/stable-diffusion-v1-5",
 *   rewards: [{ use: "jpeg-compressibility" }],
 *   prompts: { builtin: "simple-animals" },
 * };
 * ```
 */
export interface PipelineInput {
  /** Run name: letters, digits, `.`, `_`, `-` (default: the file's base name). */
  name?: string;
  /** Diffusers model folder, relative to the pipeline file. */
  model: string;
  /** Backend (default `auto`). */
  backend?: BackendName;
  /** Seed (default 0). */
  seed?: number;
  /** Encoder (default `clip-lora`, plugin defaults: rank 16, alpha 16, q/k/v/out). */
  encoder?: PluginStepInput;
  /** Sampler (default `ddim`, 50 steps, eta 1, guidance 5). */
  sampler?: SamplerStepInput;
  /** Reward terms, at least one. */
  rewards: RewardStepInput[];
  /** Optimizer (default AdamW, lr 3e-4). */
  optimizer?: OptimizerStepInput;
  /** PPO settings. */
  train?: TrainConfigInput;
  /** Training prompts; a bare array is short for `{ list: [...] }`. */
  prompts: PromptSource | string[];
  /** Evaluation (default none). */
  eval?: EvalConfigInput;
  /** Checkpointing (default every epoch, keep 3). */
  checkpoint?: Partial<CheckpointConfig>;
  /** Outputs. */
  output?: OutputConfigInput;
}

// ---------------------------------------------------------------------------------------------
// The schema.

const options = z.record(z.string(), z.unknown()).default(() => ({}));
const use = (name: string) => z.string().min(1, "must not be empty").default(name);
const posInt = (d: number) => z.int().min(1).default(d);

const promptsSchema = z.preprocess(
  (v) => (Array.isArray(v) ? { list: v } : v),
  z.strictObject({
    list: z.array(z.string().min(1, "empty prompt")).min(1, "needs at least one prompt")
      .optional(),
    file: z.string().min(1, "must not be empty").optional(),
    builtin: z.string().min(1, "must not be empty").optional(),
  }).check((ctx) => {
    const given = (["list", "file", "builtin"] as const).filter((k) => ctx.value[k] !== undefined);
    if (given.length !== 1) {
      ctx.issues.push({
        code: "custom",
        input: ctx.value,
        message: given.length === 0
          ? "give one of list, file or builtin (or a list of prompts)"
          : `give only one of list, file or builtin (got ${given.join(" and ")})`,
      });
    }
  }),
);

/** The parsed form before paths are resolved (`name`/`output.dir` may still be missing). */
interface ParsedPipeline extends Omit<Pipeline, "name" | "baseDir" | "output" | "prompts"> {
  name?: string;
  prompts: { list?: string[]; file?: string; builtin?: string };
  output: Omit<OutputConfig, "dir"> & { dir?: string };
}

const pipelineSchema: z.ZodType<ParsedPipeline> = z.strictObject({
  name: z.string().regex(
    /^[A-Za-z0-9._-]+$/,
    "letters, digits, '.', '_' or '-' only (it names the run folder)",
  ).optional(),
  model: z.string().min(1, "must not be empty"),
  backend: z.enum(["auto", "cpu", "wasm", "webgpu", "tensorflow"]).default("auto"),
  seed: z.int().min(0).default(0),
  encoder: z.strictObject({ use: use("clip-lora"), options }).prefault({}),
  sampler: z.strictObject({
    use: use("ddim"),
    steps: posInt(50),
    eta: z.number().min(0).default(1),
    guidance: z.number().min(0).default(5),
    batchSize: posInt(2),
    negativePrompt: z.string().default(""),
    options,
  }).prefault({}),
  rewards: z.array(
    z.strictObject({
      use: z.string().min(1, "must not be empty"),
      weight: z.number().default(1),
      name: z.string().min(1, "must not be empty").optional(),
      options,
    }),
  ).min(1, "needs at least one reward"),
  optimizer: z.strictObject({
    use: use("adamw"),
    lr: z.number().positive().default(3e-4),
    betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
    weightDecay: z.number().min(0).default(1e-4),
    eps: z.number().positive().default(1e-8),
    maxGradNorm: z.number().positive().default(1),
    schedule: z.strictObject({
      type: z.enum(["constant", "cosine"]).default("constant"),
      warmupSteps: z.int().min(0).default(0),
      minLr: z.number().min(0).default(0),
    }).prefault({}),
  }).prefault({}),
  train: z.strictObject({
    epochs: posInt(100),
    batchesPerEpoch: posInt(2),
    batchSize: posInt(2),
    innerEpochs: posInt(1),
    timestepFraction: z.number().gt(0).lte(1).default(0.5),
    clipRange: z.number().positive().default(1e-4),
    advClipMax: z.number().positive().default(5),
    gradientAccumulation: posInt(1),
    microBatchSize: posInt(2),
    perPromptTracking: z.strictObject({
      enabled: z.boolean().default(true),
      bufferSize: posInt(16),
      minCount: posInt(16),
    }).prefault({}),
  }).prefault({}),
  prompts: promptsSchema,
  eval: z.strictObject({
    prompts: z.array(z.string().min(1, "empty prompt")).min(1, "needs at least one prompt"),
    seeds: z.array(z.int().min(0)).min(1, "needs at least one seed").default([0, 1]),
    every: posInt(1),
  }).optional(),
  checkpoint: z.strictObject({
    every: posInt(1),
    keep: posInt(3),
    resume: z.boolean().default(false),
  }).prefault({}),
  output: z.strictObject({
    dir: z.string().min(1, "must not be empty").optional(),
    saveImages: z.boolean().default(true),
    exportFormats: z.array(z.enum(["peft", "diffusers", "kohya", "merged"]))
      .default(() => ["peft" as const]),
  }).prefault({}),
}).check((ctx) => {
  const p = ctx.value;
  const issue = (path: PropertyKey[], message: string) =>
    ctx.issues.push({ code: "custom", input: p, path, message });
  const tracking = p.train.perPromptTracking;
  if (tracking.enabled && tracking.minCount > tracking.bufferSize) {
    issue(
      ["train", "perPromptTracking", "minCount"],
      `must be at most bufferSize (${tracking.bufferSize}), or it is never reached`,
    );
  }
  const samples = p.sampler.batchSize * p.train.batchesPerEpoch;
  if (samples % p.train.batchSize !== 0) {
    issue(
      ["train", "batchSize"],
      `must divide the samples per epoch (sampler.batchSize × train.batchesPerEpoch = ${samples})`,
    );
  }
  if (Math.floor(p.sampler.steps * p.train.timestepFraction) < 1) {
    issue(
      ["train", "timestepFraction"],
      `trains no timestep: sampler.steps (${p.sampler.steps}) × ${p.train.timestepFraction} < 1`,
    );
  }
  if (p.optimizer.schedule.minLr > p.optimizer.lr) {
    issue(["optimizer", "schedule", "minLr"], `must be at most lr (${p.optimizer.lr})`);
  }
});

/**
 * Where a pipeline came from, for resolving its paths and naming it.
 *
 * @example
 * ```ts
 * import type { PipelineSource } from "@texforce/core";
 * const s: PipelineSource = { file: "/work/pipelines/demo.yaml" };
 * ```
 */
export interface PipelineSource {
  /** The pipeline file; its folder is `baseDir`, its base name the default `name`. */
  file?: string;
  /** Folder relative paths resolve against (default: the file's folder, else the current one). */
  baseDir?: string;
  /** Default run name when the pipeline has none (default: the file's base name, else "run"). */
  name?: string;
}

function defaultName(file: string | undefined): string {
  if (!file) return "run";
  const base = basename(file, extname(file)).replace(/[^A-Za-z0-9._-]+/g, "_");
  return base || "run";
}

/**
 * Validate a pipeline object against the schema and normalise it: defaults filled in, a bare
 * prompt array turned into `{ list }`, `model`, `prompts.file` and `output.dir` made absolute,
 * `baseDir` and `name` set. Throws a {@linkcode PipelineError} listing every problem by path.
 * Plugins and the model folder are not checked here (see `validatePipeline`).
 *
 * @example
 * ```ts
 * import { parsePipeline } from "@texforce/core";
 * const p = parsePipeline(
 *   { model: "./sd15", rewards: [{ use: "brightness" }], prompts: ["a cat"] },
 *   { file: "/work/pipelines/demo.yaml" },
 * );
 * console.log(p.model, p.sampler.steps); // /work/pipelines/sd15 50
 * ```
 */
export function parsePipeline(input: unknown, source: PipelineSource = {}): Pipeline {
  const where = source.file ?? "pipeline";
  const r = pipelineSchema.safeParse(input, { error: errorMap });
  if (!r.success) {
    throw new PipelineError(where, zodIssues(r.error, "", pipelineSchema as z.core.$ZodType));
  }
  const p = r.data;
  const baseDir = resolve(
    source.baseDir ?? (source.file ? resolve(source.file, "..") : Deno.cwd()),
  );
  const abs = (path: string) => (isAbsolute(path) ? resolve(path) : resolve(baseDir, path));
  const name = p.name ?? source.name ?? defaultName(source.file);
  const prompts: PromptSource = p.prompts.list !== undefined
    ? { list: p.prompts.list }
    : p.prompts.file !== undefined
    ? { file: abs(p.prompts.file) }
    : { builtin: p.prompts.builtin! };
  const out: Pipeline = {
    name,
    baseDir,
    model: abs(p.model),
    backend: p.backend,
    seed: p.seed,
    encoder: p.encoder,
    sampler: p.sampler,
    rewards: p.rewards,
    optimizer: p.optimizer,
    train: p.train,
    prompts,
    ...(p.eval ? { eval: p.eval } : {}),
    checkpoint: p.checkpoint,
    output: {
      dir: p.output.dir !== undefined ? abs(p.output.dir) : resolve("runs", name),
      saveImages: p.output.saveImages,
      exportFormats: p.output.exportFormats,
    },
  };
  return out;
}
