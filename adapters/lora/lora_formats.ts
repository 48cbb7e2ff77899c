/**
 * Reading and writing text-encoder LoRA files in the layouts other tools use:
 *
 * - `peft`: a folder with `adapter_config.json` and `adapter_model.safetensors`, keys
 *   `base_model.model.[text_model.]encoder.layers.0.self_attn.q_proj.lora_A.weight` (what
 *   `peft.PeftModel.from_pretrained` and the released TexForce adapters use);
 * - `diffusers`: `pytorch_lora_weights.safetensors`, keys
 *   `text_encoder.[text_model.]encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight`
 *   (or `.lora_A.weight`); written with alpha / r folded into the up matrix and
 *   `lora_alpha = r` in the `lora_adapter_metadata` header entry, so that every diffusers reads
 *   it at the trained strength (before 0.34 diffusers ignores that entry and takes alpha = r);
 * - `kohya`: one safetensors file for AUTOMATIC1111 / ComfyUI, keys
 *   `lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight`, `.lora_up.weight`
 *   and a float `.alpha` per module; `lora_te1_` and integer alphas are read too.
 *
 * Plus a merged text encoder: `model.safetensors` with `W + scale·B·A` folded in.
 *
 * @module
 */
import { join } from "node:path";
import {
  type HostTensor,
  type SafetensorsDtype,
  SafetensorsFile,
  type WeightSource,
  type WritableTensor,
  writeSafetensors,
} from "../../core/io/safetensors.ts";
import { openWeights } from "../../core/io/weights.ts";
import { clipTextKeyPrefix } from "../clip/clip_text_model.ts";
import type { LoraInit, LoraModuleWeights, LoraWeights } from "./lora.ts";
import {
  isOtherModelKey,
  kohyaStem,
  parseDiffusersKey,
  type ParsedLoraKey,
  parseKohyaKey,
  parsePeftKey,
} from "./_lora_keys.ts";
import { pathExists } from "../../core/io/path_exists.ts";

/** The LoRA file layouts. */
export type LoraFormat = "peft" | "diffusers" | "kohya";

/**
 * Every format name, for schemas and help.
 *
 * @example
 * ```ts
 * import { LORA_FORMATS } from "@texforce/core/adapters";
 * console.log(LORA_FORMATS.join(", ")); // peft, diffusers, kohya
 * ```
 */
export const LORA_FORMATS: readonly LoraFormat[] = ["peft", "diffusers", "kohya"];

/** Options of {@linkcode readLora}. */
export interface ReadLoraOptions {
  /** Override every module's alpha (e.g. for kohya files written with alpha = rank). */
  alpha?: number;
}

/** Options of {@linkcode writeLora} and {@linkcode encodeLora}. */
export interface WriteLoraOptions {
  /**
   * Keys with `text_model.` (PEFT, diffusers, kohya's `text_model_`): the transformers-4 layout
   * (default, what every SD 1.x/2.x checkpoint has); false writes the transformers-5 layout.
   * Kohya files keep `text_model_` unless this is false: A1111 and ComfyUI expect it.
   */
  textModelPrefix?: boolean;
  /**
   * Prefix of diffusers keys (default `text_encoder.`, what `load_lora_weights` reads). Files
   * saved from a PEFT-wrapped encoder have `text_encoder.base_model.model.`.
   */
  diffusersPrefix?: string;
  /** diffusers key style: `lora_linear_layer.{down,up}` (default) or PEFT's `lora_{A,B}`. */
  diffusersStyle?: "lora_linear_layer" | "peft";
  /** Stored dtype of the matrices (default F32). */
  dtype?: "F32" | "F16" | "BF16";
  /** PEFT's `base_model_name_or_path`. */
  baseModel?: string | null;
  /** PEFT's `init_lora_weights` (default true, i.e. kaiming). */
  init?: LoraInit | null;
}

/** A LoRA encoded for one format: tensors, header metadata and (PEFT) the config. */
export interface EncodedLora {
  /** Tensors by key. */
  tensors: Record<string, WritableTensor>;
  /** safetensors `__metadata__`. */
  metadata: Record<string, string>;
  /** `adapter_config.json` for PEFT. */
  config?: Record<string, unknown>;
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

async function readConfig(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(
      `${path}: ${e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message}`,
    );
  }
  try {
    const v = JSON.parse(text);
    if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
    return v;
  } catch (e) {
    throw new Error(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

/**
 * Which layout a list of keys uses, judged by the first key about the text encoder.
 *
 * @example
 * ```ts
 * import { detectLoraFormat } from "@texforce/core/adapters";
 * detectLoraFormat(["lora_te1_encoder_layers_0_self_attn_q_proj.alpha"], "x.safetensors"); // "kohya"
 * ```
 */
export function detectLoraFormat(keys: string[], file: string): LoraFormat {
  const first = keys.find((k) => !isOtherModelKey(k));
  if (first === undefined) {
    throw new Error(
      `${file}: holds no LoRA for the text encoder` +
        (keys.length ? ` (only other models' keys such as '${keys[0]}')` : " (no tensors)"),
    );
  }
  if (parsePeftKey(first)) return "peft";
  if (parseDiffusersKey(first)) return "diffusers";
  if (parseKohyaKey(first)) return "kohya";
  throw new Error(
    `${file}: unknown LoRA key layout: '${first}' is not a PEFT ` +
      "('base_model.model.[text_model.]encoder.layers.0.self_attn.q_proj.lora_A.weight'), " +
      "diffusers ('text_encoder.[text_model.]encoder.layers.0.self_attn.q_proj." +
      "lora_linear_layer.down.weight') or kohya " +
      "('lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight') key of the " +
      "CLIP text encoder",
  );
}

const PARSERS: Record<LoraFormat, (k: string) => ParsedLoraKey | null> = {
  peft: parsePeftKey,
  diffusers: parseDiffusersKey,
  kohya: parseKohyaKey,
};

/** Alpha for a module from PEFT's `alpha_pattern` (regex keys matched at the name's end). */
function patternValue(
  pattern: unknown,
  module: string,
  fallback: number,
): number {
  if (!pattern || typeof pattern !== "object") return fallback;
  for (const [key, value] of Object.entries(pattern as Record<string, unknown>)) {
    if (typeof value !== "number") continue;
    let re: RegExp;
    try {
      re = new RegExp(`^(?:.*\\.)?(?:${key})$`);
    } catch {
      continue;
    }
    if (re.test(module) || re.test(`text_model.${module}`)) return value;
  }
  return fallback;
}

function mostCommon(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best = values[0];
  for (const [v, c] of counts) if (c > (counts.get(best) ?? 0)) best = v;
  return best;
}

/**
 * Read the LoRA tensors of an open source whose keys follow `format`. `config` is PEFT's
 * `adapter_config.json` (or diffusers' metadata) for alpha; without one alpha = rank, as the
 * reference loaders assume.
 */
async function readFromSource(
  source: WeightSource,
  format: LoraFormat,
  config: Record<string, unknown> | null,
  options: ReadLoraOptions,
): Promise<LoraWeights> {
  const file = source.path;
  const parse = PARSERS[format];
  const parts = new Map<
    string,
    { down?: [string, HostTensor]; up?: [string, HostTensor]; alpha?: number }
  >();
  const ignoredKeys: string[] = [];
  let textModelPrefix: boolean | null = null;
  for (const key of source.keys()) {
    if (isOtherModelKey(key)) {
      ignoredKeys.push(key);
      continue;
    }
    const p = parse(key);
    if (!p) {
      if (/dora_scale|lora_magnitude_vector/.test(key)) {
        throw new Error(`${file}: '${key}': DoRA adapters are not supported`);
      }
      if (/\.lora_[AB]\.bias$|lora_up\.bias$/.test(key)) {
        throw new Error(`${file}: '${key}': LoRA with bias (lora_bias) is not supported`);
      }
      throw new Error(
        `${file}: unknown LoRA key layout: '${key}' is not a ${format} key of the CLIP text ` +
          `encoder's linear layers (the file's first keys were read as ${format})`,
      );
    }
    textModelPrefix ??= p.textModelPrefix;
    const entry = parts.get(p.module) ?? {};
    parts.set(p.module, entry);
    const host = await source.read(key);
    if (p.part === "alpha") {
      if (host.data.length !== 1) {
        throw new Error(
          `${file}: '${key}': alpha must be a scalar, got shape ${JSON.stringify(host.shape)}`,
        );
      }
      entry.alpha = host.data[0];
    } else {
      if (host.shape.length !== 2) {
        throw new Error(
          `${file}: '${key}': expected a 2-D matrix, got shape ${JSON.stringify(host.shape)}`,
        );
      }
      if (host.dtype !== "float32") {
        throw new Error(`${file}: '${key}': expected a float tensor, got integers`);
      }
      entry[p.part] = [key, host];
    }
  }
  const peftAlpha = typeof config?.lora_alpha === "number" ? config.lora_alpha : null;
  const modules = new Map<string, LoraModuleWeights>();
  for (
    const [module, e] of [...parts].sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }))
  ) {
    if (!e.down || !e.up) {
      const have = e.down?.[0] ?? e.up?.[0] ?? `${module} alpha`;
      throw new Error(
        `${file}: '${have}' has no matching ${e.down ? "up (B)" : "down (A)"} matrix for ` +
          `module '${module}'`,
      );
    }
    const rank = e.down[1].shape[0];
    if (e.up[1].shape[1] !== rank) {
      throw new Error(
        `${file}: '${e.up[0]}': shape ${JSON.stringify(e.up[1].shape)} does not match ` +
          `'${e.down[0]}' ${JSON.stringify(e.down[1].shape)}: expected [out, ${rank}]`,
      );
    }
    const alpha = options.alpha ?? e.alpha ??
      patternValue(config?.alpha_pattern, module, peftAlpha ?? rank);
    if (!(alpha > 0)) throw new Error(`${file}: module '${module}': alpha ${alpha} must be > 0`);
    modules.set(module, {
      down: e.down[1],
      up: e.up[1],
      alpha,
      keys: { down: e.down[0], up: e.up[0] },
    });
  }
  if (modules.size === 0) {
    throw new Error(`${file}: holds no LoRA for the text encoder`);
  }
  const mods = [...modules.values()];
  const rank = typeof config?.r === "number"
    ? config.r
    : mostCommon(mods.map((m) => m.down.shape[0]));
  return {
    modules,
    rank,
    alpha: options.alpha ?? peftAlpha ?? mostCommon(mods.map((m) => m.alpha)),
    useRslora: config?.use_rslora === true,
    source: file,
    textModelPrefix,
    ignoredKeys,
  };
}

function checkPeftConfig(config: Record<string, unknown>, path: string): void {
  if (config.peft_type !== undefined && config.peft_type !== "LORA") {
    throw new Error(`${path}: peft_type is ${JSON.stringify(config.peft_type)}, expected "LORA"`);
  }
  if (typeof config.r !== "number" || !(config.r > 0)) {
    throw new Error(`${path}: 'r' must be a positive number, got ${JSON.stringify(config.r)}`);
  }
  if (typeof config.lora_alpha !== "number") {
    throw new Error(
      `${path}: 'lora_alpha' must be a number, got ${JSON.stringify(config.lora_alpha)}`,
    );
  }
  if (config.use_dora === true) throw new Error(`${path}: use_dora: DoRA is not supported`);
  if (config.lora_bias === true) {
    throw new Error(`${path}: lora_bias: LoRA biases are not supported`);
  }
  if (config.bias !== undefined && config.bias !== "none") {
    throw new Error(`${path}: bias ${JSON.stringify(config.bias)}: only "none" is supported`);
  }
}

/**
 * Read a text-encoder LoRA in any supported layout: a PEFT folder, a folder holding
 * `pytorch_lora_weights.safetensors`, or a `.safetensors` file (PEFT, diffusers or kohya keys,
 * told apart by their names). UNet keys in the same file are skipped and listed in
 * `ignoredKeys`.
 *
 * @example
 * ```ts
 * import { readLora } from "@texforce/core/adapters";
 * const lora = await readLora("texforce_face_lora/");
 * console.log(lora.rank, lora.alpha, lora.modules.size);
 * ```
 */
export async function readLora(path: string, options: ReadLoraOptions = {}): Promise<LoraWeights> {
  let file = path;
  let config: Record<string, unknown> | null = null;
  let configPath = "";
  if (await isDir(path)) {
    configPath = join(path, "adapter_config.json");
    const candidates = ["adapter_model.safetensors", "pytorch_lora_weights.safetensors"];
    const found = [];
    for (const c of candidates) if (await pathExists(join(path, c))) found.push(c);
    if (found.length === 0) {
      const bin = await pathExists(join(path, "adapter_model.bin"));
      throw new Error(
        `${path}: no LoRA weights found (looked for ${candidates.join(", ")})` +
          (bin
            ? "; adapter_model.bin is a pickle file, which is not read: re-save it as safetensors"
            : ""),
      );
    }
    file = join(path, found[0]);
  } else if (!path.endsWith(".safetensors")) {
    throw new Error(`${path}: expected a PEFT adapter folder or a .safetensors LoRA file`);
  } else {
    configPath = join(path, "..", "adapter_config.json");
  }
  const source = await SafetensorsFile.open(file);
  try {
    const format = detectLoraFormat(source.keys(), file);
    if (format === "peft") {
      if (await pathExists(configPath)) {
        config = await readConfig(configPath);
        checkPeftConfig(config, configPath);
      } else if (options.alpha === undefined) {
        throw new Error(
          `${file}: a PEFT adapter needs adapter_config.json next to it (for r and lora_alpha); ` +
            "not found at " + configPath,
        );
      }
    } else if (format === "diffusers") {
      config = diffusersMetadataConfig(source.metadata, file);
    }
    return await readFromSource(source, format, config, options);
  } finally {
    source.close();
  }
}

/** The text encoder's LoraConfig stored by newer diffusers in `lora_adapter_metadata`. */
function diffusersMetadataConfig(
  metadata: Record<string, string>,
  file: string,
): Record<string, unknown> | null {
  const raw = metadata.lora_adapter_metadata;
  if (!raw) return null;
  let all: Record<string, unknown>;
  try {
    all = JSON.parse(raw);
  } catch (e) {
    throw new Error(
      `${file}: __metadata__.lora_adapter_metadata is not JSON (${(e as Error).message})`,
    );
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(all)) {
    if (k.startsWith("text_encoder.")) out[k.slice("text_encoder.".length)] = v;
  }
  return Object.keys(out).length ? out : null;
}

function tensor(h: HostTensor, dtype: SafetensorsDtype): WritableTensor {
  return { dtype, shape: [...h.shape], data: h.data };
}

function layerNames(weights: LoraWeights): string[] {
  return [...new Set([...weights.modules.keys()].map((m) => m.slice(m.lastIndexOf(".") + 1)))]
    .sort();
}

/** PEFT's LoraConfig fields, as peft 0.21 writes them (so `from_pretrained` reads them all). */
function peftConfig(
  weights: LoraWeights,
  prefix: string,
  options: WriteLoraOptions,
): Record<string, unknown> {
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const [module, m] of weights.modules) {
    if (m.down.shape[0] !== weights.rank) rankPattern[prefix + module] = m.down.shape[0];
    if (m.alpha !== weights.alpha) alphaPattern[prefix + module] = m.alpha;
  }
  return {
    alora_invocation_tokens: null,
    alpha_pattern: alphaPattern,
    arrow_config: null,
    auto_mapping: {
      base_model_class: "CLIPTextModel",
      parent_library: "transformers.models.clip.modeling_clip",
    },
    base_model_name_or_path: options.baseModel ?? null,
    bias: "none",
    corda_config: null,
    ensure_weight_tying: false,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: options.init === "gaussian" ? "gaussian" : true,
    kasa_config: null,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: weights.alpha,
    lora_bias: false,
    lora_dropout: 0.0,
    lora_ga_config: null,
    megatron_config: null,
    megatron_core: "megatron.core",
    modules_to_save: null,
    monteclora_config: null,
    peft_type: "LORA",
    peft_version: "0.21.0",
    qalora_group_size: 16,
    r: weights.rank,
    rank_pattern: rankPattern,
    revision: null,
    target_modules: layerNames(weights),
    target_parameters: null,
    task_type: null,
    trainable_token_indices: null,
    use_bdlora: null,
    use_dora: false,
    use_qalora: false,
    use_rslora: weights.useRslora,
    velora_config: null,
  };
}

/**
 * The same LoRA with every module's scale folded into its up matrix (B' = scale · B) and
 * alpha = rank, so that a loader applying scale 1 (alpha = r) reproduces the trained delta.
 * Modules of lower rank are padded with zero rows of A and columns of B to the highest rank:
 * diffusers before 0.34 gives every module the alpha of one rank, so only a uniform rank reads
 * scale 1 everywhere. The delta B' A is unchanged by the padding.
 *
 * @example
 * ```ts
 * import { foldScale, readLora } from "@texforce/core/adapters";
 * const folded = foldScale(await readLora("lora_peft/")); // r 4, alpha 8 → alpha 4, B × 2
 * console.log(folded.alpha === folded.rank);
 * ```
 */
export function foldScale(weights: LoraWeights): LoraWeights {
  let rank = 0;
  for (const m of weights.modules.values()) rank = Math.max(rank, m.down.shape[0]);
  const modules = new Map<string, LoraModuleWeights>();
  for (const [module, m] of weights.modules) {
    const [r, inF] = m.down.shape;
    const outF = m.up.shape[0];
    const scale = weights.useRslora ? m.alpha / Math.sqrt(r) : m.alpha / r;
    const down = new Float32Array(rank * inF);
    down.set(m.down.data);
    const up = new Float32Array(outF * rank);
    for (let o = 0; o < outF; o++) {
      for (let k = 0; k < r; k++) up[o * rank + k] = scale * m.up.data[o * r + k];
    }
    modules.set(module, {
      down: { dtype: "float32", shape: [rank, inF], data: down },
      up: { dtype: "float32", shape: [outF, rank], data: up },
      alpha: rank,
      keys: m.keys,
    });
  }
  return { ...weights, modules, rank, alpha: rank, useRslora: false };
}

/**
 * Encode a LoRA as the tensors (and config) of a format, without writing.
 *
 * @example
 * ```ts
 * import { encodeLora, readLora } from "@texforce/core/adapters";
 * const enc = encodeLora(await readLora("lora_peft/"), "kohya");
 * console.log(Object.keys(enc.tensors)[0]);
 * ```
 */
export function encodeLora(
  weights: LoraWeights,
  format: LoraFormat,
  options: WriteLoraOptions = {},
): EncodedLora {
  const dtype = options.dtype ?? "F32";
  // The layout is the user's choice, not the base checkpoint's: default transformers 4.
  const tm = options.textModelPrefix ?? true;
  const layout = tm ? "text_model." : "";
  const tensors: Record<string, WritableTensor> = {};
  if (format === "peft") {
    for (const [module, m] of weights.modules) {
      tensors[`base_model.model.${layout}${module}.lora_A.weight`] = tensor(m.down, dtype);
      tensors[`base_model.model.${layout}${module}.lora_B.weight`] = tensor(m.up, dtype);
    }
    return { tensors, metadata: { format: "pt" }, config: peftConfig(weights, layout, options) };
  }
  if (format === "diffusers") {
    const prefix = (options.diffusersPrefix ?? "text_encoder.") + layout;
    const peftStyle = options.diffusersStyle === "peft";
    const folded = foldScale(weights);
    for (const [module, m] of folded.modules) {
      const [a, b] = peftStyle
        ? ["lora_A.weight", "lora_B.weight"]
        : ["lora_linear_layer.down.weight", "lora_linear_layer.up.weight"];
      tensors[`${prefix}${module}.${a}`] = tensor(m.down, dtype);
      tensors[`${prefix}${module}.${b}`] = tensor(m.up, dtype);
    }
    // diffusers ≥ 0.34 reads the LoraConfig from here, older ones take alpha = r from the
    // shapes: with the scale folded in, both read scale 1.
    const cfg = peftConfig(folded, layout, options);
    const meta: Record<string, unknown> = {};
    for (
      const k of [
        "r",
        "lora_alpha",
        "target_modules",
        "rank_pattern",
        "alpha_pattern",
        "use_rslora",
        "use_dora",
        "lora_bias",
        "init_lora_weights",
      ]
    ) meta[`text_encoder.${k}`] = cfg[k];
    return {
      tensors,
      metadata: { format: "pt", lora_adapter_metadata: JSON.stringify(meta, null, 2) },
    };
  }
  for (const [module, m] of weights.modules) {
    const stem = kohyaStem(module, tm);
    tensors[`${stem}.lora_down.weight`] = tensor(m.down, dtype);
    tensors[`${stem}.lora_up.weight`] = tensor(m.up, dtype);
    // A float alpha holding the real alpha: what A1111 and ComfyUI scale by (alpha / rank).
    tensors[`${stem}.alpha`] = { dtype: "F32", shape: [], data: [m.alpha] };
  }
  return {
    tensors,
    metadata: {
      ss_network_module: "networks.lora",
      ss_network_dim: String(weights.rank),
      ss_network_alpha: String(weights.alpha),
    },
  };
}

/**
 * File names used when `writeLora` is given a folder.
 *
 * @example
 * ```ts
 * import { LORA_FILE_NAMES } from "@texforce/core/adapters";
 * console.log(LORA_FILE_NAMES.diffusers); // pytorch_lora_weights.safetensors
 * ```
 */
export const LORA_FILE_NAMES: Readonly<Record<LoraFormat, string>> = {
  peft: "adapter_model.safetensors",
  diffusers: "pytorch_lora_weights.safetensors",
  kohya: "texforce_lora.safetensors",
};

/**
 * Write a LoRA in `format`. PEFT: `path` is a folder (created) that gets `adapter_config.json`
 * and `adapter_model.safetensors`. diffusers and kohya: `path` is the `.safetensors` file, or a
 * folder that gets `pytorch_lora_weights.safetensors` / `texforce_lora.safetensors`. Returns the
 * files written.
 *
 * @example
 * ```ts
 * import { readLora, writeLora } from "@texforce/core/adapters";
 * const lora = await readLora("lora_peft/");
 * await writeLora("for_a1111.safetensors", lora, "kohya");
 * ```
 */
export async function writeLora(
  path: string,
  weights: LoraWeights,
  format: LoraFormat,
  options: WriteLoraOptions = {},
): Promise<string[]> {
  if (!LORA_FORMATS.includes(format)) {
    throw new Error(`unknown LoRA format '${format}' (expected ${LORA_FORMATS.join(", ")})`);
  }
  const enc = encodeLora(weights, format, options);
  let file = path;
  if (format === "peft" || !path.endsWith(".safetensors")) {
    await Deno.mkdir(path, { recursive: true });
    file = join(path, LORA_FILE_NAMES[format]);
  }
  await writeSafetensors(file, enc.tensors, enc.metadata);
  const written = [file];
  if (enc.config) {
    const cfgPath = join(path, "adapter_config.json");
    await Deno.writeTextFile(cfgPath, JSON.stringify(enc.config, null, 2) + "\n");
    written.unshift(cfgPath);
  }
  return written;
}

/** Options of {@linkcode writeMergedTextEncoder}. */
export interface WriteMergedOptions {
  /**
   * Keys with `text_model.` (transformers-4 layout, default: transformers 4 reads only these)
   * or without (transformers-5 layout); null keeps the input's layout.
   */
  textModelPrefix?: boolean | null;
}

// Top-level modules of CLIPTextModel's `text_model` (what gains or loses the prefix).
const CLIP_TEXT_ROOTS = /^(embeddings|encoder|final_layer_norm)\./;

/**
 * Write a full text encoder with LoRA folded in: `outDir/model.safetensors` (every tensor of
 * the input, in its dtypes, with `W + Δ` for each module of `deltas`, keys in the chosen
 * layout) and a copy of `config.json`. `deltas` maps module paths to [out, in] row-major
 * arrays, e.g. from `LoraStack.mergedDeltas()`.
 *
 * @example
 * ```ts
 * import { writeMergedTextEncoder } from "@texforce/core/adapters";
 * declare const deltas: Map<string, Float32Array>;
 * await writeMergedTextEncoder("out/text_encoder", "sd15/text_encoder", deltas);
 * ```
 */
export async function writeMergedTextEncoder(
  outDir: string,
  textEncoderDir: string,
  deltas: Map<string, Float32Array>,
  options: WriteMergedOptions = {},
): Promise<string[]> {
  const source = await openWeights(textEncoderDir, { names: ["model"] });
  try {
    const prefix = clipTextKeyPrefix(source);
    const want = options.textModelPrefix === null
      ? prefix
      : (options.textModelPrefix ?? true)
      ? "text_model."
      : "";
    const outKey = (key: string): string => {
      if (want === prefix) return key;
      if (prefix && key.startsWith(prefix)) return key.slice(prefix.length);
      return CLIP_TEXT_ROOTS.test(key) ? want + key : key;
    };
    const tensors: Record<string, WritableTensor> = {};
    const merged = new Set<string>();
    for (const [module, delta] of deltas) {
      const key = `${prefix}${module}.weight`;
      if (!source.has(key)) {
        throw new Error(`${source.path}: no weight '${key}' to merge LoRA module '${module}' into`);
      }
      const info = source.info(key);
      const n = info.shape.reduce((a, b) => a * b, 1);
      if (n !== delta.length) {
        throw new Error(
          `${source.path}: '${key}' has shape ${JSON.stringify(info.shape)} (${n} values), ` +
            `the LoRA delta has ${delta.length}`,
        );
      }
      merged.add(key);
    }
    for (const key of source.keys()) {
      const info = source.info(key);
      const host = await source.read(key);
      let data: ArrayLike<number> = host.data;
      if (merged.has(key)) {
        const module = key.slice(prefix.length, -".weight".length);
        const delta = deltas.get(module)!;
        const out = new Float32Array(host.data.length);
        for (let i = 0; i < out.length; i++) out[i] = host.data[i] + delta[i];
        data = out;
      }
      tensors[outKey(key)] = { dtype: info.dtype, shape: [...info.shape], data };
    }
    await Deno.mkdir(outDir, { recursive: true });
    const file = join(outDir, "model.safetensors");
    await writeSafetensors(file, tensors, { format: "pt" });
    const cfg = join(outDir, "config.json");
    await Deno.copyFile(join(textEncoderDir, "config.json"), cfg);
    return [file, cfg];
  } finally {
    source.close();
  }
}
