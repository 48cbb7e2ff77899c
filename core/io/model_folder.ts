/**
 * Reading a diffusers pipeline folder (`model_index.json` and one sub-folder per component),
 * with errors that name the missing component or file.
 *
 * @module
 */
import { join, resolve } from "node:path";

/** One component of a pipeline folder. */
export interface ComponentEntry {
  /** Component name (`unet`, `vae`, `text_encoder`, …). */
  name: string;
  /** Library and class from `model_index.json`, e.g. `["diffusers", "UNet2DConditionModel"]`. */
  library: string;
  /** Class name. */
  className: string;
  /** Absolute folder path. */
  path: string;
}

/** A diffusers pipeline folder, as read by {@linkcode readModelFolder}. */
export interface ModelFolder {
  /** Absolute path of the folder. */
  path: string;
  /** `model_index.json` `_class_name` (e.g. `StableDiffusionPipeline`). */
  pipelineClass: string;
  /** Components present in `model_index.json` with a non-null entry. */
  components: Record<string, ComponentEntry>;
}

/** An error about a model folder; its message names the file or component. */
export class ModelFolderError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "ModelFolderError";
  }
}

/**
 * Read a JSON file, failing with a message that names it.
 *
 * @example
 * ```ts
 * import { readJsonFile } from "@texforce/core";
 * const config = await readJsonFile<{ hidden_size: number }>("text_encoder/config.json");
 * ```
 */
export async function readJsonFile<T = Record<string, unknown>>(path: string): Promise<T> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new ModelFolderError(`${path}: file not found`);
    throw new ModelFolderError(`${path}: cannot read (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new ModelFolderError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

/**
 * Read a diffusers pipeline folder's `model_index.json` and check that every listed component
 * has its folder.
 *
 * @example
 * ```ts
 * import { readModelFolder } from "@texforce/core";
 * const m = await readModelFolder("stable-diffusion-v1-5");
 * console.log(Object.keys(m.components));
 * ```
 */
export async function readModelFolder(path: string): Promise<ModelFolder> {
  const root = resolve(path);
  try {
    const st = await Deno.stat(root);
    if (!st.isDirectory) throw new ModelFolderError(`${root}: not a folder`);
  } catch (e) {
    if (e instanceof ModelFolderError) throw e;
    throw new ModelFolderError(`${root}: model folder not found`);
  }
  const indexPath = join(root, "model_index.json");
  const index = await readJsonFile<Record<string, unknown>>(indexPath);
  const components: Record<string, ComponentEntry> = {};
  for (const [name, value] of Object.entries(index)) {
    if (name.startsWith("_")) continue;
    if (value === null || (Array.isArray(value) && value[0] === null)) continue;
    if (!Array.isArray(value) || value.length !== 2) continue;
    const dir = join(root, name);
    try {
      const st = await Deno.stat(dir);
      if (!st.isDirectory) throw new Error();
    } catch {
      throw new ModelFolderError(
        `${indexPath}: component '${name}' (${
          value[1]
        }) is listed but its folder ${dir} is missing`,
      );
    }
    components[name] = { name, library: String(value[0]), className: String(value[1]), path: dir };
  }
  return {
    path: root,
    pipelineClass: String(index._class_name ?? "unknown"),
    components,
  };
}

/**
 * A component of a model folder, or a clear error naming the folder and component.
 *
 * @example
 * ```ts
 * import { readModelFolder, requireComponent } from "@texforce/core";
 * const unet = requireComponent(await readModelFolder("sd15"), "unet");
 * ```
 */
export function requireComponent(model: ModelFolder, name: string): ComponentEntry {
  const c = model.components[name];
  if (!c) {
    throw new ModelFolderError(
      `${join(model.path, "model_index.json")}: the pipeline has no '${name}' component ` +
        `(it has ${Object.keys(model.components).join(", ") || "none"})`,
    );
  }
  return c;
}

/**
 * Read a component's `config.json` (or `scheduler_config.json` for schedulers).
 *
 * @example
 * ```ts
 * import { readComponentConfig, readModelFolder } from "@texforce/core";
 * const cfg = await readComponentConfig(await readModelFolder("sd15"), "unet");
 * ```
 */
export async function readComponentConfig<T = Record<string, unknown>>(
  model: ModelFolder,
  name: string,
): Promise<T> {
  const c = requireComponent(model, name);
  for (const file of ["config.json", "scheduler_config.json"]) {
    try {
      await Deno.stat(join(c.path, file));
      return await readJsonFile<T>(join(c.path, file));
    } catch (e) {
      if (e instanceof ModelFolderError) throw e;
    }
  }
  throw new ModelFolderError(`${c.path}: component '${name}' has no config.json`);
}

/**
 * Path of a file inside a component, checked to exist.
 *
 * @example
 * ```ts
 * import { componentFile, readModelFolder } from "@texforce/core";
 * const vocab = await componentFile(await readModelFolder("sd15"), "tokenizer", "vocab.json");
 * ```
 */
export async function componentFile(
  model: ModelFolder,
  component: string,
  file: string,
): Promise<string> {
  const c = requireComponent(model, component);
  const p = join(c.path, file);
  try {
    await Deno.stat(p);
  } catch {
    throw new ModelFolderError(`${p}: file not found (component '${component}' needs ${file})`);
  }
  return p;
}
