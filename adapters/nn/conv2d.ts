/**
 * 2-D convolution over NHWC tensors with PyTorch weights (OIHW, stored as HWIO for tfjs).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { WeightReader } from "./weight_reader.ts";
import type { Tensor1D, Tensor4D } from "../../core/tensor_types.ts";
import { conv3x3 } from "../webgpu/implicit_gemm_conv.ts";
import { useWebgpuKernel } from "../webgpu/kernel_options.ts";
import { copiesOf, keepCopies } from "./weight_copies.ts";

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
    // The rewritten input gradient is for tfjs-wasm; on webgpu (which has its own fast
    // backprop kernel) it gave wrong gradients, so other backends keep the stock convolution.
    // texforce's implicit-GEMM kernel on webgpu for the UNet's and VAE's 3×3 convs with
    // padding 1, stride 1 or 2 (bias fused), with the input gradient and, for a trainable
    // weight, the weight and bias gradients; tests/webgpu_kernels_test.ts checks them all.
    const [kh, kw] = w.weight.shape;
    const trainable = w.weight instanceof tf.Variable;
    if (
      useWebgpuKernel("implicitGemmConv") && kh === 3 && kw === 3 &&
      (w.stride === 1 || w.stride === 2) && w.padding === 1
    ) {
      return conv3x3(x, w.weight, w.bias, { stride: w.stride, weightGrad: trainable });
    }
    if (!trainable && tf.getBackend() === "wasm") return constConv(w)(x);
    let y = trainable && tf.getBackend() === "wasm"
      ? trainableConv(x, w.weight, w.stride, w.padding)
      : tf.conv2d(x, w.weight, w.stride, w.padding === 0 ? "valid" : symmetric(w.padding));
    if (w.bias) y = tf.add(y, w.bias);
    return y;
  });
}

type CustomGradFunc = Parameters<typeof tf.customGrad>[0];
type Pad4 = [[number, number], [number, number], [number, number], [number, number]];

const symmetric = (p: number): Pad4 => [[0, 0], [p, p], [p, p], [0, 0]];

/**
 * `conv2d(x, weight) + bias` for a frozen weight, differentiable w.r.t. `x` only, the bias added
 * inside XNNPACK's convolution (one kernel instead of two, forward and backward). The stock input
 * gradient (Conv2DBackpropInput) runs a scalar loop on tfjs-wasm, ten times slower than the
 * forward convolution, which XNNPACK runs; so the input gradient is written as a forward
 * convolution of the (zero-dilated, for stride 2) output gradient with the flipped kernel.
 */
function constConv(w: Conv2dWeights): (x: Tensor4D) => Tensor4D {
  const { weight, bias, stride, padding: p } = w;
  const pad: Pad4 | "valid" = p === 0 ? "valid" : symmetric(p);
  return tf.customGrad(
    ((x: Tensor4D) => ({
      // The kernel itself: tf.fused.conv2d would wrap it in a gradient scope of its own.
      value: tf.engine().runKernel(
        "FusedConv2D",
        bias ? { x, filter: weight, bias } : { x, filter: weight },
        fusedAttrs(stride, pad),
      ) as Tensor4D,
      gradFunc: (dy: Tensor4D) => convInputGrad(dy, weight, stride, p, x.shape[1], x.shape[2]),
    })) as unknown as CustomGradFunc,
  ) as unknown as (x: Tensor4D) => Tensor4D;
}

const fusedAttrs = (stride: number, pad: Pad4 | "valid") => ({
  strides: [stride, stride],
  pad,
  dataFormat: "NHWC",
  dilations: [1, 1],
  activation: "linear",
});

/** The filter of the input gradient: spatially flipped, in and out channels swapped. */
const flipped = (weight: Tensor4D): Tensor4D =>
  tf.tidy(() => tf.reverse(weight, [0, 1]).transpose([0, 1, 3, 2]) as Tensor4D);

/**
 * Make and keep the kernel-ready copy of a frozen convolution's weight (on wasm: the flipped
 * filter of its input gradient), so that {@linkcode conv2d}'s backward pass stops remaking it
 * per call. The owner releases it with `releaseWeightCopies` before disposing or replacing the
 * weight. Trainable weights (variables) are left alone.
 *
 * @example
 * ```ts
 * import { type Conv2dWeights, keepConvCopies, releaseWeightCopies } from "@texforce/core/adapters";
 * declare const w: Conv2dWeights;
 * keepConvCopies(w);
 * releaseWeightCopies([w.weight]);
 * ```
 */
export function keepConvCopies(w: Conv2dWeights): void {
  if (w.weight instanceof tf.Variable || tf.getBackend() !== "wasm") return;
  keepCopies(w.weight).prepare("flipped", () => flipped(w.weight));
}

/**
 * `conv2d(x, weight)` differentiable w.r.t. both (pre-training on tfjs-wasm, which has no
 * Conv2DBackpropFilter kernel). The input gradient is {@linkcode convInputGrad}; the filter
 * gradient is, per kernel offset, one untransposed 2-D product of the transposed output
 * gradient with the input window seen at that offset.
 */
function trainableConv(x: Tensor4D, weight: Tensor4D, stride: number, padding: number): Tensor4D {
  const p = padding;
  const pad: Pad4 | "valid" = p === 0 ? "valid" : symmetric(p);
  const f = tf.customGrad(
    ((xx: Tensor4D, ww: Tensor4D, save: tf.GradSaveFunc) => {
      save([xx, ww]);
      return {
        value: tf.conv2d(xx, ww, stride, pad),
        gradFunc: (dy: Tensor4D, saved: tf.Tensor[]) => {
          const [sx, sw] = saved as Tensor4D[];
          return [
            convInputGrad(dy, sw, stride, p, sx.shape[1], sx.shape[2]),
            convFilterGrad(sx, dy, sw.shape, stride, p),
          ];
        },
      };
    }) as unknown as CustomGradFunc,
  ) as unknown as (x: Tensor4D, w: Tensor4D) => Tensor4D;
  return f(x, weight);
}

/**
 * d conv2d(x, W, stride s, pad p) / dW [kh, kw, in, out]: for each kernel offset (i, j),
 * Σ over output pixels of the padded input at that offset times the output gradient.
 */
function convFilterGrad(
  x: Tensor4D,
  dy: Tensor4D,
  wShape: [number, number, number, number],
  s: number,
  p: number,
): Tensor4D {
  return tf.tidy(() => {
    const [kh, kw, ci, co] = wShape;
    const [n, oh, ow] = dy.shape;
    const xp = p > 0 ? tf.pad(x, symmetric(p)) : x;
    // dWᵀ[i, j] = dyᵀ · window(i, j): the small output gradient is transposed once, the large
    // windows never are.
    const dyT = tf.transpose(dy.reshape([n * oh * ow, co]));
    const parts: tf.Tensor[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        let win: tf.Tensor = xp.slice([0, i, j, 0], [n, s * (oh - 1) + 1, s * (ow - 1) + 1, ci]);
        if (s > 1) {
          // Every s-th row and column: pad to a multiple of s, fold, take offset 0.
          const hh = s * oh;
          const ww = s * ow;
          win = tf.pad(win, [[0, 0], [0, hh - win.shape[1]!], [0, ww - win.shape[2]!], [0, 0]])
            .reshape([n, oh, s, ow, s, ci])
            .slice([0, 0, 0, 0, 0, 0], [n, oh, 1, ow, 1, ci]);
        }
        parts.push(tf.matMul(dyT, win.reshape([n * oh * ow, ci])));
      }
    }
    // [kh·kw, co, ci] → [kh, kw, ci, co].
    return tf.stack(parts).reshape([kh, kw, co, ci]).transpose([0, 1, 3, 2]) as Tensor4D;
  });
}

/**
 * d conv2d(x, weight, stride, pad p) / dx for an input of height `h` and width `w`, as a stride-1
 * forward convolution. With y[o] = Σ_k x[s·o + k − p]·W[k], dx[i] = Σ_j z[i − (K−1−p) + j]·W[K−1−j]
 * where z is dy spread out by s (z[s·o] = dy[o], zeros between): a correlation of z, padded by
 * K−1−p before and h + p − s·oh after (z holding s·oh entries; cropped when that is negative),
 * with the spatially flipped kernel whose in/out channels are swapped.
 */
function convInputGrad(
  dy: Tensor4D,
  weight: Tensor4D,
  s: number,
  p: number,
  h: number,
  w: number,
): Tensor4D {
  return tf.tidy(() => {
    const [kh, kw] = weight.shape;
    const [n, oh, ow, c] = dy.shape;
    let z = dy;
    if (s > 1) {
      // Interleave zeros: [n, oh, 1, ow, 1, c] padded to [n, oh, s, ow, s, c], then merged.
      z = tf.pad(dy.reshape([n, oh, 1, ow, 1, c]), [
        [0, 0],
        [0, 0],
        [0, s - 1],
        [0, 0],
        [0, s - 1],
        [0, 0],
      ]).reshape([n, oh * s, ow * s, c]);
    }
    // Padding before and after along one axis; a negative amount crops z instead.
    const pads = (size: number, k: number, o: number) => [k - 1 - p, size + p - s * o];
    const [top, bottom] = pads(h, kh, oh);
    const [left, right] = pads(w, kw, ow);
    if (Math.min(top, bottom, left, right) < 0) {
      const [t0, l0] = [Math.max(-top, 0), Math.max(-left, 0)];
      z = z.slice(
        [0, t0, l0, 0],
        [n, oh * s - t0 + Math.min(bottom, 0), ow * s - l0 + Math.min(right, 0), c],
      );
    }
    const pad: Pad4 = [
      [0, 0],
      [Math.max(top, 0), Math.max(bottom, 0)],
      [Math.max(left, 0), Math.max(right, 0)],
      [0, 0],
    ];
    // A frozen weight's flipped filter is kept (keepConvCopies); a trainable one's made here.
    return copiesOf(weight).with("flipped", () => flipped(weight), (f) => tf.conv2d(z, f, 1, pad));
  });
}

/**
 * A frozen stride-1 same-size convolution's weights with its kept flipped filter (made by
 * {@linkcode keepConvCopies}), for fused kernels that take the layer whole; null for trainable
 * or unregistered weights, other strides or paddings, and other backends.
 *
 * @example
 * ```ts
 * import { type Conv2dWeights, keepConvCopies, sameConvOf } from "@texforce/core/adapters";
 * declare const w: Conv2dWeights;
 * keepConvCopies(w);
 * console.log(sameConvOf(w)?.flipped.shape);
 * ```
 */
export function sameConvOf(
  w: Conv2dWeights,
): { filter: Tensor4D; flipped: Tensor4D; bias?: Tensor1D } | null {
  const [kh, kw] = w.weight.shape;
  if (w.weight instanceof tf.Variable || w.stride !== 1 || kh !== kw || 2 * w.padding !== kh - 1) {
    return null;
  }
  const f = copiesOf(w.weight).kept("flipped");
  return f instanceof tf.Tensor ? { filter: w.weight, flipped: f as Tensor4D, bias: w.bias } : null;
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
  const weight = r.adopt(
    `${prefix}.weight`,
    tf.tidy(() => w.transpose([2, 3, 1, 0]) as Tensor4D),
    "conv",
  );
  w.dispose();
  const out: Conv2dWeights = { weight, stride, padding };
  if (r.has(`${prefix}.bias`)) out.bias = (await r.tensor(`${prefix}.bias`, [outC])) as Tensor1D;
  return out;
}
