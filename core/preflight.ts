/**
 * Preflight: check every file a run will read, without loading a single weight — the model
 * folder's configs, its tokenizer files, and the safetensors headers of the text encoder, UNet
 * and VAE (they parse, the data is all there, and they hold the tensors their configs imply).
 * Plugins check their own files with an optional `preflight` (see `Plugin.preflight`).
 *
 * @module
 */
import { join } from "node:path";
import {
  ModelFolderError,
  readJsonFile,
  readModelFolder,
  requireComponent,
} from "./io/model_folder.ts";
import { openWeights } from "./io/weights.ts";
import type { WeightSource } from "./io/safetensors.ts";

/**
 * The model components every pipeline needs. A VAE is optional: without one the UNet works on
 * RGB pixels (the sampler checks that its out_channels is 3), as in the demo's shapes model.
 *
 * @example
 * ```ts
 * import { REQUIRED_COMPONENTS } from "@texforce/core";
 * console.log(REQUIRED_COMPONENTS.join(", "));
 * ```
 */
export const REQUIRED_COMPONENTS: readonly string[] = [
  "text_encoder",
  "tokenizer",
  "unet",
  "scheduler",
];

/** A tensor a component's config implies: its name (any of `names`) and, if known, shape. */
interface Expected {
  names: string[];
  shape?: number[];
}

function num(config: Record<string, unknown>, key: string): number | undefined {
  const v = config[key];
  return typeof v === "number" ? v : undefined;
}

function textEncoderTensors(c: Record<string, unknown>): Expected[] {
  const both = (k: string) => [`text_model.${k}`, k];
  const vocab = num(c, "vocab_size");
  const hidden = num(c, "hidden_size");
  const out: Expected[] = [{
    names: both("embeddings.token_embedding.weight"),
    shape: vocab && hidden ? [vocab, hidden] : undefined,
  }, { names: both("final_layer_norm.weight"), shape: hidden ? [hidden] : undefined }];
  const layers = num(c, "num_hidden_layers") ?? 0;
  for (let i = 0; i < layers; i++) {
    for (const p of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      out.push({
        names: both(`encoder.layers.${i}.self_attn.${p}.weight`),
        shape: hidden ? [hidden, hidden] : undefined,
      });
    }
  }
  return out;
}

function unetTensors(c: Record<string, unknown>): Expected[] {
  const boc = Array.isArray(c.block_out_channels) ? c.block_out_channels as number[] : [];
  const inC = num(c, "in_channels");
  const outC = num(c, "out_channels");
  const k = num(c, "conv_in_kernel") ?? 3;
  const ko = num(c, "conv_out_kernel") ?? 3;
  return [
    { names: ["conv_in.weight"], shape: boc[0] && inC ? [boc[0], inC, k, k] : undefined },
    { names: ["time_embedding.linear_1.weight"] },
    {
      names: ["conv_out.weight"],
      shape: boc[0] && outC ? [outC, boc[0], ko, ko] : undefined,
    },
  ];
}

function vaeTensors(c: Record<string, unknown>): Expected[] {
  const boc = Array.isArray(c.block_out_channels) ? c.block_out_channels as number[] : [];
  const lat = num(c, "latent_channels");
  const top = boc[boc.length - 1];
  return [
    { names: ["decoder.conv_in.weight"], shape: top && lat ? [top, lat, 3, 3] : undefined },
    { names: ["decoder.conv_out.weight"] },
  ];
}

async function checkWeights(
  dir: string,
  component: string,
  expected: Expected[],
  variant?: string,
): Promise<string[]> {
  let source: WeightSource;
  try {
    source = await openWeights(dir, { variant });
  } catch (e) {
    return [`${component}: ${(e as Error).message}`];
  }
  const problems: string[] = [];
  try {
    for (const x of expected) {
      const name = x.names.find((n) => source.has(n));
      if (!name) {
        problems.push(
          `${source.path}: no tensor '${x.names[0]}', which the ${component} config implies`,
        );
        if (problems.length >= 3) break;
        continue;
      }
      const shape = source.info(name).shape;
      if (x.shape && shape.join(",") !== x.shape.join(",")) {
        problems.push(
          `${source.path}: '${name}' has shape [${shape}], the ${component} config implies ` +
            `[${x.shape}]`,
        );
      }
    }
  } finally {
    source.close();
  }
  return problems;
}

/**
 * Problems with a CLIP tokenizer folder (vocab.json, merges.txt, optional configs), each naming
 * its file; nothing is loaded.
 *
 * @example
 * ```ts
 * import { checkTokenizer } from "@texforce/core";
 * console.log(await checkTokenizer("stable-diffusion-v1-5/tokenizer"));
 * ```
 */
export async function checkTokenizer(dir: string): Promise<string[]> {
  const problems: string[] = [];
  try {
    const vocab = await readJsonFile(join(dir, "vocab.json"));
    if (typeof vocab !== "object" || vocab === null || Array.isArray(vocab)) {
      problems.push(`${join(dir, "vocab.json")}: expected an object of token → id`);
    } else if (Object.keys(vocab).length === 0) {
      problems.push(`${join(dir, "vocab.json")}: empty vocabulary`);
    }
  } catch (e) {
    problems.push((e as Error).message);
  }
  const merges = join(dir, "merges.txt");
  try {
    const text = await Deno.readTextFile(merges);
    const bad = text.split("\n").slice(1).findIndex((l) => l.trim() && l.split(" ").length !== 2);
    if (bad >= 0) problems.push(`${merges}: line ${bad + 2} is not a merge ('a b')`);
  } catch (e) {
    problems.push(
      e instanceof Deno.errors.NotFound
        ? `${merges}: file not found`
        : `${merges}: ${(e as Error).message}`,
    );
  }
  for (const f of ["tokenizer_config.json", "special_tokens_map.json"]) {
    try {
      await Deno.stat(join(dir, f));
    } catch {
      continue; // optional
    }
    try {
      await readJsonFile(join(dir, f));
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  return problems;
}

/**
 * Every problem with the files of a diffusers model folder that a run would read, each message
 * naming its file; empty when the folder is fine. Reads configs and safetensors headers only.
 *
 * @example
 * ```ts
 * import { preflightModel } from "@texforce/core";
 * const problems = await preflightModel("tests/fixtures/sd-tiny/tiny-sd");
 * console.log(problems.length); // 0
 * ```
 */
export async function preflightModel(
  modelPath: string,
  options: { variant?: string } = {},
): Promise<string[]> {
  let folder;
  try {
    folder = await readModelFolder(modelPath);
    for (const c of REQUIRED_COMPONENTS) requireComponent(folder, c);
  } catch (e) {
    return [(e as Error).message];
  }
  const problems: string[] = [];
  problems.push(...await checkTokenizer(folder.components.tokenizer.path));
  const configs: Record<string, Record<string, unknown>> = {};
  for (const c of ["text_encoder", "unet", "vae"]) {
    if (c === "vae" && !folder.components.vae) continue;
    try {
      configs[c] = await readJsonFile(join(folder.components[c].path, "config.json"));
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  try {
    await readJsonFile(join(folder.components.scheduler.path, "scheduler_config.json"));
  } catch (e) {
    if (!(e instanceof ModelFolderError)) throw e;
    problems.push(e.message);
  }
  const checks: [string, (c: Record<string, unknown>) => Expected[]][] = [
    ["text_encoder", textEncoderTensors],
    ["unet", unetTensors],
    ["vae", vaeTensors],
  ];
  for (const [c, expected] of checks) {
    if (!configs[c]) continue;
    problems.push(
      ...await checkWeights(folder.components[c].path, c, expected(configs[c]), options.variant),
    );
  }
  return problems;
}
