/**
 * The assembly of a run: which plugin each step of a pipeline uses and the options it gets.
 * {@linkcode pipelineSteps} is the one place that maps a pipeline to plugin options;
 * {@linkcode assemble} resolves every plugin and parses its options once; `validatePipeline`
 * uses it without loading weights, and {@linkcode buildParts} creates the run's parts from it.
 *
 * @example
 * ```ts
 * import { assemble, builtinRegistry, loadPipeline } from "@texforce/core";
 * const pipeline = await loadPipeline("examples/tiny_brightness.yaml");
 * const assembly = await assemble(pipeline, builtinRegistry());
 * console.log(assembly.sampler.plugin.name, assembly.sampler.options);
 * ```
 *
 * @module
 */
import { PipelineError, type PipelineIssue } from "./pipeline_error.ts";
import type { Pipeline } from "./pipeline_schema.ts";
import {
  type AnyPlugin,
  parsePluginOptions,
  PLUGIN_ALLOW_FILE,
  pluginAllowed,
  type PluginContext,
  PluginError,
  type PluginKind,
  type PluginKinds,
  pluginOrigin,
  type PluginRegistry,
  readPluginAllowList,
} from "./plugin.ts";
import type { RewardTerm } from "./trainer.ts";

/**
 * One plugin a pipeline uses: its kind, `use`, the options its factory receives and the pipeline
 * paths that errors name.
 *
 * @example
 * ```ts
 * import { loadPipeline, pipelineSteps } from "@texforce/core";
 * for (const s of pipelineSteps(await loadPipeline("examples/tiny_brightness.yaml"))) {
 *   console.log(s.kind, s.use, s.optionsPath);
 * }
 * ```
 */
export interface PipelineStepRef {
  /** Plugin kind. */
  kind: PluginKind;
  /** Built-in name or module specifier. */
  use: string;
  /** The options given to the plugin's schema and factory. */
  options: Record<string, unknown>;
  /** Path of `use` for errors, e.g. `rewards[0].use`. */
  usePath: string;
  /** Path the option names are appended to, e.g. `rewards[0].options`. */
  optionsPath: string;
}

/** Pipeline keys written beside a step's options that its plugin receives as options. */
const SAMPLER_SHORTHANDS = ["steps", "eta", "guidance"] as const;
const OPTIMIZER_SHORTHANDS = ["betas", "weightDecay", "eps"] as const;

function setKeys<T extends object>(obj: T, keys: readonly (keyof T)[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (obj[k] !== undefined) out[String(k)] = obj[k];
  return out;
}

/**
 * The plugins of a pipeline with the options each plugin receives: `encoder.options`;
 * `sampler.options` plus the `sampler.steps`, `sampler.eta` and `sampler.guidance` shorthands
 * that are set; each `rewards[i].options`; and `optimizer.options` plus the `optimizer.betas`,
 * `optimizer.weightDecay` and `optimizer.eps` shorthands that are set (the trainer applies `lr`,
 * `maxGradNorm` and `schedule` itself). This is the only place that maps a pipeline to plugin
 * options.
 *
 * @example
 * ```ts
 * import { parsePipeline, pipelineSteps } from "@texforce/core";
 * const p = parsePipeline({ model: "m", rewards: [{ use: "brightness" }], prompts: ["a"] });
 * console.log(pipelineSteps(p).map((s) => `${s.kind}:${s.use}`));
 * // ["encoder:clip-lora", "sampler:ddim", "reward:brightness", "optimizer:adamw"]
 * ```
 */
export function pipelineSteps(pipeline: Pipeline): PipelineStepRef[] {
  const s = pipeline.sampler;
  const o = pipeline.optimizer;
  return [
    {
      kind: "encoder",
      use: pipeline.encoder.use,
      options: pipeline.encoder.options,
      usePath: "encoder.use",
      optionsPath: "encoder.options",
    },
    {
      kind: "sampler",
      use: s.use,
      options: { ...s.options, ...setKeys(s, SAMPLER_SHORTHANDS) },
      usePath: "sampler.use",
      optionsPath: "sampler.options",
    },
    ...pipeline.rewards.map((r, i): PipelineStepRef => ({
      kind: "reward",
      use: r.use,
      options: r.options,
      usePath: `rewards[${i}].use`,
      optionsPath: `rewards[${i}].options`,
    })),
    {
      kind: "optimizer",
      use: pipeline.optimizer.use,
      options: { ...o.options, ...setKeys(o, OPTIMIZER_SHORTHANDS) },
      usePath: "optimizer.use",
      optionsPath: "optimizer",
    },
  ];
}

/**
 * A resolved step: its plugin and the options its schema returned (defaults filled in).
 *
 * @example
 * ```ts
 * import type { AssembledStep } from "@texforce/core";
 * declare const step: AssembledStep<"sampler">;
 * console.log(step.plugin.name, step.options);
 * ```
 */
export interface AssembledStep<K extends PluginKind = PluginKind> {
  /** Where the step comes from in the pipeline (its raw options included). */
  ref: PipelineStepRef & { kind: K };
  /** The plugin `use` named. */
  plugin: AnyPlugin;
  /** The options after the plugin's schema (what `create` and `preflight` receive). */
  options: Record<string, unknown>;
}

/**
 * A resolved reward term: its step, weight and the name it has in logs and metrics (the
 * plugin's name unless `name` is given; a repeated name gets `_2`, `_3`, …).
 *
 * @example
 * ```ts
 * import type { AssembledReward } from "@texforce/core";
 * declare const r: AssembledReward;
 * console.log(r.name, r.weight);
 * ```
 */
export interface AssembledReward extends AssembledStep<"reward"> {
  /** Name in logs and metrics. */
  name: string;
  /** Weight in the total reward. */
  weight: number;
}

/**
 * Every plugin of a pipeline, resolved, with its options parsed.
 *
 * @example
 * ```ts
 * import { assemble, builtinRegistry, loadPipeline } from "@texforce/core";
 * const a = await assemble(await loadPipeline("examples/tiny_brightness.yaml"), builtinRegistry());
 * console.log(a.rewards.map((r) => r.name));
 * ```
 */
export interface Assembly {
  /** The pipeline assembled. */
  pipeline: Pipeline;
  /** The text encoder (the policy). */
  encoder: AssembledStep<"encoder">;
  /** The sampler. */
  sampler: AssembledStep<"sampler">;
  /** The reward terms. */
  rewards: AssembledReward[];
  /** The optimizer. */
  optimizer: AssembledStep<"optimizer">;
}

/**
 * Options of {@linkcode assemble}.
 *
 * @example
 * ```ts
 * import type { AssembleOptions } from "@texforce/core";
 * const o: AssembleOptions = { consent: { allowPlugins: ["npm:"] } };
 * ```
 */
export interface AssembleOptions {
  /**
   * Ask before importing plugin modules: a module outside the pipeline's folder, a remote one
   * or a package is imported only when `allowPlugins` or the folder's `texforce.allow` allows
   * it. Without `consent` every module is imported (the pipeline was validated with it).
   */
  consent?: {
    /** Exact specifiers, or prefixes ending in `/` or `:` (`--allow-plugin`). */
    allowPlugins?: string[];
    /** Told, before anything is imported, what each plugin module is and whether it will be. */
    onImport?: (line: string) => void;
  };
  /** The pipeline file, named in errors. */
  file?: string;
}

/**
 * What {@linkcode tryAssemble} found: the assembly when every step resolved, and every problem.
 *
 * @example
 * ```ts
 * import type { AssemblyResult } from "@texforce/core";
 * declare const r: AssemblyResult;
 * console.log(r.assembly === null ? r.issues : r.assembly.sampler.options);
 * ```
 */
export interface AssemblyResult {
  /** The assembly, or null when a step failed. */
  assembly: Assembly | null;
  /** The problems, each with its pipeline path. */
  issues: PipelineIssue[];
  /** The steps that resolved and parsed (all of them when `assembly` is set). */
  steps: AssembledStep[];
}

/** The last assembly of each pipeline object, reused while its steps are unchanged. */
const assembled = new WeakMap<
  Pipeline,
  { registry: PluginRegistry; fingerprint: string; consented: boolean; assembly: Assembly }
>();

/**
 * Where the user wrote the option a plugin's error names: a sampler shorthand that is set is
 * written as `sampler.<key>`, not in `sampler.options`; an optimizer option other than a set
 * shorthand is written in `optimizer.options`.
 */
function writtenAt(pipeline: Pipeline, path: string): string {
  const s = path.match(/^sampler\.options\.([A-Za-z_$][\w$]*)(.*)$/);
  if (s && (SAMPLER_SHORTHANDS as readonly string[]).includes(s[1])) {
    const key = s[1] as typeof SAMPLER_SHORTHANDS[number];
    if (pipeline.sampler[key] !== undefined) return `sampler.${key}${s[2]}`;
  }
  const o = path.match(/^optimizer\.([A-Za-z_$][\w$]*)(.*)$/);
  if (o) {
    const key = o[1] as typeof OPTIMIZER_SHORTHANDS[number];
    const shorthand = (OPTIMIZER_SHORTHANDS as readonly string[]).includes(key) &&
      pipeline.optimizer[key] !== undefined;
    if (!shorthand) return `optimizer.options.${o[1]}${o[2]}`;
  }
  return path;
}

function pluginIssues(e: unknown, path: string): PipelineIssue[] {
  if (e instanceof PluginError) {
    return e.issues.map((i) => ({ path: i.path || path, message: i.message }));
  }
  return [{ path, message: (e as Error).message ?? String(e) }];
}

async function refusedImports(
  pipeline: Pipeline,
  steps: PipelineStepRef[],
  consent: NonNullable<AssembleOptions["consent"]>,
  issues: PipelineIssue[],
): Promise<Set<string>> {
  // Decide what may be imported, and say so, before importing anything: a plugin module runs
  // code with the command's permissions the moment it is imported.
  const allowed = [
    ...(consent.allowPlugins ?? []),
    ...await readPluginAllowList(pipeline.baseDir),
  ];
  const refused = new Set<string>();
  for (const step of steps) {
    const origin = await pluginOrigin(step.use, pipeline.baseDir);
    if (origin === "builtin") continue;
    if (origin === "inside") {
      consent.onImport?.(`${step.usePath}: importing ${step.use} (inside the pipeline's folder)`);
      continue;
    }
    const what = {
      outside: "a file outside the pipeline's folder",
      remote: "a remote module",
      package: "a package from a registry",
    }[origin];
    if (pluginAllowed(step.use, allowed)) {
      consent.onImport?.(`${step.usePath}: importing ${step.use} (${what}, allowed)`);
      continue;
    }
    consent.onImport?.(`${step.usePath}: not importing ${step.use} (${what}, not allowed)`);
    refused.add(step.usePath);
    issues.push({
      path: step.usePath,
      message: `'${step.use}' is ${what}; importing it runs its code with your permissions, ` +
        `so it is not imported without consent: pass --allow-plugin ${step.use}, or add it ` +
        `to ${PLUGIN_ALLOW_FILE} beside the pipeline`,
    });
  }
  return refused;
}

/**
 * Resolve every plugin of `pipeline` in `registry` and parse its options with the plugin's
 * schema, collecting every problem instead of stopping at the first. Loads no weights.
 *
 * @example
 * ```ts
 * import { builtinRegistry, parsePipeline, tryAssemble } from "@texforce/core";
 * const p = parsePipeline({ model: "m", rewards: [{ use: "brightnes" }], prompts: ["a"] });
 * const { issues } = await tryAssemble(p, builtinRegistry());
 * console.log(issues[0].path); // rewards[0].use
 * ```
 */
export async function tryAssemble(
  pipeline: Pipeline,
  registry: PluginRegistry,
  options: AssembleOptions = {},
): Promise<AssemblyResult> {
  const steps = pipelineSteps(pipeline);
  const fingerprint = JSON.stringify(steps);
  const memo = assembled.get(pipeline);
  if (
    memo && memo.registry === registry && memo.fingerprint === fingerprint &&
    (memo.consented || !options.consent)
  ) {
    return { assembly: memo.assembly, issues: [], steps: assemblySteps(memo.assembly) };
  }
  const issues: PipelineIssue[] = [];
  const refused = options.consent
    ? await refusedImports(pipeline, steps, options.consent, issues)
    : new Set<string>();
  const resolved: (AssembledStep | null)[] = [];
  for (const ref of steps) {
    if (refused.has(ref.usePath)) {
      resolved.push(null);
      continue;
    }
    let plugin: AnyPlugin;
    try {
      plugin = await registry.resolve(ref.kind, ref.use, pipeline.baseDir, ref.usePath);
    } catch (e) {
      issues.push(...pluginIssues(e, ref.usePath));
      resolved.push(null);
      continue;
    }
    try {
      const parsed = parsePluginOptions(plugin, ref.options, ref.optionsPath);
      resolved.push({ ref, plugin, options: parsed as Record<string, unknown> });
    } catch (e) {
      issues.push(
        ...pluginIssues(e, ref.optionsPath).map((i) => ({
          ...i,
          path: writtenAt(pipeline, i.path),
        })),
      );
      resolved.push(null);
    }
  }
  for (const key of SAMPLER_SHORTHANDS) {
    if (key in pipeline.sampler.options && pipeline.sampler[key] !== undefined) {
      issues.push({ path: `sampler.options.${key}`, message: `set sampler.${key} instead` });
    }
  }
  for (const key of OPTIMIZER_SHORTHANDS) {
    if (key in (pipeline.optimizer.options ?? {}) && pipeline.optimizer[key] !== undefined) {
      issues.push({ path: `optimizer.options.${key}`, message: `set optimizer.${key} instead` });
    }
  }
  const ok = resolved.filter((r): r is AssembledStep => r !== null);
  if (issues.length || ok.length < resolved.length) return { assembly: null, issues, steps: ok };
  const [encoder, sampler, ...rest] = resolved as AssembledStep[];
  const optimizer = rest.pop()!;
  const seen = new Map<string, number>();
  const rewards = rest.map((step, i): AssembledReward => {
    const r = pipeline.rewards[i];
    let name = r.name ?? step.plugin.name;
    const n = seen.get(name) ?? 0;
    seen.set(name, n + 1);
    if (n > 0) name = `${name}_${n + 1}`;
    return { ...(step as AssembledStep<"reward">), name, weight: r.weight };
  });
  const assembly: Assembly = {
    pipeline,
    encoder: encoder as AssembledStep<"encoder">,
    sampler: sampler as AssembledStep<"sampler">,
    rewards,
    optimizer: optimizer as AssembledStep<"optimizer">,
  };
  assembled.set(pipeline, { registry, fingerprint, consented: !!options.consent, assembly });
  return { assembly, issues, steps: ok };
}

function assemblySteps(a: Assembly): AssembledStep[] {
  return [a.encoder, a.sampler, ...a.rewards, a.optimizer];
}

/**
 * Resolve every plugin of `pipeline` and parse its options, once: assembling the same pipeline
 * object with the same registry again returns the same assembly while its steps are unchanged
 * (validation, then the run). Throws a {@linkcode PipelineError} listing every problem.
 *
 * @example
 * ```ts
 * import { assemble, builtinRegistry, loadPipeline } from "@texforce/core";
 * const a = await assemble(await loadPipeline("examples/tiny_brightness.yaml"), builtinRegistry());
 * console.log(a.optimizer.options); // { betas: [0.9, 0.999], weightDecay: 0.0001, eps: 1e-8 }
 * ```
 */
export async function assemble(
  pipeline: Pipeline,
  registry: PluginRegistry,
  options: AssembleOptions = {},
): Promise<Assembly> {
  const { assembly, issues } = await tryAssemble(pipeline, registry, options);
  if (!assembly) throw new PipelineError(options.file ?? pipeline.name, issues);
  return assembly;
}

/**
 * Run the `preflight` of each step's plugin (the files `create` would read exist and parse),
 * without loading weights: every step of an assembly, or the steps of a {@linkcode tryAssemble}
 * that resolved. Problems are named by pipeline path (`rewards[0].options.clipModel`).
 *
 * @example
 * ```ts
 * import { assemble, builtinRegistry, loadPipeline, preflightSteps } from "@texforce/core";
 * const a = await assemble(await loadPipeline("examples/tiny_brightness.yaml"), builtinRegistry());
 * console.log(await preflightSteps(a)); // []
 * ```
 */
export async function preflightSteps(
  from: Assembly | { pipeline: Pipeline; steps: AssembledStep[] },
): Promise<PipelineIssue[]> {
  const p = from.pipeline;
  const context: PluginContext = { baseDir: p.baseDir, modelPath: p.model, seed: p.seed };
  const issues: PipelineIssue[] = [];
  const steps = "steps" in from ? from.steps : assemblySteps(from);
  for (const step of steps) {
    if (!step.plugin.preflight) continue;
    const where = step.ref.optionsPath;
    try {
      for (const i of await step.plugin.preflight(step.options, context)) {
        issues.push({ path: i.path ? `${where}.${i.path}` : where, message: i.message });
      }
    } catch (e) {
      issues.push({ path: where, message: (e as Error).message });
    }
  }
  return issues;
}

/**
 * The parts {@linkcode buildParts} created, what each reward is (for `run.json`) and how to
 * release them.
 *
 * @example
 * ```ts
 * import type { BuiltParts } from "@texforce/core";
 * declare const built: BuiltParts;
 * try { console.log(built.encoder.name); } finally { built.dispose(); }
 * ```
 */
export interface BuiltParts {
  /** The policy. */
  encoder: PluginKinds["encoder"];
  /** The encoder's options as its plugin parsed them (recorded in checkpoints). */
  encoderOptions: Record<string, unknown>;
  /** The sampler. */
  sampler: PluginKinds["sampler"];
  /** The weighted reward terms. */
  rewards: RewardTerm[];
  /** One record per reward: name, plugin, version, `use`, metadata. */
  rewardRecords: Record<string, unknown>[];
  /** The optimizer over the encoder's trainable variables. */
  optimizer: PluginKinds["optimizer"];
  /** Dispose of every part (in reverse order of creation). */
  dispose(): void;
}

/**
 * Create the run's parts from an assembly: the encoder, the sampler (given the encoder), each
 * reward, and the optimizer over the encoder's trainable variables. A part that fails to build
 * releases the ones already built.
 *
 * @example
 * ```ts
 * import { assemble, buildParts, builtinRegistry, loadPipeline } from "@texforce/core";
 * const a = await assemble(await loadPipeline("examples/tiny_brightness.yaml"), builtinRegistry());
 * const parts = await buildParts(a);
 * parts.dispose();
 * ```
 */
export async function buildParts(
  assembly: Assembly,
  context: Partial<PluginContext> = {},
): Promise<BuiltParts> {
  const p = assembly.pipeline;
  const ctx: PluginContext = { baseDir: p.baseDir, modelPath: p.model, seed: p.seed, ...context };
  const disposers: (() => void)[] = [];
  const dispose = () => {
    for (const d of disposers.reverse()) d();
    disposers.length = 0;
  };
  const create = async <K extends PluginKind>(
    step: AssembledStep<K>,
    extra: Partial<PluginContext> = {},
  ): Promise<PluginKinds[K]> =>
    (await step.plugin.create(step.options, { ...ctx, ...extra })) as PluginKinds[K];
  try {
    const encoder = await create(assembly.encoder);
    disposers.push(() => encoder.dispose());
    const sampler = await create(assembly.sampler, { encoder });
    disposers.push(() => sampler.dispose());
    const rewards: RewardTerm[] = [];
    const rewardRecords: Record<string, unknown>[] = [];
    for (const r of assembly.rewards) {
      const reward = await create(r);
      disposers.push(() => reward.dispose?.());
      rewards.push({ name: r.name, weight: r.weight, reward });
      rewardRecords.push({
        name: r.name,
        plugin: r.plugin.name,
        version: r.plugin.version,
        use: r.ref.use,
        ...(reward.metadata ? { metadata: reward.metadata } : {}),
      });
    }
    const optimizer = await create(assembly.optimizer, {
      variables: encoder.trainableVariables(),
    });
    disposers.push(() => optimizer.dispose());
    return {
      encoder,
      encoderOptions: assembly.encoder.options,
      sampler,
      rewards,
      rewardRecords,
      optimizer,
      dispose,
    };
  } catch (e) {
    dispose();
    throw e;
  }
}
