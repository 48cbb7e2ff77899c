/**
 * 3×3 convolution (stride 1 or 2, padding 1 as PyTorch pads, NHWC) as an implicit GEMM on
 * WebGPU, forward and every gradient on the tiled GEMM kernel, no patch matrix ever built:
 *
 * - forward: C [N·OH·OW, Cout] = im2col(x) [N·OH·OW, 9·Cin] · W [9·Cin, Cout] (+ bias), the
 *   kernel reading im2col(x) straight from x (zero outside the image) and W as stored;
 * - input gradient: dx [N·H·W, Cin] = col(dy) [N·H·W, 9·Cout] · W read as [9·Cout, Cin], where
 *   col(dy) gathers, for input pixel i and tap t, the output pixel that tap reached from i (zero
 *   where none did: off the image, or between the strides);
 * - filter gradient: dW [9·Cin, Cout] = im2col(x)ᵀ [9·Cin, N·OH·OW] · dy [N·OH·OW, Cout], with
 *   one more row of ones in im2col(x)ᵀ when there is a bias, so the same dispatch also sums dy
 *   over the pixels into the bias gradient.
 *
 * The filter and bias gradients are computed only when asked for (a trainable weight, or
 * `weightGrad: true`): the frozen UNet and VAE back-propagate into their inputs alone.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Tensor1D, Tensor4D } from "../../core/tensor_types.ts";
import { registerWebgpuKernel, runKernel, type WebGPUBackendLike } from "./_program.ts";
import { gemmProgram } from "./_tiled_gemm.ts";
import { webgpuKernels } from "./kernel_options.ts";
import { useF16 } from "./f16.ts";

const FORWARD = "TexforceConv3x3";
const GRAD_INPUT = "TexforceConv3x3GradInput";
const GRAD_FILTER = "TexforceConv3x3GradFilter";

/** Spatial output size of a 3×3 conv with padding 1 and stride `s` (PyTorch's rule). */
function outSize(size: number, s: number): number {
  return Math.floor((size + 2 - 3) / s) + 1;
}

// The uniforms every conv program gets after the GEMM's m, n, k: input size h × w, output size
// oh × ow, the channel count `c` of the tensor read through the patch view, and the stride.
const CONV_UNIFORMS = "h : i32, w : i32, oh : i32, ow : i32, c : i32, s : i32,";

// WGSL pieces the three patch maps share. `pixelOf`: split pixel index `p` of an [N, hh, ww]
// grid into sample `ni` and position (y, x). `TAP`: with `tap` (0–8) known, its kernel row and
// column `kh`, `kw`. `READ_INPUT_AT_TAP`: input value under tap (kh, kw) of output pixel
// (oy, ox), 0 in the padding.
const pixelOf = (p: string, hh: string, ww: string, y: string, x: string): string => `
      let ni = ${p} / (${hh} * ${ww});
      let rem = ${p} - ni * (${hh} * ${ww});
      let ${y} = rem / ${ww};
      let ${x} = rem - ${y} * ${ww};`;
const TAP = `
      let kh = tap / 3;
      let kw = tap - kh * 3;`;
const READ_INPUT_AT_TAP = `
      let ih = oy * uniforms.s + kh - 1;
      let iw = ox * uniforms.s + kw - 1;
      if (ih < 0 || ih >= uniforms.h || iw < 0 || iw >= uniforms.w) { return 0.0; }
      return a[((ni * uniforms.h + ih) * uniforms.w + iw) * uniforms.c + ci];`;

/** WGSL: element (output pixel `row`, tap · c + channel `kk`) of im2col(a), a [N, H, W, c]. */
const PATCH_FORWARD = `${pixelOf("row", "uniforms.oh", "uniforms.ow", "oy", "ox")}
      let tap = kk / uniforms.c;
      let ci = kk - tap * uniforms.c;${TAP}${READ_INPUT_AT_TAP}`;

/**
 * WGSL: element (input pixel `row`, tap · c + channel `kk`) of col(a), a = dy [N, OH, OW, c]:
 * the output pixel (oy, ox) with oy·s + kh − 1 = iy, ox·s + kw − 1 = ix, or 0 where none is.
 */
const PATCH_INPUT_GRAD = `${pixelOf("row", "uniforms.h", "uniforms.w", "iy", "ix")}
      let tap = kk / uniforms.c;
      let co = kk - tap * uniforms.c;${TAP}
      let ty = iy + 1 - kh;
      let tx = ix + 1 - kw;
      if (ty < 0 || tx < 0 || ty % uniforms.s != 0 || tx % uniforms.s != 0) { return 0.0; }
      let oy = ty / uniforms.s;
      let ox = tx / uniforms.s;
      if (oy >= uniforms.oh || ox >= uniforms.ow) { return 0.0; }
      return a[((ni * uniforms.oh + oy) * uniforms.ow + ox) * uniforms.c + co];`;

/**
 * WGSL: element (tap · c + channel `row`, output pixel `kk`) of im2col(a)ᵀ, a = x [N, H, W, c];
 * the row past the last (row 9·c, present when the bias gradient rides along) is all ones.
 */
const PATCH_FILTER_GRAD = `
      let tap = row / uniforms.c;
      if (tap >= 9) { return 1.0; }
      let ci = row - tap * uniforms.c;${TAP}${
  pixelOf("kk", "uniforms.oh", "uniforms.ow", "oy", "ox")
}${READ_INPUT_AT_TAP}`;

type Mode = "forward" | "input" | "filter";

function convKernel(mode: Mode) {
  return (args: {
    inputs: tf.NamedTensorInfoMap;
    backend: unknown;
    attrs?: tf.NamedAttrMap;
  }): tf.TensorInfo => {
    const backend = args.backend as WebGPUBackendLike;
    const { stride, withBias, inH, inW } = args.attrs as unknown as {
      stride: number;
      withBias: boolean;
      inH: number;
      inW: number;
    };
    const { x, w, dy, bias } = args.inputs as Record<string, tf.TensorInfo | undefined>;
    let m: number, n: number, k: number, c: number, outShape: number[];
    let dims: [number, number, number, number];
    let a: tf.TensorInfo, b: tf.TensorInfo;
    let read: { a: string; b: string; bContiguousK: boolean; aContiguousK: boolean };
    if (mode === "forward") {
      const [nb, h, wd, cin] = x!.shape;
      const cout = w!.shape[3];
      const [oh, ow] = [outSize(h, stride), outSize(wd, stride)];
      [m, n, k, c] = [nb * oh * ow, cout, 9 * cin, cin];
      dims = [h, wd, oh, ow];
      outShape = [nb, oh, ow, cout];
      [a, b] = [x!, w!];
      read = {
        a: PATCH_FORWARD,
        aContiguousK: true,
        b: "return b[kk * uniforms.n + col];",
        bContiguousK: false,
      };
    } else if (mode === "input") {
      // dy [N, OH, OW, Cout] → dx [N, H, W, Cin]; the weight read as B[(tap, co), ci].
      const [nb, oh, ow, cout] = dy!.shape;
      const cin = w!.shape[2];
      [m, n, k, c] = [nb * inH * inW, cin, 9 * cout, cout];
      dims = [inH, inW, oh, ow];
      outShape = [nb, inH, inW, cin];
      [a, b] = [dy!, w!];
      read = {
        a: PATCH_INPUT_GRAD,
        aContiguousK: true,
        b: `let tap = kk / uniforms.c; let co = kk - tap * uniforms.c;
                 return b[(tap * uniforms.n + col) * uniforms.c + co];`,
        bContiguousK: true,
      };
    } else {
      // x [N, H, W, Cin], dy [N, OH, OW, Cout] → dW [3, 3, Cin, Cout] (+ a row for the bias).
      const [nb, h, wd, cin] = x!.shape;
      const [, oh, ow, cout] = dy!.shape;
      [m, n, k, c] = [9 * cin + (withBias ? 1 : 0), cout, nb * oh * ow, cin];
      dims = [h, wd, oh, ow];
      outShape = [m, cout];
      [a, b] = [x!, dy!];
      read = {
        a: PATCH_FILTER_GRAD,
        aContiguousK: false,
        b: "return b[kk * uniforms.n + col];",
        bContiguousK: false,
      };
    }
    const hasBias = mode === "forward" && Boolean(bias);
    const f16 = useF16(backend);
    const program = gemmProgram({
      key: `texforceConv3x3_${mode}_${hasBias ? "bias" : ""}`,
      batch: 1,
      m,
      n,
      a: { read: read.a, contiguousK: read.aContiguousK },
      b: { read: read.b, contiguousK: read.bContiguousK },
      bias: hasBias,
      uniforms: CONV_UNIFORMS,
      tile: webgpuKernels().gemmTile,
      f16,
    });
    const inputs = hasBias ? [a, b, bias!] : [a, b];
    const out = backend.runWebGPUProgram(program, inputs, "float32", [
      { type: "int32", data: [m] },
      { type: "int32", data: [n] },
      { type: "int32", data: [k] },
      ...[...dims, c, stride].map((v) => ({ type: "int32" as const, data: [v] })),
    ]);
    return { dataId: out.dataId, shape: outShape, dtype: "float32" };
  };
}

function register(): void {
  registerWebgpuKernel(FORWARD, convKernel("forward") as unknown as tf.KernelFunc);
  registerWebgpuKernel(GRAD_INPUT, convKernel("input") as unknown as tf.KernelFunc);
  registerWebgpuKernel(GRAD_FILTER, convKernel("filter") as unknown as tf.KernelFunc);
}

/** Options of {@linkcode conv3x3}. */
export interface Conv3x3Options {
  /** 1 or 2 (padding is 1 on every side either way, as PyTorch's `padding=1`). Default 1. */
  stride?: 1 | 2;
  /**
   * Also return gradients for the weight and the bias. Default: whether the weight is a
   * trainable `tf.Variable` (frozen weights get the input gradient alone, saving a GEMM).
   */
  weightGrad?: boolean;
}

/** The input gradient alone (the kernel). */
function inputGrad(dy: tf.Tensor, weight: tf.Tensor, stride: number, h: number, w: number) {
  return runKernel(GRAD_INPUT, { dy, w: weight }, { stride, withBias: false, inH: h, inW: w });
}

/**
 * `conv2d(x, weight, stride, padding 1) + bias` for a 3×3 weight [3, 3, Cin, Cout] on the
 * webgpu backend, as PyTorch's `Conv2d(kernel_size=3, padding=1, stride)` computes it, with the
 * gradient to `x` and (see {@linkcode Conv3x3Options.weightGrad}) to the weight and the bias.
 * For stride 1 that is `tf.conv2d(x, weight, 1, "same")`; for stride 2 it is
 * `tf.conv2d(x, weight, 2, [[0, 0], [1, 1], [1, 1], [0, 0]])` (tfjs' "same" pads 0 before).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { conv3x3 } from "@texforce/core/adapters";
 * const y = conv3x3(tf.ones([2, 64, 64, 320]) as tf.Tensor4D,
 *   tf.ones([3, 3, 320, 320]) as tf.Tensor4D); // on webgpu
 * const down = conv3x3(y, tf.ones([3, 3, 320, 320]) as tf.Tensor4D, undefined, { stride: 2 });
 * ```
 */
export function conv3x3(
  x: Tensor4D,
  weight: Tensor4D,
  bias?: Tensor1D,
  options: Conv3x3Options = {},
): Tensor4D {
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`conv3x3: needs the webgpu backend (active: ${tf.getBackend()})`);
  }
  const [kh, kw, cin, cout] = weight.shape;
  if (kh !== 3 || kw !== 3 || x.shape[3] !== cin) {
    throw new Error(`conv3x3: expected a [3, 3, ${x.shape[3]}, out] weight, got ${weight.shape}`);
  }
  if (bias && bias.shape[0] !== cout) {
    throw new Error(`conv3x3: bias of ${bias.shape[0]} for ${cout} output channels`);
  }
  const stride = options.stride ?? 1;
  if (stride !== 1 && stride !== 2) throw new Error(`conv3x3: stride ${stride} is not 1 or 2`);
  register();
  const [h, w] = [x.shape[1], x.shape[2]];
  const forward = (xx: tf.Tensor, ww: tf.Tensor, bb?: tf.Tensor) => {
    const inputs: Record<string, tf.Tensor> = { x: xx, w: ww };
    if (bb) inputs.bias = bb;
    return runKernel(FORWARD, inputs, { stride, withBias: false, inH: h, inW: w });
  };
  const trainable = weight instanceof tf.Variable && weight.trainable;
  if (!(options.weightGrad ?? trainable)) {
    const f = tf.customGrad((xx) => ({
      value: forward(xx as tf.Tensor, weight, bias),
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) => inputGrad(dy as tf.Tensor, weight, stride, h, w),
    }));
    return f(x) as Tensor4D;
  }
  const gradFunc = (dy: tf.Tensor, [sx, sw]: tf.Tensor[]): tf.Tensor[] => {
    const dx = inputGrad(dy, sw, stride, h, w);
    const g = runKernel(GRAD_FILTER, { x: sx, dy }, {
      stride,
      withBias: Boolean(bias),
      inH: h,
      inW: w,
    });
    if (!bias) return [dx, g.reshape([3, 3, cin, cout])];
    const [dw, db] = tf.tidy(() => [
      g.slice([0, 0], [9 * cin, cout]).reshape([3, 3, cin, cout]),
      g.slice([9 * cin, 0], [1, cout]).reshape([cout]),
    ]);
    g.dispose();
    return [dx, dw, db];
  };
  if (bias) {
    const f = tf.customGrad((xx, ww, bb, save) => {
      (save as tf.GradSaveFunc)([xx as tf.Tensor, ww as tf.Tensor]);
      return {
        value: forward(xx as tf.Tensor, ww as tf.Tensor, bb as tf.Tensor),
        gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
          gradFunc(dy as tf.Tensor, saved),
      };
    });
    return f(x, weight, bias) as Tensor4D;
  }
  const f = tf.customGrad((xx, ww, save) => {
    (save as tf.GradSaveFunc)([xx as tf.Tensor, ww as tf.Tensor]);
    return {
      value: forward(xx as tf.Tensor, ww as tf.Tensor),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        gradFunc(dy as tf.Tensor, saved),
    };
  });
  return f(x, weight) as Tensor4D;
}
