/**
 * A {@linkcode WeightReader} that invents weights of the requested shapes (PyTorch's default
 * uniform init; norms at 1 and 0), so full-size models can be built for benchmarks and tests
 * without checkpoints.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { HostTensor, TensorInfo, WeightSource } from "../../core/io/safetensors.ts";
import { WeightReader } from "../nn/weight_reader.ts";
import { SeededNoise } from "../../core/seeded_noise.ts";
import type { Tensor } from "../../core/tensor_types.ts";

class NoWeights implements WeightSource {
  readonly path = "<random weights>";
  keys(): string[] {
    return [];
  }
  has(): boolean {
    return false;
  }
  info(name: string): TensorInfo {
    throw new Error(`${this.path}: no header for '${name}'`);
  }
  read(name: string): Promise<HostTensor> {
    return Promise.reject(new Error(`${this.path}: cannot read '${name}'`));
  }
  close(): void {}
}

/**
 * Random weights for any model loader that reads through a {@linkcode WeightReader}. Every key
 * exists except the biases named in `noBias` (default: the UNet's bias-free attention q/k/v).
 *
 * @example
 * ```ts
 * import { parseUNetConfig, RandomWeightReader, UNet2DConditionModel } from "@texforce/core/adapters";
 * const unet = await UNet2DConditionModel.fromReader(parseUNetConfig({}), new RandomWeightReader(0));
 * console.log(unet.numParameters()); // ≈ 860M for the SD 1.5 defaults
 * ```
 */
export class RandomWeightReader extends WeightReader {
  #gen: SeededNoise;
  #noBias: RegExp;

  /** A reader drawing from `seed`; `noBias` matches bias keys that must not exist. */
  constructor(seed = 0, noBias = /(^|\.)to_[qkv]\.bias$/, prefix = "", gen?: SeededNoise) {
    super(new NoWeights(), prefix);
    this.#gen = gen ?? new SeededNoise(seed);
    this.#noBias = noBias;
  }

  /** A reader for a sub-module sharing this generator. */
  override child(sub: string): WeightReader {
    return new RandomWeightReader(0, this.#noBias, `${this.prefix}${sub}.`, this.#gen);
  }

  /** Every key exists except the excluded biases. */
  override has(key: string): boolean {
    return !this.#noBias.test(this.prefix + key);
  }

  /** A random tensor of `shape` (required: there is no header to read it from). */
  override tensor(key: string, shape?: number[]): Promise<Tensor> {
    if (!shape) throw new Error(`RandomWeightReader: '${this.prefix}${key}' needs a shape`);
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (shape.length === 1) {
      data.fill(key.endsWith("weight") ? 1 : 0);
    } else {
      // PyTorch's default init for linear and conv weights: U(±1/√fan_in).
      const bound = 1 / Math.sqrt(n / shape[0]);
      for (let i = 0; i < n; i++) data[i] = (2 * this.#gen.nextUniform() - 1) * bound;
    }
    this.used.add(this.prefix + key);
    return Promise.resolve(tf.tensor(data, shape, "float32"));
  }
}
