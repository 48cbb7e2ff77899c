// What CLIP's text and vision towers share: config fields (errors name the file and key) and
// the pre-LN encoder layers' weights.
import type { WeightSource } from "../../core/io/safetensors.ts";
import * as tf from "@tensorflow/tfjs";
import { fusedQuickGelu, fusedQuickGeluFits } from "../wasm/fused_quick_gelu.ts";
import type { Tensor } from "../../core/tensor_types.ts";
import { type LayerNormWeights, loadLayerNorm } from "../nn/layer_norm.ts";
import { type LinearWeights, loadLinear } from "../nn/linear.ts";
import type { WeightReader } from "../nn/weight_reader.ts";

/** Activation functions of CLIP configs. */
export type ClipActivation = "quick_gelu" | "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu";

const ACTIVATIONS: readonly ClipActivation[] = [
  "quick_gelu",
  "gelu",
  "gelu_new",
  "gelu_pytorch_tanh",
  "relu",
];

/** Typed getters over one tower's config object (`text_config`, `vision_config` or the root). */
export interface ClipConfigFields {
  /** A positive integer field, or its default. */
  int(key: string, fallback: number): number;
  /** `hidden_act`, checked against the supported activations. */
  activation(): ClipActivation;
  /** `layer_norm_eps`, a positive number (default 1e-5). */
  layerNormEps(): number;
}

/** Getters over `json[section]` when present, else `json` itself; `file` names errors. */
export function clipConfigFields(
  json: Record<string, unknown>,
  section: "text_config" | "vision_config",
  file: string,
): ClipConfigFields {
  const nested = json[section];
  const src = (nested && typeof nested === "object" ? nested : json) as Record<string, unknown>;
  return {
    int(key, fallback) {
      const v = src[key] ?? fallback;
      if (!Number.isInteger(v) || (v as number) < 1) {
        throw new Error(`${file}: '${key}' must be a positive integer, got ${JSON.stringify(v)}`);
      }
      return v as number;
    },
    activation() {
      const act = String(src.hidden_act ?? "quick_gelu");
      if (!ACTIVATIONS.includes(act as ClipActivation)) {
        throw new Error(
          `${file}: 'hidden_act' ${JSON.stringify(act)} is not supported (expected one of ` +
            `${ACTIVATIONS.join(", ")})`,
        );
      }
      return act as ClipActivation;
    },
    layerNormEps() {
      const eps = src.layer_norm_eps ?? 1e-5;
      if (typeof eps !== "number" || !(eps > 0)) {
        throw new Error(`${file}: 'layer_norm_eps' must be a positive number`);
      }
      return eps;
    },
  };
}

/** One encoder layer: LayerNorm → self-attention (q, k, v, out) → LayerNorm → MLP (fc1, fc2). */
export interface ClipLayer {
  /** `layer_norm1`. */
  ln1: LayerNormWeights;
  /** `layer_norm2`. */
  ln2: LayerNormWeights;
  /** `self_attn.q_proj`. */
  q: LinearWeights;
  /** `self_attn.k_proj`. */
  k: LinearWeights;
  /** `self_attn.v_proj`. */
  v: LinearWeights;
  /** `self_attn.out_proj`. */
  out: LinearWeights;
  /** `mlp.fc1`. */
  fc1: LinearWeights;
  /** `mlp.fc2`. */
  fc2: LinearWeights;
}

/** Loaders of a tower's linears and LayerNorms that hand every tensor to `keep`. */
export function clipLoaders(
  r: WeightReader,
  width: number,
  eps: number,
  keep: <T extends Tensor>(t: T) => T,
): {
  lin: (name: string, inDim: number, outDim: number) => Promise<LinearWeights>;
  ln: (name: string) => Promise<LayerNormWeights>;
} {
  return {
    lin: async (name, inDim, outDim) => {
      const w = await loadLinear(r, name, inDim, outDim);
      keep(w.weight);
      if (w.bias) keep(w.bias);
      return w;
    },
    ln: async (name) => {
      const w = await loadLayerNorm(r, name, width, eps);
      keep(w.weight);
      keep(w.bias);
      return w;
    },
  };
}

/**
 * Load `encoder.layers.0…n-1` (width d, MLP width m) and check that the weights hold no layer n
 * (config and weights must agree).
 */
export async function loadClipLayers(
  r: WeightReader,
  source: WeightSource,
  prefix: string,
  n: number,
  d: number,
  m: number,
  eps: number,
  keep: <T extends Tensor>(t: T) => T,
): Promise<ClipLayer[]> {
  const { lin, ln } = clipLoaders(r, d, eps, keep);
  const layers: ClipLayer[] = [];
  for (let i = 0; i < n; i++) {
    const p = `encoder.layers.${i}`;
    layers.push({
      ln1: await ln(`${p}.layer_norm1`),
      ln2: await ln(`${p}.layer_norm2`),
      q: await lin(`${p}.self_attn.q_proj`, d, d),
      k: await lin(`${p}.self_attn.k_proj`, d, d),
      v: await lin(`${p}.self_attn.v_proj`, d, d),
      out: await lin(`${p}.self_attn.out_proj`, d, d),
      fc1: await lin(`${p}.mlp.fc1`, d, m),
      fc2: await lin(`${p}.mlp.fc2`, m, d),
    });
  }
  const extra = `${prefix}encoder.layers.${n}.layer_norm1.weight`;
  if (source.has(extra)) {
    throw new Error(
      `${source.path}: holds '${extra}' but the config says num_hidden_layers = ${n}: ` +
        "config.json and weights disagree",
    );
  }
  return layers;
}

/** The activations CLIP configs name (`hidden_act`), as transformers defines them. */
export function clipActivate(x: Tensor, act: ClipActivation): Tensor {
  switch (act) {
    case "quick_gelu":
      // On wasm: one SIMD kernel each way (adapters/wasm/fused_quick_gelu.ts).
      if (fusedQuickGeluFits(x)) return fusedQuickGelu(x);
      return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
    case "gelu":
      // Exact GELU as torch.nn.functional.gelu: x·Φ(x) through erf (tfjs has its gradient).
      return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
    case "gelu_new":
    case "gelu_pytorch_tanh": {
      const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
      return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(inner)));
    }
    case "relu":
      return tf.relu(x);
  }
}
