// The tfjs graph models that ship in the `models/` folder of the npm package @vladmandic/human:
// where the installed package lies on disk (never fetched), and loading one model with the
// project's graph-model loader, with what a run records about it.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadGraphModelFromFile } from "../core/io/graph_model.ts";
import type { GraphModel } from "../core/tensor_types.ts";

/** The npm package whose `models/` folder holds the face and hand detectors. */
export const HUMAN_PACKAGE = "@vladmandic/human";
/** Its pinned version (the same as in deno.json). */
export const HUMAN_VERSION = "3.3.6";
const HUMAN_SPECIFIER = `npm:${HUMAN_PACKAGE}@${HUMAN_VERSION}`;

/**
 * What a run records about one loaded model.
 *
 * @example
 * ```ts
 * import type { ModelRecord } from "@texforce/core/rewards";
 * const r: ModelRecord = {
 *   name: "blazeface",
 *   package: "@vladmandic/human@3.3.6",
 *   file: "/deno/npm/registry.npmjs.org/@vladmandic/human/3.3.6/models/blazeface.json",
 *   weightBytes: 538928,
 * };
 * ```
 */
export interface ModelRecord {
  /** Model name (file stem), e.g. `blazeface`. */
  name: string;
  /** The npm package and version it came from, e.g. `@vladmandic/human@3.3.6`. */
  package: string;
  /** Absolute path of its `model.json`. */
  file: string;
  /** Size of its weights in bytes. */
  weightBytes: number;
  /** Where the original model comes from (the model.json's `generatedBy`). */
  generatedBy?: string;
}

/** A loaded graph model and its record. */
export interface LoadedModel {
  /** The model. */
  model: GraphModel;
  /** What the run records about it. */
  record: ModelRecord;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

// Deno's global npm cache: DENO_DIR, else the platform's cache folder.
function denoNpmCacheDirs(): string[] {
  const env = (k: string): string | undefined => {
    try {
      return Deno.env.get(k) || undefined;
    } catch {
      return undefined; // no --allow-env
    }
  };
  const roots: string[] = [];
  const denoDir = env("DENO_DIR");
  if (denoDir) roots.push(denoDir);
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) roots.push(join(xdg, "deno"));
  const home = env("HOME");
  if (home) roots.push(join(home, ".cache", "deno"), join(home, "Library", "Caches", "deno"));
  const local = env("LOCALAPPDATA");
  if (local) roots.push(join(local, "deno"));
  return roots.map((r) => join(r, "npm", "registry.npmjs.org", HUMAN_PACKAGE, HUMAN_VERSION));
}

/**
 * The folder of @vladmandic/human's models in the installed package: the package Deno resolves
 * for the pinned version (a checkout, or an app that has it in its own deno.json/lockfile), else
 * the same version in a `node_modules` folder or in Deno's npm cache (an app that uses texforce
 * without naming the package itself). Nothing is downloaded.
 */
export function humanModelDir(reward: string): string {
  const candidates: string[] = [];
  try {
    const url = import.meta.resolve(HUMAN_SPECIFIER);
    // Resolves to the package's main file (dist/…) when the package is in this app's npm graph.
    if (url.startsWith("file:")) candidates.push(dirname(dirname(fileURLToPath(url))));
  } catch {
    // Not resolvable here: try the folders below.
  }
  const cwd = Deno.cwd();
  candidates.push(
    join(cwd, "node_modules", HUMAN_PACKAGE),
    join(
      cwd,
      "node_modules",
      ".deno",
      `@vladmandic+human@${HUMAN_VERSION}`,
      "node_modules",
      HUMAN_PACKAGE,
    ),
    ...denoNpmCacheDirs(),
  );
  const tried: string[] = [];
  for (const root of candidates) {
    const models = join(root, "models");
    tried.push(models);
    if (!exists(join(models, "blazeface.json"))) continue;
    if (!versionMatches(root)) continue;
    return models;
  }
  throw new Error(
    `${reward}: the models of ${HUMAN_SPECIFIER} are not installed (looked in ${
      tried.join(", ")
    }); add the package to your app (deno add ${HUMAN_SPECIFIER}, then deno install), ` +
      "or set the reward's modelDir option to a folder holding its models/ files",
  );
}

function versionMatches(root: string): boolean {
  try {
    const pkg = JSON.parse(Deno.readTextFileSync(join(root, "package.json")));
    return pkg.name === HUMAN_PACKAGE && pkg.version === HUMAN_VERSION;
  } catch {
    return false;
  }
}

/**
 * Load `name` (e.g. `blazeface`) from `dir`; errors name the reward and the file.
 */
export async function loadHumanModel(
  reward: string,
  dir: string,
  name: string,
  packageLabel = `${HUMAN_PACKAGE}@${HUMAN_VERSION}`,
): Promise<LoadedModel> {
  const file = join(dir, `${name}.json`);
  let model: GraphModel;
  try {
    model = await loadGraphModelFromFile(file);
  } catch (e) {
    throw new Error(`${reward}: cannot load model '${name}': ${(e as Error).message}`, {
      cause: e,
    });
  }
  let generatedBy: string | undefined;
  let weightBytes = 0;
  try {
    const json = JSON.parse(await Deno.readTextFile(file));
    generatedBy = typeof json.generatedBy === "string" ? json.generatedBy : undefined;
    for (const g of json.weightsManifest ?? []) {
      for (const p of g.paths) weightBytes += (await Deno.stat(join(dir, p))).size;
    }
  } catch {
    // Already read once by the loader; the record is informational.
  }
  return { model, record: { name, package: packageLabel, file, weightBytes, generatedBy } };
}

/** The label of a model folder for records: the pinned package, or the folder given. */
export function packageLabel(modelDir: string | undefined): string {
  return modelDir === undefined ? `${HUMAN_PACKAGE}@${HUMAN_VERSION}` : `folder ${modelDir}`;
}
