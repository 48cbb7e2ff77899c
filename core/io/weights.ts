/**
 * Opening a component's weights: a single safetensors file, a sharded checkpoint
 * (`*.safetensors.index.json`) or an fp16 variant (`*.fp16.safetensors`).
 *
 * @module
 */
import { join } from "node:path";
import {
  type HostTensor,
  SafetensorsError,
  SafetensorsFile,
  type TensorInfo,
  type WeightSource,
} from "./safetensors.ts";
import { pathExists } from "./path_exists.ts";

/** A checkpoint split over several safetensors files by a `weight_map` index. */
export class ShardedWeights implements WeightSource {
  /** The index file. */
  readonly path: string;
  #shards: Map<string, SafetensorsFile>;
  #map: Map<string, string>;

  private constructor(
    path: string,
    shards: Map<string, SafetensorsFile>,
    map: Map<string, string>,
  ) {
    this.path = path;
    this.#shards = shards;
    this.#map = map;
  }

  /** Open an index file and every shard it names. */
  static async open(indexPath: string): Promise<ShardedWeights> {
    let index: { weight_map?: Record<string, string> };
    try {
      index = JSON.parse(await Deno.readTextFile(indexPath));
    } catch (e) {
      throw new SafetensorsError(indexPath, `cannot read index (${(e as Error).message})`);
    }
    if (!index.weight_map || typeof index.weight_map !== "object") {
      throw new SafetensorsError(indexPath, "index has no 'weight_map' object");
    }
    const dir = indexPath.slice(0, indexPath.lastIndexOf("/") + 1) || "./";
    const shards = new Map<string, SafetensorsFile>();
    const map = new Map<string, string>();
    try {
      for (const [key, file] of Object.entries(index.weight_map)) {
        if (!shards.has(file)) shards.set(file, await SafetensorsFile.open(join(dir, file)));
        if (!shards.get(file)!.has(key)) {
          throw new SafetensorsError(
            indexPath,
            `weight_map says it is in '${file}', which does not hold it`,
            key,
          );
        }
        map.set(key, file);
      }
    } catch (e) {
      for (const s of shards.values()) s.close();
      throw e;
    }
    return new ShardedWeights(indexPath, shards, map);
  }

  /** All tensor names. */
  keys(): string[] {
    return [...this.#map.keys()];
  }
  /** Whether a tensor exists. */
  has(name: string): boolean {
    return this.#map.has(name);
  }
  #shard(name: string): SafetensorsFile {
    const f = this.#map.get(name);
    if (!f) throw new SafetensorsError(this.path, "no such tensor", name);
    return this.#shards.get(f)!;
  }
  /** Header entry of a tensor. */
  info(name: string): TensorInfo {
    return this.#shard(name).info(name);
  }
  /** Read a tensor from its shard. */
  read(name: string): Promise<HostTensor> {
    return this.#shard(name).read(name);
  }
  /** Close every shard. */
  close(): void {
    for (const s of this.#shards.values()) s.close();
  }
}

/** Options of {@linkcode openWeights}. */
export interface OpenWeightsOptions {
  /** A variant such as `fp16`: prefer `NAME.fp16.safetensors` over `NAME.safetensors`. */
  variant?: string;
  /** File base names to look for, in order (default: diffusers' and transformers' names). */
  names?: string[];
}

/**
 * Open the weights of a model component: `path` is a safetensors file, an index json, or a
 * folder holding `model.safetensors` / `diffusion_pytorch_model.safetensors`, their sharded
 * index, or their fp16 variant.
 *
 * @example
 * ```ts
 * import { openWeights } from "@texforce/core";
 * const w = await openWeights("stable-diffusion-v1-5/unet");
 * console.log(w.keys().length);
 * w.close();
 * ```
 */
export async function openWeights(
  path: string,
  options: OpenWeightsOptions = {},
): Promise<WeightSource> {
  if (path.endsWith(".index.json")) return await ShardedWeights.open(path);
  if (path.endsWith(".safetensors")) return await SafetensorsFile.open(path);
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch {
    throw new Error(`${path}: weights not found (no such file or folder)`);
  }
  if (!stat.isDirectory) {
    throw new Error(`${path}: expected a .safetensors file, an .index.json or a folder`);
  }
  const names = options.names ?? ["diffusion_pytorch_model", "model"];
  const variants = options.variant ? [`.${options.variant}`, ""] : ["", ".fp16"];
  const tried: string[] = [];
  for (const v of variants) {
    for (const n of names) {
      const single = join(path, `${n}${v}.safetensors`);
      tried.push(single);
      if (await pathExists(single)) return await SafetensorsFile.open(single);
      const index = join(path, `${n}.safetensors${v ? `.index${v}` : ".index"}.json`);
      const index2 = join(path, `${n}${v}.safetensors.index.json`);
      for (const ix of [index, index2]) {
        tried.push(ix);
        if (await pathExists(ix)) return await ShardedWeights.open(ix);
      }
    }
  }
  const bins: string[] = [];
  for await (const e of Deno.readDir(path)) {
    if (/\.(bin|ckpt|pt|pth)$/.test(e.name)) bins.push(e.name);
  }
  const hint = bins.length
    ? ` Found only PyTorch pickle files (${bins.join(", ")}), which cannot be read safely: ` +
      "convert them to safetensors (e.g. diffusers' save_pretrained(safe_serialization=True))."
    : "";
  throw new Error(
    `${path}: no safetensors weights found (looked for ${
      tried.map((t) => t.slice(path.length + 1)).join(", ")
    }).${hint}`,
  );
}
