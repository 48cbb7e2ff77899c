/**
 * Declarative pipelines: load a pipeline file (`.yaml`, `.yml`, `.json` or a `.ts` module whose
 * default export is the config), apply `--set key=value` overrides, validate it (schema, model
 * folder, plugins and their options, prompts) and return the normalised {@linkcode Pipeline}.
 *
 * In YAML and JSON files, `${VAR}` and `${VAR:-default}` in strings are replaced by environment
 * variables (`$${` writes a literal `${`).
 *
 * @example
 * ```ts
 * import { loadPipeline } from "@texforce/core";
 * const p = await loadPipeline("examples/tiny_brightness.yaml", { set: ["train.epochs=1"] });
 * console.log(p.train.epochs); // 1
 * ```
 *
 * @module
 */
import { extname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { toFileUrl } from "./_file_url.ts";
import { PipelineError, type PipelineIssue } from "./pipeline_error.ts";
import { parsePipeline, type Pipeline } from "./pipeline_schema.ts";
import {
  type AnyPlugin,
  parsePluginOptions,
  PLUGIN_ALLOW_FILE,
  pluginAllowed,
  PluginError,
  type PluginKind,
  pluginOrigin,
  type PluginRegistry,
  readPluginAllowList,
} from "./plugin.ts";
import { preflightModel } from "./preflight.ts";
import { resolvePrompts } from "./prompts.ts";

/** Pipeline file extensions and how they are read. */
const FORMATS: Record<string, "yaml" | "json" | "module"> = {
  ".yaml": "yaml",
  ".yml": "yaml",
  ".json": "json",
  ".ts": "module",
  ".mts": "module",
  ".js": "module",
  ".mjs": "module",
};

/**
 * Options of {@linkcode validatePipeline}.
 *
 * @example
 * ```ts
 * import type { ValidatePipelineOptions } from "@texforce/core";
 * const o: ValidatePipelineOptions = { checkModel: false };
 * ```
 */
export interface ValidatePipelineOptions {
  /**
   * Plugins `use` names resolve in; needed unless `checkPlugins` is false (the root module's
   * `validatePipeline` / `loadPipeline` pass `builtinRegistry()`).
   */
  registry?: PluginRegistry;
  /** Check that the model folder exists and has every component (default true). */
  checkModel?: boolean;
  /** Resolve every plugin and validate its options (default true). */
  checkPlugins?: boolean;
  /** The pipeline file, named in errors. */
  file?: string;
  /**
   * Plugin modules the user consents to import although they are not inside the pipeline's
   * folder (`--allow-plugin`): exact specifiers, or prefixes ending in `/` or `:`. The
   * pipeline folder's `texforce.allow` adds to them.
   */
  allowPlugins?: string[];
  /** Told, before anything is imported, what each plugin module is and whether it will be. */
  onImport?: (line: string) => void;
}

/**
 * Options of {@linkcode loadPipeline}.
 *
 * @example
 * ```ts
 * import type { LoadPipelineOptions } from "@texforce/core";
 * const o: LoadPipelineOptions = { set: ["train.epochs=3", "rewards[0].weight=2"] };
 * ```
 */
export interface LoadPipelineOptions extends Omit<ValidatePipelineOptions, "file"> {
  /** `key=value` overrides applied before validation (see {@linkcode applyPipelineOverrides}). */
  set?: string[];
  /** Run {@linkcode validatePipeline} (default true); false checks the schema only. */
  validate?: boolean;
}

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

/**
 * The plugins of a pipeline with the options each plugin receives: `encoder.options`,
 * `{ ...sampler.options, steps, eta, guidance }` for the sampler, each `rewards[i].options`, and
 * `{ betas, weightDecay, eps }` for the optimizer (its `lr`, `maxGradNorm` and `schedule` are applied by the trainer). The trainer
 * and {@linkcode validatePipeline} both use this mapping.
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
  const o = pipeline.optimizer;
  const s = pipeline.sampler;
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
      use: pipeline.sampler.use,
      options: { ...s.options, steps: s.steps, eta: s.eta, guidance: s.guidance },
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
      use: o.use,
      options: { betas: o.betas, weightDecay: o.weightDecay, eps: o.eps },
      usePath: "optimizer.use",
      optionsPath: "optimizer",
    },
  ];
}

/**
 * Check what the schema cannot, without loading model weights: the model folder and its
 * components, every plugin (built-in name or module) and its options, and the prompt source.
 * Throws a {@linkcode PipelineError} listing every problem by path.
 *
 * @example
 * ```ts
 * import { parsePipeline, validatePipeline } from "@texforce/core";
 * const p = parsePipeline({ model: "m", rewards: [{ use: "brightness" }], prompts: ["a"] });
 * await validatePipeline(p, { checkModel: false });
 * ```
 */
export async function validatePipeline(
  pipeline: Pipeline,
  options: ValidatePipelineOptions = {},
): Promise<void> {
  const issues: PipelineIssue[] = [];
  if (options.checkModel !== false) {
    const variant = pipeline.encoder.options.variant;
    for (
      const message of await preflightModel(pipeline.model, {
        variant: typeof variant === "string" ? variant : undefined,
      })
    ) {
      issues.push({ path: "model", message });
    }
  }
  if (options.checkPlugins !== false) {
    const registry = options.registry;
    if (!registry) {
      throw new TypeError(
        "validatePipeline: options.registry is needed to check plugins (pass builtinRegistry())",
      );
    }
    const steps = pipelineSteps(pipeline);
    // Decide what may be imported, and say so, before importing anything: a plugin module runs
    // code with the command's permissions the moment it is imported.
    const allowed = [
      ...(options.allowPlugins ?? []),
      ...await readPluginAllowList(pipeline.baseDir),
    ];
    const refused = new Set<string>();
    for (const step of steps) {
      const origin = await pluginOrigin(step.use, pipeline.baseDir);
      if (origin === "builtin") continue;
      if (origin === "inside") {
        options.onImport?.(`${step.usePath}: importing ${step.use} (inside the pipeline's folder)`);
        continue;
      }
      const what = {
        outside: "a file outside the pipeline's folder",
        remote: "a remote module",
        package: "a package from a registry",
      }[origin];
      if (pluginAllowed(step.use, allowed)) {
        options.onImport?.(`${step.usePath}: importing ${step.use} (${what}, allowed)`);
        continue;
      }
      options.onImport?.(`${step.usePath}: not importing ${step.use} (${what}, not allowed)`);
      refused.add(step.usePath);
      issues.push({
        path: step.usePath,
        message: `'${step.use}' is ${what}; importing it runs its code with your permissions, ` +
          `so it is not imported without consent: pass --allow-plugin ${step.use}, or add it ` +
          `to ${PLUGIN_ALLOW_FILE} beside the pipeline`,
      });
    }
    const context = { baseDir: pipeline.baseDir, modelPath: pipeline.model, seed: pipeline.seed };
    for (const step of steps) {
      if (refused.has(step.usePath)) continue;
      let plugin: AnyPlugin;
      try {
        plugin = await registry.resolve(step.kind, step.use, pipeline.baseDir, step.usePath);
      } catch (e) {
        issues.push(...pluginIssues(e, step.usePath));
        continue;
      }
      let parsed: unknown;
      try {
        parsed = parsePluginOptions(plugin, step.options, step.optionsPath);
      } catch (e) {
        // The sampler's steps/eta/guidance are written as sampler.<key>, not in its options.
        issues.push(
          ...pluginIssues(e, step.optionsPath).map((i) => ({
            ...i,
            path: i.path.replace(/^sampler\.options\.(steps|eta|guidance)\b/, "sampler.$1"),
          })),
        );
        continue;
      }
      if (plugin.preflight && options.checkModel !== false) {
        try {
          for (const i of await plugin.preflight(parsed, context)) {
            issues.push({
              path: i.path ? `${step.optionsPath}.${i.path}` : step.optionsPath,
              message: i.message,
            });
          }
        } catch (e) {
          issues.push({ path: step.optionsPath, message: (e as Error).message });
        }
      }
    }
  }
  try {
    await resolvePrompts(pipeline);
  } catch (e) {
    const key = Object.keys(pipeline.prompts)[0];
    issues.push({ path: `prompts.${key}`, message: (e as Error).message });
  }
  for (const key of ["steps", "eta", "guidance"]) {
    if (key in pipeline.sampler.options) {
      issues.push({ path: `sampler.options.${key}`, message: `set sampler.${key} instead` });
    }
  }
  if (issues.length) throw new PipelineError(options.file ?? pipeline.name, issues);
}

function pluginIssues(e: unknown, path: string): PipelineIssue[] {
  if (e instanceof PluginError) {
    return e.issues.map((i) => ({ path: i.path || path, message: i.message }));
  }
  return [{ path, message: (e as Error).message ?? String(e) }];
}

// ---------------------------------------------------------------------------------------------
// Overrides.

function cloneConfig(config: unknown): unknown {
  try {
    return structuredClone(config);
  } catch {
    return config; // holds something uncloneable (a function): modified in place
  }
}

function parseOverrideValue(text: string): unknown {
  if (text.trim() === "") return "";
  try {
    return parseYaml(text);
  } catch {
    return text;
  }
}

function splitPath(key: string): string[] {
  return key.replace(/\[(\d+)\]/g, ".$1").split(".").filter((s) => s !== "");
}

/**
 * Apply `key=value` overrides to a pipeline object (not modified; a changed copy is returned).
 * Keys are dotted paths (`train.epochs`, `rewards.0.weight` or `rewards[0].weight`); values are
 * YAML scalars or flow collections (`3`, `7.5`, `true`, `"a b"`, `[0, 1]`, `{ quality: 80 }`).
 * Missing objects on the way are created; an array index may be one past the end (appends).
 * Throws a {@linkcode PipelineError} naming the bad override.
 *
 * @example
 * ```ts
 * import { applyPipelineOverrides } from "@texforce/core";
 * const out = applyPipelineOverrides({ train: { epochs: 100 } }, ["train.epochs=3"]);
 * console.log(out); // { train: { epochs: 3 } }
 * ```
 */
export function applyPipelineOverrides(
  config: unknown,
  set: readonly string[],
  file = "--set",
): unknown {
  if (set.length === 0) return config;
  let root: unknown = cloneConfig(config);
  const issues: PipelineIssue[] = [];
  for (const expr of set) {
    const eq = expr.indexOf("=");
    const key = eq < 0 ? "" : expr.slice(0, eq).trim();
    const path = splitPath(key);
    const where = `--set ${expr}`;
    if (eq < 0 || path.length === 0) {
      issues.push({ path: where, message: "expected key=value, e.g. train.epochs=3" });
      continue;
    }
    const value = parseOverrideValue(expr.slice(eq + 1));
    if (root === undefined || root === null) root = {};
    if (typeof root !== "object") {
      issues.push({ path: where, message: "the pipeline is not an object" });
      continue;
    }
    let node = root as Record<string, unknown> | unknown[];
    let ok = true;
    for (let i = 0; i < path.length && ok; i++) {
      const seg = path[i];
      const last = i === path.length - 1;
      const here = path.slice(0, i).join(".") || "(top level)";
      let slot: string | number = seg;
      if (Array.isArray(node)) {
        if (!/^\d+$/.test(seg) || Number(seg) > node.length) {
          issues.push({
            path: where,
            message:
              `${here} is a list of ${node.length}; '${seg}' is not an index from 0 to ${node.length}`,
          });
          ok = false;
          break;
        }
        slot = Number(seg);
      }
      const container = node as Record<string | number, unknown>;
      if (last) {
        container[slot] = value;
      } else {
        let next = container[slot];
        if (next === undefined || next === null) {
          next = /^\d+$/.test(path[i + 1]) ? [] : {};
          container[slot] = next;
        }
        if (typeof next !== "object") {
          issues.push({
            path: where,
            message: `${path.slice(0, i + 1).join(".")} is ${JSON.stringify(next)}, not an object`,
          });
          ok = false;
        } else {
          node = next as Record<string, unknown> | unknown[];
        }
      }
    }
  }
  if (issues.length) throw new PipelineError(file, issues);
  return root;
}

// ---------------------------------------------------------------------------------------------
// Environment variables in YAML/JSON strings.

function envValue(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: treat as unset
  }
}

function expandEnv(value: unknown, path: (string | number)[], issues: PipelineIssue[]): unknown {
  if (typeof value === "string") {
    if (!value.includes("${")) return value;
    return value.replace(
      /\$?\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g,
      (match, name: string, fallback: string | undefined) => {
        if (match.startsWith("$$")) return match.slice(1);
        const v = envValue(name);
        if (v !== undefined && v !== "") return v;
        if (fallback !== undefined) return fallback;
        issues.push({
          path: path.map((p, i) => typeof p === "number" ? `[${p}]` : i ? `.${p}` : p).join(""),
          message:
            `environment variable ${name} is not set (write \${${name}:-default} for a default)`,
        });
        return match;
      },
    );
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, [...path, i], issues));
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, expandEnv(v, [...path, k], issues)]),
    );
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Loading.

async function readConfig(file: string): Promise<unknown> {
  const format = FORMATS[extname(file).toLowerCase()];
  if (!format) {
    throw new PipelineError(file, [{
      path: "",
      message: `unknown pipeline file type; expected ${Object.keys(FORMATS).join(", ")}`,
    }]);
  }
  try {
    const st = await Deno.stat(file);
    if (!st.isFile) throw new Error();
  } catch {
    throw new PipelineError(file, [{ path: "", message: "pipeline file not found" }]);
  }
  if (format === "module") {
    let mod: Record<string, unknown>;
    try {
      mod = await import(toFileUrl(file));
    } catch (e) {
      const msg = (e as Error).message.split("\n")[0];
      throw new PipelineError(file, [{
        path: "",
        message: `cannot import pipeline module: ${msg}`,
      }]);
    }
    if (mod.default === undefined || typeof mod.default !== "object" || mod.default === null) {
      throw new PipelineError(file, [{
        path: "",
        message: "the module has no pipeline default export " +
          "(expected export default definePipeline({ ... }, import.meta))",
      }]);
    }
    return cloneConfig(mod.default);
  }
  const text = await Deno.readTextFile(file);
  let data: unknown;
  try {
    data = format === "json" ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    const msg = (e as Error).message.split("\n")[0];
    throw new PipelineError(file, [{
      path: "",
      message: `invalid ${format.toUpperCase()}: ${msg}`,
    }]);
  }
  const issues: PipelineIssue[] = [];
  data = expandEnv(data, [], issues);
  if (issues.length) throw new PipelineError(file, issues);
  return data;
}

/**
 * Load a pipeline file (`.yaml`, `.yml`, `.json`, or a `.ts` module whose default export is the
 * config), apply `set` overrides, check it against the schema and (unless `validate: false`)
 * with {@linkcode validatePipeline}. Relative paths resolve against the file's folder. Throws a
 * {@linkcode PipelineError} listing every problem by path.
 *
 * @example
 * ```ts
 * import { loadPipeline } from "@texforce/core";
 * const p = await loadPipeline("examples/tiny_brightness.yaml", { set: ["sampler.guidance=7.5"] });
 * console.log(p.sampler.guidance); // 7.5
 * ```
 */
export async function loadPipeline(
  path: string,
  options: LoadPipelineOptions = {},
): Promise<Pipeline> {
  const file = isAbsolute(path) ? resolve(path) : resolve(Deno.cwd(), path);
  let config = await readConfig(file);
  config = applyPipelineOverrides(config, options.set ?? [], file);
  const pipeline = parsePipeline(config, { file });
  if (options.validate !== false) {
    await validatePipeline(pipeline, { ...options, file });
  }
  return pipeline;
}
