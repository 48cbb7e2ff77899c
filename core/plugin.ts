/**
 * Plugins: a kind, a name, a version, a zod schema for options and a factory. Built-in plugins
 * live in a {@linkcode PluginRegistry}; others are loaded from a module specifier with dynamic
 * `import()`.
 *
 * @module
 */
import { isAbsolute, relative, resolve } from "node:path";
import { toFileUrl } from "./_file_url.ts";
import type { z } from "zod";
import { didYouMean, errorMap, issueLines, zodIssues } from "./_zod_issues.ts";
import type { Encoder } from "./encoder.ts";
import type { ModelCache } from "./model_cache.ts";
import type { Optimizer } from "./optimizer.ts";
import type { Reward } from "./reward.ts";
import type { Sampler } from "./sampler.ts";
import type { Schema, Variable } from "./tensor_types.ts";

/**
 * The kinds of plugin and the object each one creates.
 *
 * @example
 * ```ts
 * import type { PluginKinds } from "@texforce/core";
 * type MadeByRewardPlugins = PluginKinds["reward"]; // Reward
 * ```
 */
export interface PluginKinds {
  /** Text encoders (`clip-lora`). */
  encoder: Encoder;
  /** Samplers (`ddim`). */
  sampler: Sampler;
  /** Rewards (`jpeg-compressibility`, …). */
  reward: Reward;
  /** Optimizers (`adamw`). */
  optimizer: Optimizer;
}

/**
 * One of `encoder`, `sampler`, `reward`, `optimizer`.
 *
 * @example
 * ```ts
 * import type { PluginKind } from "@texforce/core";
 * const kind: PluginKind = "reward";
 * ```
 */
export type PluginKind = keyof PluginKinds;

/**
 * The plugin kinds, for validation messages.
 *
 * @example
 * ```ts
 * import { PLUGIN_KINDS } from "@texforce/core";
 * console.log(PLUGIN_KINDS.join(", ")); // encoder, sampler, reward, optimizer
 * ```
 */
export const PLUGIN_KINDS: readonly PluginKind[] = ["encoder", "sampler", "reward", "optimizer"];

/**
 * What a plugin factory receives besides its options.
 *
 * @example
 * ```ts
 * import type { PluginContext } from "@texforce/core";
 * const context: PluginContext = { baseDir: Deno.cwd(), modelPath: "/models/sd15" };
 * ```
 */
export interface PluginContext {
  /** Folder that relative paths in options resolve against (the pipeline file's folder). */
  baseDir: string;
  /** The diffusers model folder of the run, when there is one. */
  modelPath?: string;
  /** The run's seed: plugins with random initialisation (LoRA weights) derive theirs from it. */
  seed?: number;
  /** The encoder of the run (samplers need its hidden size). */
  encoder?: Encoder;
  /** Variables an optimizer updates. */
  variables?: Map<string, Variable>;
  /** Models shared by the run's plugins (one CLIP for aesthetic, clip-score and pickscore). */
  models?: ModelCache;
}

/**
 * A plugin definition.
 *
 * @example
 * ```ts
 * import { definePlugin } from "@texforce/core";
 * import { z } from "zod";
 * export default definePlugin({
 *   kind: "reward",
 *   name: "brightness",
 *   version: "1.0.0",
 *   options: z.object({ scale: z.number().default(1) }),
 *   create: (o) => ({
 *     name: "brightness",
 *     score: async ({ images }) => Array.from(await images.mean([1, 2, 3]).mul(o.scale).data()),
 *   }),
 * });
 * ```
 */
export interface Plugin<K extends PluginKind = PluginKind, O = unknown> {
  /** What it creates. */
  kind: K;
  /** Name used in pipeline files (`use: name`). */
  name: string;
  /** Semver of the plugin. */
  version: string;
  /** One line for `--help` and reports. */
  description?: string;
  /** Schema of the options; unknown keys should be rejected (`z.strictObject`). */
  options: Schema<O>;
  /** Build the object from validated options. */
  create(options: O, context: PluginContext): PluginKinds[K] | Promise<PluginKinds[K]>;
  /**
   * Check the files `create` would read (they exist and parse) without loading weights; each
   * problem's `path` is the option that names the file (e.g. `clipModel`). `validate` and the
   * start of `run` call it, so a missing file is reported before minutes of model loading.
   */
  preflight?(options: O, context: PluginContext): PluginIssue[] | Promise<PluginIssue[]>;
}

/**
 * A plugin of any kind and options type.
 *
 * @example
 * ```ts
 * import { type AnyPlugin, PluginRegistry } from "@texforce/core";
 * const all: AnyPlugin[] = new PluginRegistry().list();
 * ```
 */
// deno-lint-ignore no-explicit-any
export type AnyPlugin = Plugin<PluginKind, any>;

/**
 * Declare a plugin (identity function that checks the shape at compile time).
 *
 * @example
 * ```ts
 * import { definePlugin } from "@texforce/core";
 * import { z } from "zod";
 * const p = definePlugin({
 *   kind: "reward",
 *   name: "zero",
 *   version: "0.1.0",
 *   options: z.strictObject({}),
 *   create: () => ({ name: "zero", score: ({ prompts }) => Promise.resolve(prompts.map(() => 0)) }),
 * });
 * ```
 */
export function definePlugin<K extends PluginKind, O>(plugin: Plugin<K, O>): Plugin<K, O> {
  return plugin;
}

/**
 * One problem found while resolving a plugin or validating its options.
 *
 * @example
 * ```ts
 * import type { PluginIssue } from "@texforce/core";
 * const issue: PluginIssue = { path: "rewards[0].options.quality", message: "expected number" };
 * ```
 */
export interface PluginIssue {
  /** Pipeline path of the problem, e.g. `rewards[0].use` or `rewards[0].options.quality`. */
  path: string;
  /** What is wrong and what was expected. */
  message: string;
}

/**
 * An error about a plugin: names the specifier and, for options, the option path. `issues` holds
 * the same problems one per entry (a pipeline validation collects them).
 *
 * @example
 * ```ts
 * import { PluginError } from "@texforce/core";
 * const e = new PluginError("rewards[0].use: unknown reward plugin 'x'", [
 *   { path: "rewards[0].use", message: "unknown reward plugin 'x'" },
 * ]);
 * console.log(e.issues[0].path);
 * ```
 */
export class PluginError extends Error {
  /** The problems, each with its pipeline path. */
  readonly issues: PluginIssue[];
  /** Builds the error; without `issues`, the message is the single issue (path ""). */
  constructor(message: string, issues?: PluginIssue[]) {
    super(message);
    this.name = "PluginError";
    this.issues = issues ?? [{ path: "", message }];
  }
}

function issueError(path: string, message: string): PluginError {
  return new PluginError(`${path}: ${message}`, [{ path, message }]);
}

/**
 * Whether `use` names a module (`./x.ts`, `/abs/x.ts`, `npm:`, `jsr:`, `https:`, `file:`) rather
 * than a built-in plugin.
 *
 * @example
 * ```ts
 * import { isModuleSpecifier } from "@texforce/core";
 * isModuleSpecifier("./my_reward.ts"); // true
 * isModuleSpecifier("jpeg-compressibility"); // false
 * ```
 */
export function isModuleSpecifier(use: string): boolean {
  return /^(\.{1,2}\/|\/|npm:|jsr:|https?:|file:)/.test(use);
}

function isPlugin(x: unknown): x is AnyPlugin {
  const p = x as AnyPlugin;
  return typeof p === "object" && p !== null && typeof p.kind === "string" &&
    typeof p.name === "string" && typeof p.version === "string" &&
    typeof p.create === "function" && typeof p.options === "object" &&
    p.options !== null && typeof (p.options as { safeParse?: unknown }).safeParse === "function";
}

/**
 * Built-in plugins by kind and name, plus loading of plugin modules.
 *
 * @example
 * ```ts
 * import { PluginRegistry } from "@texforce/core";
 * const registry = new PluginRegistry();
 * console.log(registry.list("reward").map((p) => p.name));
 * ```
 */
export class PluginRegistry {
  #plugins = new Map<string, AnyPlugin>();

  /** Create a registry holding `plugins`. */
  constructor(plugins: AnyPlugin[] = []) {
    for (const p of plugins) this.register(p);
  }

  /** Add a plugin; a second plugin of the same kind and name replaces the first. */
  register(plugin: AnyPlugin): void {
    if (!isPlugin(plugin)) throw new PluginError("register(): not a plugin definition");
    this.#plugins.set(`${plugin.kind}:${plugin.name}`, plugin);
  }

  /** Plugins of a kind (or all). */
  list(kind?: PluginKind): AnyPlugin[] {
    return [...this.#plugins.values()].filter((p) => !kind || p.kind === kind);
  }

  /** A built-in plugin, or undefined. */
  get(kind: PluginKind, name: string): AnyPlugin | undefined {
    return this.#plugins.get(`${kind}:${name}`);
  }

  /**
   * Resolve `use` (a built-in name or a module specifier, relative to `baseDir`) to a plugin of
   * `kind`. `where` names the pipeline path for errors (e.g. `rewards[0].use`).
   */
  async resolve(kind: PluginKind, use: string, baseDir: string, where: string): Promise<AnyPlugin> {
    if (!isModuleSpecifier(use)) {
      const p = this.get(kind, use);
      if (!p) {
        const names = this.list(kind).map((x) => x.name);
        const hint = didYouMean(use, names);
        throw issueError(
          where,
          `unknown ${kind} plugin '${use}'${hint ? ` (did you mean '${hint}'?)` : ""}; ` +
            `built-in: ${names.join(", ") || "none"}; ` +
            "or give a module specifier such as ./my_plugin.ts, jsr:@scope/name or npm:name",
        );
      }
      return p;
    }
    return await loadPluginModule(use, baseDir, kind, where);
  }
}

/**
 * Import a plugin module and return its plugin of `kind` (the default export, or any export
 * that is a plugin of that kind).
 *
 * @example
 * ```ts
 * import { loadPluginModule } from "@texforce/core";
 * const p = await loadPluginModule("./my_reward.ts", Deno.cwd(), "reward", "rewards[0].use");
 * ```
 */
export async function loadPluginModule(
  specifier: string,
  baseDir: string,
  kind: PluginKind,
  where: string,
): Promise<AnyPlugin> {
  let url = specifier;
  if (/^(\.{1,2}\/|\/)/.test(specifier)) {
    const abs = isAbsolute(specifier) ? specifier : resolve(baseDir, specifier);
    url = toFileUrl(abs);
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(url);
  } catch (e) {
    const msg = (e as Error).message.split("\n")[0];
    throw issueError(where, `cannot import plugin module '${specifier}': ${msg}`);
  }
  const candidates = [mod.default, ...Object.values(mod)].filter(isPlugin);
  if (candidates.length === 0) {
    throw issueError(
      where,
      `module '${specifier}' exports no plugin (expected export default definePlugin({ kind, ` +
        "name, version, options, create }))",
    );
  }
  const match = candidates.find((p) => p.kind === kind);
  if (!match) {
    throw issueError(
      where,
      `module '${specifier}' exports a ${candidates[0].kind} plugin ` +
        `'${candidates[0].name}', but a ${kind} plugin is needed here`,
    );
  }
  return match;
}

/**
 * Validate plugin options with the plugin's schema; errors name `where` and each option path.
 *
 * @example
 * ```ts
 * import { parsePluginOptions, definePlugin } from "@texforce/core";
 * import { z } from "zod";
 * const p = definePlugin({ kind: "reward", name: "x", version: "1.0.0",
 *   options: z.strictObject({ k: z.number() }),
 *   create: () => ({ name: "x", score: () => Promise.resolve([]) }) });
 * parsePluginOptions(p, { k: 1 }, "rewards[0].options");
 * ```
 */
export function parsePluginOptions<O>(
  plugin: Plugin<PluginKind, O>,
  options: unknown,
  where: string,
): O {
  // Plugin schemas are zod schemas; the public type is structural (see Schema).
  const schema = plugin.options as unknown as z.ZodType<O>;
  const r = schema.safeParse(options ?? {}, { error: errorMap });
  if (r.success) return r.data;
  const issues = zodIssues(r.error, where, schema as unknown as z.core.$ZodType);
  throw new PluginError(
    `invalid options for ${plugin.kind} plugin '${plugin.name}':\n${issueLines(issues)}`,
    issues,
  );
}

// ---------------------------------------------------------------------------------------------
// Trust: which plugin modules a pipeline file may import.

/**
 * The file beside a pipeline that lists the plugin modules its owner allows it to import, one
 * specifier per line (`#` starts a comment); an entry ending in `/` or `:` allows every
 * specifier it begins (`npm:`, `https://deno.land/x/mylib/`).
 *
 * @example
 * ```ts
 * import { PLUGIN_ALLOW_FILE } from "@texforce/core";
 * console.log(PLUGIN_ALLOW_FILE); // texforce.allow
 * ```
 */
export const PLUGIN_ALLOW_FILE = "texforce.allow";

/**
 * Where a plugin specifier points: a built-in name, a file inside the pipeline's folder (both
 * trusted), or something that needs the user's consent — a file outside the folder, a remote
 * URL, or an `npm:`/`jsr:` package.
 *
 * @example
 * ```ts
 * import type { PluginOrigin } from "@texforce/core";
 * const o: PluginOrigin = "remote";
 * ```
 */
export type PluginOrigin = "builtin" | "inside" | "outside" | "remote" | "package";

/**
 * Classify a `use` value relative to the pipeline's folder (symbolic links are followed, so a
 * link inside the folder to a file elsewhere counts as outside).
 *
 * @example
 * ```ts
 * import { pluginOrigin } from "@texforce/core";
 * console.log(await pluginOrigin("npm:left-pad", "/work/pipelines")); // package
 * ```
 */
export async function pluginOrigin(use: string, baseDir: string): Promise<PluginOrigin> {
  if (!isModuleSpecifier(use)) return "builtin";
  if (/^(npm|jsr):/.test(use)) return "package";
  if (/^https?:/.test(use)) return "remote";
  let abs = use.startsWith("file:") ? new URL(use).pathname : resolve(baseDir, use);
  let base = resolve(baseDir);
  try {
    base = await Deno.realPath(base);
    abs = await Deno.realPath(abs);
  } catch { /* a missing file: judged by its path (the import then fails) */ }
  const rel = relative(base, abs);
  return rel && !rel.startsWith("..") && !isAbsolute(rel) ? "inside" : "outside";
}

/**
 * The consent entries of a pipeline's folder ({@linkcode PLUGIN_ALLOW_FILE}), or none.
 *
 * @example
 * ```ts
 * import { readPluginAllowList } from "@texforce/core";
 * const allowed = await readPluginAllowList("examples");
 * ```
 */
export async function readPluginAllowList(baseDir: string): Promise<string[]> {
  try {
    const text = await Deno.readTextFile(resolve(baseDir, PLUGIN_ALLOW_FILE));
    return text.split("\n").map((l) => l.replace(/#.*$/, "").trim()).filter(Boolean);
  } catch {
    return [];
  }
}

/**
 * Whether `allowed` (consent entries) covers `use`: an exact match, or an entry ending in `/`
 * or `:` that `use` begins with, or `*`.
 *
 * @example
 * ```ts
 * import { pluginAllowed } from "@texforce/core";
 * console.log(pluginAllowed("npm:left-pad@1", ["npm:"])); // true
 * ```
 */
export function pluginAllowed(use: string, allowed: readonly string[]): boolean {
  return allowed.some((a) =>
    a === "*" || a === use || ((a.endsWith("/") || a.endsWith(":")) && use.startsWith(a))
  );
}
