/**
 * Reads named weights from a {@linkcode WeightSource} into tf tensors, checking shapes and
 * naming the file and key in every error; remembers which keys were used.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { WeightSource } from "../../core/io/safetensors.ts";
import type { Tensor } from "../../core/tensor_types.ts";

/**
 * A shape-checking reader over a weight source, with an optional key prefix.
 *
 * @example
 * ```ts
 * import { openWeights } from "@texforce/core";
 * import { WeightReader } from "@texforce/core/adapters";
 * const r = new WeightReader(await openWeights("sd15/unet"));
 * const w = await r.tensor("conv_in.weight", [320, 4, 3, 3]);
 * ```
 */
export class WeightReader {
  /** The source. */
  readonly source: WeightSource;
  /** Prefix prepended to every key (e.g. `text_model.`). */
  readonly prefix: string;
  /** Keys read so far (full names). */
  readonly used: Set<string>;

  /** Wrap a source; `prefix` is prepended to keys. */
  constructor(source: WeightSource, prefix = "", used: Set<string> = new Set()) {
    this.source = source;
    this.prefix = prefix;
    this.used = used;
  }

  /** A reader for a sub-module: keys get `sub.` prepended. */
  child(sub: string): WeightReader {
    return new WeightReader(this.source, `${this.prefix}${sub}.`, this.used);
  }

  /** Whether `key` exists. */
  has(key: string): boolean {
    return this.source.has(this.prefix + key);
  }

  /**
   * Called by loaders with the tensor they keep for `key` after changing it from PyTorch's
   * layout (`linear`: [out, in] or [out, in, 1, 1] stored as [in, out]; `conv`: OIHW stored as
   * HWIO); returns the tensor to keep. The default keeps it; a trainer's reader returns a
   * variable in its place and remembers how to write it back.
   */
  adopt<T extends Tensor>(_key: string, kept: T, _layout: "linear" | "conv"): T {
    return kept;
  }

  /** Read a float tensor, checking its shape when `shape` is given (PyTorch layout). */
  async tensor(key: string, shape?: number[]): Promise<Tensor> {
    const full = this.prefix + key;
    if (!this.source.has(full)) {
      throw new Error(`${this.source.path}: missing weight '${full}'`);
    }
    const info = this.source.info(full);
    if (
      shape && (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i]))
    ) {
      throw new Error(
        `${this.source.path}: weight '${full}' has shape ${JSON.stringify(info.shape)}, ` +
          `the config expects ${JSON.stringify(shape)}`,
      );
    }
    const host = await this.source.read(full);
    this.used.add(full);
    return tf.tensor(host.data, host.shape, "float32");
  }
}
