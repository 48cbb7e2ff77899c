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
import { foreignKeyIssues } from "./_foreign_keys.ts";
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
 * The sampler step. The trainer uses `batchSize` and `negativePrompt`; everything else belongs to
 * the sampler plugin: its `options`, and the `steps`, `eta` and `guidance` shorthands, passed to
 * the plugin's options when set (the built-in `ddim` gets TexForce's 50, 1 and 5 filled in, so a
 * normalised pipeline spells them out; another sampler gets only what is written).
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
  /** Denoising steps T (shorthand for the sampler plugin's `steps`). */
  steps?: number;
  /** DDIM eta (shorthand for the sampler plugin's `eta`; 1 = stochastic, needed for log-probs). */
  eta?: number;
  /** Classifier-free guidance scale (shorthand for the sampler plugin's `guidance`). */
  guidance?: number;
  /** Images per sampling batch (the trainer's; the UNet chunk is the plugin's `unetBatchSize`). */
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
 * The optimizer step (AdamW by default). The trainer applies `lr`, `maxGradNorm` and `schedule`;
 * everything else belongs to the optimizer plugin: its `options`, and the `betas`, `weightDecay`
 * and `eps` shorthands, passed to the plugin's options when set (the built-in `adamw` gets
 * TexForce's defaults filled in; another optimizer gets only what is written).
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
  /** Adam betas (shorthand for the optimizer plugin's `betas`). */
  betas?: [number, number];
  /** Decoupled weight decay (shorthand for the optimizer plugin's `weightDecay`). */
  weightDecay?: number;
  /** Adam epsilon (shorthand for the optimizer plugin's `eps`). */
  eps?: number;
  /** Global gradient-norm clipping threshold. */
  maxGradNorm: number;
  /** Learning-rate schedule. */
  schedule: LrScheduleConfig;
  /** Options of the optimizer plugin besides the shorthands (present only when written). */
  options?: Record<string, unknown>;
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
  /** Other options of the optimizer plugin (validated by its schema). */
  options?: Record<string, unknown>;
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

/**
 * The defaults of the built-in `ddim` sampler's and `adamw` optimizer's shorthand keys, filled in
 * when the pipeline uses them, so that a normalised pipeline (and `pipeline.json`) spells out
 * what the run used. They are the plugins' own schema defaults (a test holds them equal); a
 * pipeline that names another plugin gets none of them.
 */
const BUILTIN_SHORTHAND_DEFAULTS = {
  sampler: { ddim: { steps: 50, eta: 1, guidance: 5 } },
  optimizer: {
    adamw: { betas: [0.9, 0.999] as [number, number], weightDecay: 1e-4, eps: 1e-8 },
  },
} as const;

function builtinShorthands(p: { sampler: { use: string }; optimizer: { use: string } }): {
  sampler: { steps?: number; eta?: number; guidance?: number };
  optimizer: { betas?: [number, number]; weightDecay?: number; eps?: number };
} {
  const s = BUILTIN_SHORTHAND_DEFAULTS.sampler as Record<string, { steps: number }>;
  const o = BUILTIN_SHORTHAND_DEFAULTS.optimizer as Record<
    string,
    { betas: [number, number]; weightDecay: number; eps: number }
  >;
  return {
    sampler: Object.hasOwn(s, p.sampler.use) ? { ...s[p.sampler.use] } : {},
    optimizer: Object.hasOwn(o, p.optimizer.use)
      ? { ...o[p.optimizer.use], betas: [...o[p.optimizer.use].betas] }
      : {},
  };
}

/**
 * The shorthand defaults the schema fills in for the built-in `ddim` sampler and `adamw`
 * optimizer (their plugins' own defaults); `{}` for any other plugin.
 *
 * @example
 * ```ts
 * import { builtinShorthandDefaults } from "@texforce/core";
 * console.log(builtinShorthandDefaults("sampler", "ddim")); // { steps: 50, eta: 1, guidance: 5 }
 * ```
 */
export function builtinShorthandDefaults(
  kind: "sampler" | "optimizer",
  use: string,
): Record<string, unknown> {
  const both = builtinShorthands({
    sampler: { use: kind === "sampler" ? use : "" },
    optimizer: { use: kind === "optimizer" ? use : "" },
  });
  return both[kind];
}

/** The parsed form before paths are resolved (`name`/`output.dir` may still be missing). */
interface ParsedPipeline extends Omit<Pipeline, "name" | "baseDir" | "output" | "prompts"> {
  name?: string;
  prompts: { list?: string[]; file?: string; builtin?: string };
  output: Omit<OutputConfig, "dir"> & { dir?: string };
}

const pipelineObject = z.strictObject({
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
    steps: z.int().min(1).optional(),
    eta: z.number().min(0).optional(),
    guidance: z.number().min(0).optional(),
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
    betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).optional(),
    weightDecay: z.number().min(0).optional(),
    eps: z.number().positive().optional(),
    maxGradNorm: z.number().positive().default(1),
    schedule: z.strictObject({
      type: z.enum(["constant", "cosine"]).default("constant"),
      warmupSteps: z.int().min(0).default(0),
      minLr: z.number().min(0).default(0),
    }).prefault({}),
    options: z.record(z.string(), z.unknown()).optional(),
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
});

const pipelineSchema: z.ZodType<ParsedPipeline> = pipelineObject.check((ctx) => {
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
  const steps = p.sampler.steps ?? builtinShorthands(p).sampler.steps;
  if (steps !== undefined && Math.floor(steps * p.train.timestepFraction) < 1) {
    issue(
      ["train", "timestepFraction"],
      `trains no timestep: sampler.steps (${steps}) × ${p.train.timestepFraction} < 1`,
    );
  }
  if (p.optimizer.schedule.minLr > p.optimizer.lr) {
    issue(["optimizer", "schedule", "minLr"], `must be at most lr (${p.optimizer.lr})`);
  }
});

// The hand-written types above are the documented public API (JSR needs declared types); these
// compile-time checks hold them equal to what the schema accepts and returns, so they cannot
// drift apart: a key added to one but not the other fails `deno check`.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
/** Mutually assignable, with the same keys at every level (an extra optional key is drift). */
type DeepSame<A, B> = Same<A, B> extends true ? A extends readonly unknown[] ? true
  : A extends object ? Same<keyof A, keyof B> extends true ? {
        [K in keyof A]-?: DeepSame<NonNullable<A[K]>, NonNullable<B[K & keyof B]>>;
      }[keyof A]
    : false
  : true
  : false;
type SchemaInput = z.input<typeof pipelineObject>;
type SchemaOutput = z.output<typeof pipelineObject>;
const _inputMatches: Same<
  DeepSame<Omit<SchemaInput, "prompts">, Omit<PipelineInput, "prompts">>,
  true
> = true;
const _outputMatches: Same<DeepSame<SchemaOutput, ParsedPipeline>, true> = true;
void _inputMatches, _outputMatches;

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

/** `obj` with `first` keys first (in that order), so normalised files read in a fixed order. */
function orderedLike<T extends object>(obj: T, first: readonly string[]): T {
  const out: Record<string, unknown> = {};
  for (const k of first) if (k in obj) out[k] = (obj as Record<string, unknown>)[k];
  for (const [k, v] of Object.entries(obj)) if (!(k in out)) out[k] = v;
  return out as T;
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
    const issues = zodIssues(r.error, "", pipelineSchema as z.core.$ZodType);
    // A DDPO / trl key: say which key of ours it is (instead of the plain unknown-key line, also
    // for a whole unknown section such as DDPO's `sample`).
    const foreign = foreignKeyIssues(input);
    const section = (path: string): string[] => {
      const v = (input as Record<string, unknown>)?.[path];
      return v && typeof v === "object" && !Array.isArray(v) ? Object.keys(v) : [];
    };
    const replaced = (path: string) =>
      foreign.some((f) => f.path === path) ||
      (section(path).length > 0 &&
        section(path).every((k) => foreign.some((f) => f.path === `${path}.${k}`)));
    throw new PipelineError(where, [...issues.filter((i) => !replaced(i.path)), ...foreign]);
  }
  const p = r.data;
  const filled = builtinShorthands(p);
  const sampler = { ...p.sampler };
  for (const [k, v] of Object.entries(filled.sampler)) {
    const key = k as keyof typeof filled.sampler;
    if (sampler[key] === undefined) sampler[key] = v;
  }
  const optimizer = { ...p.optimizer };
  if (optimizer.betas === undefined && filled.optimizer.betas) {
    optimizer.betas = filled.optimizer.betas;
  }
  optimizer.weightDecay ??= filled.optimizer.weightDecay;
  optimizer.eps ??= filled.optimizer.eps;
  for (const k of ["betas", "weightDecay", "eps"] as const) {
    if (optimizer[k] === undefined) delete optimizer[k];
  }
  for (const k of ["steps", "eta", "guidance"] as const) {
    if (sampler[k] === undefined) delete sampler[k];
  }
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
    sampler: orderedLike(sampler, ["use", "steps", "eta", "guidance"]),
    rewards: p.rewards,
    optimizer: orderedLike(optimizer, ["use", "lr", "betas", "weightDecay", "eps"]),
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
