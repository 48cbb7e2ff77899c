/**
 * UNet LoRA weights in the layouts diffusers and the community save them, merged into the UNet's
 * linear layers (W += scale · alpha/r · up · down) before sampling.
 *
 * Accepted key layouts (an optional `unet.` prefix everywhere; text-encoder keys are skipped):
 * - PEFT: `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight` / `lora_B`
 * - diffusers `LoRALinearLayer`: `….attn1.to_q.lora.down.weight` / `.lora.up.weight`
 *   (also `lora_linear_layer.down/up`)
 * - attention processors: `….attn1.processor.to_q_lora.down.weight` (`to_out_lora` → `to_out.0`)
 * - kohya: `lora_unet_down_blocks_0_attentions_0_…_attn1_to_q.lora_down.weight`, `.lora_up`,
 *   `.alpha`
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import { type HostTensor, SafetensorsFile } from "../../core/io/safetensors.ts";
import type { LinearRegistry } from "./_linear_registry.ts";
import type { Tensor2D } from "../../core/tensor_types.ts";
import { isTextEncoderKey, parseUNetKey } from "../lora/_lora_keys.ts";

/**
 * One LoRA pair for a linear layer.
 *
 * @example
 * ```ts
 * import { loadUNetLora, type LoraPair } from "@texforce/core/adapters";
 * const pairs: LoraPair[] = [...(await loadUNetLora("lora.safetensors")).pairs.values()];
 * console.log(pairs[0].module, pairs[0].down?.shape);
 * ```
 */
export interface LoraPair {
  /** Module path (diffusers dots), or the kohya name with underscores when `kohya` is set. */
  module: string;
  /** Whether `module` is a kohya flat name, resolved against the UNet's layers on merge. */
  kohya: boolean;
  /** `down` / `lora_A`: [r, in] (or [r, in, 1, 1]). */
  down?: HostTensor;
  /** `up` / `lora_B`: [out, r] (or [out, r, 1, 1]). */
  up?: HostTensor;
  /** Alpha (scale alpha/r), or null for scale 1. */
  alpha: number | null;
}

/**
 * A loaded UNet LoRA.
 *
 * @example
 * ```ts
 * import { loadUNetLora, type UNetLora } from "@texforce/core/adapters";
 * const lora: UNetLora = await loadUNetLora("lora.safetensors");
 * console.log(lora.pairs.size, lora.skipped.length);
 * ```
 */
export interface UNetLora {
  /** The file read. */
  path: string;
  /** Pairs by module key. */
  pairs: Map<string, LoraPair>;
  /** Keys that belong to other models (text encoders) and were skipped. */
  skipped: string[];
}

/**
 * Read a UNet LoRA from a `.safetensors` file or a PEFT adapter folder
 * (`adapter_config.json` + `adapter_model.safetensors`, whose `lora_alpha` and `r` set the scale).
 *
 * @example
 * ```ts
 * import { loadUNetLora } from "@texforce/core/adapters";
 * const lora = await loadUNetLora("pytorch_lora_weights.safetensors");
 * console.log(lora.pairs.size);
 * ```
 */
export async function loadUNetLora(path: string): Promise<UNetLora> {
  let file = path;
  let configAlpha: number | null = null;
  let isDir = false;
  try {
    isDir = (await Deno.stat(path)).isDirectory;
  } catch {
    throw new Error(`${path}: UNet LoRA not found`);
  }
  if (isDir) {
    file = join(path, "adapter_model.safetensors");
    try {
      const cfg = JSON.parse(await Deno.readTextFile(join(path, "adapter_config.json")));
      if (typeof cfg.lora_alpha === "number" && typeof cfg.r === "number") {
        configAlpha = cfg.lora_alpha;
      }
    } catch { /* no config: alpha = r */ }
  }
  const f = await SafetensorsFile.open(file);
  try {
    const md = f.metadata ?? {};
    if (configAlpha === null && md.lora_adapter_metadata) {
      try {
        const meta = JSON.parse(md.lora_adapter_metadata);
        const a = meta?.["unet.lora_alpha"] ?? meta?.unet?.lora_alpha ?? meta?.lora_alpha;
        if (typeof a === "number") configAlpha = a;
      } catch { /* malformed metadata: ignore it */ }
    }
    const pairs = new Map<string, LoraPair>();
    const skipped: string[] = [];
    for (const key of f.keys()) {
      if (isTextEncoderKey(key)) {
        skipped.push(key);
        continue;
      }
      if (/lora_magnitude_vector|\.hada_|\.lokr_/.test(key)) {
        throw new Error(
          `${file}: '${key}': DoRA/LoHa/LoKr weights are not supported (plain LoRA only)`,
        );
      }
      const p = parseUNetKey(key);
      if (!p) throw new Error(`${file}: '${key}' is not a UNet LoRA key this loader knows`);
      const id = `${p.kohya ? "kohya:" : ""}${p.module}`;
      const pair = pairs.get(id) ?? { module: p.module, kohya: p.kohya, alpha: configAlpha };
      if (p.part === "alpha") {
        pair.alpha = (await f.read(key)).data[0];
      } else {
        pair[p.part] = await f.read(key);
      }
      pairs.set(id, pair);
    }
    for (const [id, p] of pairs) {
      if (!p.down || !p.up) {
        throw new Error(`${file}: LoRA for '${p.module}' has no ${p.down ? "up" : "down"} weight`);
      }
      if (p.down.shape.length === 4 && (p.down.shape[2] !== 1 || p.down.shape[3] !== 1)) {
        throw new Error(
          `${file}: LoRA for '${p.module}' has a ${p.down.shape[2]}×${p.down.shape[3]} conv ` +
            "kernel; only linear and 1×1 layers are supported",
        );
      }
      pairs.set(id, p);
    }
    return { path: file, pairs, skipped };
  } finally {
    f.close();
  }
}

/**
 * Add scale · (alpha/r) · up·down to each targeted layer of `registry` (in place); returns the
 * number of layers changed. A negative scale removes a LoRA merged before (up to rounding).
 *
 * @example
 * ```ts
 * import { loadUNetLora, mergeUNetLora, type LinearRegistry } from "@texforce/core/adapters";
 * declare const layers: LinearRegistry;
 * mergeUNetLora(layers, await loadUNetLora("lora.safetensors"), 0.8);
 * ```
 */
export function mergeUNetLora(registry: LinearRegistry, lora: UNetLora, scale = 1): number {
  const flat = new Map<string, string>();
  for (const name of registry.keys()) flat.set(name.replaceAll(".", "_"), name);
  let n = 0;
  for (const p of lora.pairs.values()) {
    const name = p.kohya ? flat.get(p.module) : p.module;
    const layer = name === undefined ? undefined : registry.get(name);
    if (!layer) {
      throw new Error(
        `${lora.path}: LoRA targets '${p.module}', which is not a linear layer of this UNet`,
      );
    }
    const down = p.down!;
    const up = p.up!;
    const r = down.shape[0];
    const [inDim, outDim] = layer.weight.shape;
    if (down.data.length !== r * inDim || up.data.length !== outDim * r || up.shape[1] !== r) {
      throw new Error(
        `${lora.path}: LoRA for '${p.module}' has shapes down ${JSON.stringify(down.shape)}, ` +
          `up ${JSON.stringify(up.shape)}; the layer is ${outDim}×${inDim}`,
      );
    }
    const s = scale * (p.alpha === null ? 1 : p.alpha / r);
    const old = layer.weight;
    layer.weight = tf.tidy(() => {
      const d = tf.tensor2d(down.data as Float32Array, [r, inDim]);
      const u = tf.tensor2d(up.data as Float32Array, [outDim, r]);
      return tf.add(old, tf.mul(tf.matMul(d, u, true, true), s)) as Tensor2D;
    });
    old.dispose();
    n++;
  }
  return n;
}

export type { LinearRegistry } from "./_linear_registry.ts";
