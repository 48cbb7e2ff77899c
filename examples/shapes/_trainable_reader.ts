// A weight reader that initialises a model for training: every weight a loader keeps becomes a
// tf.Variable, remembered under its PyTorch key with the layout change the loader made, so the
// trained weights can be written back as a diffusers checkpoint.
import * as tf from "@tensorflow/tfjs";
import { RandomWeightReader } from "../../adapters/unet/random_weight_reader.ts";
import type { WeightReader } from "../../adapters/nn/weight_reader.ts";
import type { Tensor } from "../../core/tensor_types.ts";
import type { WritableTensor } from "../../core/io/safetensors.ts";

/** One trainable weight. */
export interface TrainableWeight {
  /** The variable the model computes with. */
  variable: tf.Variable;
  /** How the loader changed it from the PyTorch layout. */
  layout: "identity" | "linear" | "conv";
  /** The PyTorch shape. */
  shape: number[];
}

/** Random initial weights (PyTorch's defaults) handed out as variables and recorded by key. */
export class TrainableReader extends RandomWeightReader {
  /** Full key → weight, shared by child readers. */
  readonly weights: Map<string, TrainableWeight>;
  #seed: number;

  constructor(
    seed: number,
    weights = new Map<string, TrainableWeight>(),
    prefix = "",
    gen?: never,
  ) {
    super(seed, undefined, prefix, gen);
    this.#seed = seed;
    this.weights = weights;
  }

  override child(sub: string): WeightReader {
    // The parent's generator is private; children draw from their own seeded streams, derived
    // from the full key prefix so the initialisation does not depend on load order.
    let h = this.#seed >>> 0;
    for (const ch of `${this.prefix}${sub}.`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
    return new TrainableReader(h, this.weights, `${this.prefix}${sub}.`);
  }

  override async tensor(key: string, shape?: number[]): Promise<Tensor> {
    const t = await super.tensor(key, shape);
    const variable = tf.variable(t, true, `pretrain/${this.prefix}${key}`);
    t.dispose();
    this.weights.set(this.prefix + key, { variable, layout: "identity", shape: shape ?? t.shape });
    return variable;
  }

  override adopt<T extends Tensor>(key: string, kept: T, layout: "linear" | "conv"): T {
    const full = this.prefix + key;
    const old = this.weights.get(full);
    if (!old) throw new Error(`TrainableReader: '${full}' was adopted but never read`);
    const variable = tf.variable(kept, true, `pretrain/${full}#${layout}`);
    kept.dispose();
    this.weights.set(full, { variable, layout, shape: old.shape });
    return variable as unknown as T;
  }
}

/** The value of a trainable weight in PyTorch layout (a new tensor). */
export function torchLayout(w: TrainableWeight, value: Tensor = w.variable): Tensor {
  return tf.tidy(() => {
    if (w.layout === "identity") return value.clone();
    if (w.layout === "conv") return value.transpose([3, 2, 0, 1]);
    return value.transpose().reshape(w.shape);
  });
}

/** Weights (or their EMA values, when given) as fp16 safetensors entries. */
export async function toWritable(
  weights: Map<string, TrainableWeight>,
  values?: Map<string, Tensor>,
): Promise<Record<string, WritableTensor>> {
  const out: Record<string, WritableTensor> = {};
  for (const [key, w] of weights) {
    const t = torchLayout(w, values?.get(key) ?? w.variable);
    out[key] = { dtype: "F16", shape: w.shape, data: await t.data() as Float32Array };
    t.dispose();
  }
  return out;
}
