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
import type { PluginRegistry } from "./plugin.ts";
import { preflightSteps, tryAssemble } from "./assemble.ts";
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
    const { issues: found, steps } = await tryAssemble(pipeline, registry, {
      consent: { allowPlugins: options.allowPlugins ?? [], onImport: options.onImport },
    });
    issues.push(...found);
    if (options.checkModel !== false) issues.push(...await preflightSteps({ pipeline, steps }));
  }
  try {
    await resolvePrompts(pipeline);
  } catch (e) {
    const key = Object.keys(pipeline.prompts)[0];
    issues.push({ path: `prompts.${key}`, message: (e as Error).message });
  }
  if (issues.length) throw new PipelineError(options.file ?? pipeline.name, issues);
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
