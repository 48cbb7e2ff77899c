/**
 * diffusers' `Downsample2D` (3×3 conv, stride 2) and `Upsample2D` (nearest ×2, then 3×3 conv)
 * over NHWC tensors.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { conv2d, type Conv2dWeights, loadConv2d } from "../nn/conv2d.ts";
import type { WeightReader } from "../nn/weight_reader.ts";
import type { Tensor4D } from "../../core/tensor_types.ts";

/**
 * Read `conv` under `r` (e.g. `r.child("downsamplers.0")`) as a stride-2 conv with `padding`
 * (diffusers' `downsample_padding`; 0 means pad right and bottom by one, as diffusers does).
 *
 * @example
 * ```ts
 * import { loadDownsample, type WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const d = await loadDownsample(r.child("down_blocks.0.downsamplers.0"), 320, 1);
 * ```
 */
export function loadDownsample(
  r: WeightReader,
  channels: number,
  padding: number,
): Promise<Conv2dWeights> {
  return loadConv2d(r, "conv", channels, channels, 3, 2, padding);
}

/**
 * Halve the resolution with a stride-2 conv.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { downsample, type Conv2dWeights } from "@texforce/core/adapters";
 * declare const w: Conv2dWeights;
 * const y = downsample(w, tf.ones([1, 16, 16, 320]) as tf.Tensor4D); // [1, 8, 8, 320]
 * ```
 */
export function downsample(w: Conv2dWeights, x: Tensor4D): Tensor4D {
  return tf.tidy(() => {
    if (w.padding !== 0) return conv2d(x, w);
    return conv2d(tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]), w);
  });
}

/**
 * Read `conv` under `r` (e.g. `r.child("upsamplers.0")`): a 3×3 conv with padding 1.
 *
 * @example
 * ```ts
 * import { loadUpsample, type WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const u = await loadUpsample(r.child("up_blocks.0.upsamplers.0"), 1280);
 * ```
 */
export function loadUpsample(r: WeightReader, channels: number): Promise<Conv2dWeights> {
  return loadConv2d(r, "conv", channels, channels, 3, 1, 1);
}

/**
 * Nearest-neighbour upsampling to `size` (default twice the input), then the conv. PyTorch's
 * `nearest` picks source index floor(dst · in / out), which is tfjs' rule without half-pixel
 * centres or corner alignment.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { upsample, type Conv2dWeights } from "@texforce/core/adapters";
 * declare const w: Conv2dWeights;
 * const y = upsample(w, tf.ones([1, 8, 8, 1280]) as tf.Tensor4D); // [1, 16, 16, 1280]
 * ```
 */
export function upsample(
  w: Conv2dWeights,
  x: Tensor4D,
  size?: [number, number],
): Tensor4D {
  return tf.tidy(() => {
    const [b, h, wd, c] = x.shape;
    const [oh, ow] = size ?? [2 * h, 2 * wd];
    // tfjs-backend-cpu's ResizeNearestNeighborGrad (4.22) reads dy at the input's batch stride,
    // so for a batch > 1 every sample's gradient but the first is wrong. Resizing one image whose
    // channels hold the whole batch gives the same values and a correct gradient everywhere.
    if (b === 1) return conv2d(tf.image.resizeNearestNeighbor(x, [oh, ow], false, false), w);
    const folded = x.transpose([1, 2, 0, 3]).reshape([1, h, wd, b * c]) as Tensor4D;
    const up = tf.image.resizeNearestNeighbor(folded, [oh, ow], false, false)
      .reshape([oh, ow, b, c]).transpose([2, 0, 1, 3]) as Tensor4D;
    return conv2d(up, w);
  });
}
