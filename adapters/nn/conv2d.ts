/**
 * 2-D convolution over NHWC tensors with PyTorch weights (OIHW, stored as HWIO for tfjs).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { WeightReader } from "./weight_reader.ts";
import type { Tensor1D, Tensor4D } from "../../core/tensor_types.ts";

/** Conv2d parameters. */
export interface Conv2dWeights {
  /** [kh, kw, in, out]. */
  weight: Tensor4D;
  /** [out]. */
  bias?: Tensor1D;
  /** Stride. */
  stride: number;
  /** Symmetric zero padding (PyTorch `padding`). */
  padding: number;
}

/**
 * Convolution with PyTorch's explicit symmetric padding.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { conv2d } from "@texforce/core/adapters";
 * const y = conv2d(tf.ones([1, 8, 8, 4]) as tf.Tensor4D, {
 *   weight: tf.ones([3, 3, 4, 2]) as tf.Tensor4D, stride: 1, padding: 1,
 * });
 * ```
 */
export function conv2d(x: Tensor4D, w: Conv2dWeights): Tensor4D {
  return tf.tidy(() => {
    const p = w.padding;
    const pad: [[number, number], [number, number], [number, number], [number, number]] | "valid" =
      p === 0 ? "valid" : [[0, 0], [p, p], [p, p], [0, 0]];
    let y = tf.conv2d(x, w.weight, w.stride, pad);
    if (w.bias) y = tf.add(y, w.bias);
    return y;
  });
}

/**
 * Read `prefix.weight` (OIHW) and `prefix.bias`.
 *
 * @example
 * ```ts
 * import { loadConv2d, WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const c = await loadConv2d(r, "conv_in", 4, 320, 3, 1, 1);
 * ```
 */
export async function loadConv2d(
  r: WeightReader,
  prefix: string,
  inC: number,
  outC: number,
  kernel: number,
  stride = 1,
  padding = 0,
): Promise<Conv2dWeights> {
  const w = await r.tensor(`${prefix}.weight`, [outC, inC, kernel, kernel]);
  const weight = tf.tidy(() => w.transpose([2, 3, 1, 0]) as Tensor4D);
  w.dispose();
  const out: Conv2dWeights = { weight, stride, padding };
  if (r.has(`${prefix}.bias`)) out.bias = (await r.tensor(`${prefix}.bias`, [outC])) as Tensor1D;
  return out;
}
