/**
 * 3×3 convolution (stride 1, padding 1, NHWC) as an implicit GEMM on WebGPU: C [N·H·W, Cout] =
 * im2col(x) [N·H·W, 9·Cin] · W [9·Cin, Cout], where the tiled GEMM kernel reads im2col(x)
 * straight from x (zero outside the image) and the weight [3, 3, Cin, Cout] as stored, so no
 * patch matrix is ever built. The input gradient is the same kernel over dy with the taps
 * flipped and the weight read as [9·Cout, Cin]. Weights are constants here (the UNet and VAE are
 * frozen): the gradient reaches the input only.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Tensor1D, Tensor4D } from "../../core/tensor_types.ts";
import { registerWebgpuKernel, runKernel, type WebGPUBackendLike } from "./_program.ts";
import { gemmProgram } from "./_tiled_gemm.ts";
import { webgpuKernels } from "./kernel_options.ts";

const FORWARD = "TexforceConv3x3";
const GRAD_INPUT = "TexforceConv3x3GradInput";

/** WGSL: the 3×3 patch element (row = output pixel, kk = tap · channels + channel) of `a`. */
function patchRead(flip: boolean): string {
  const sign = flip ? "-" : "+";
  return `
      let hw = uniforms.h * uniforms.w;
      let ni = row / hw;
      let rem = row - ni * hw;
      let oh = rem / uniforms.w;
      let ow = rem - oh * uniforms.w;
      let tap = kk / uniforms.c;
      let ci = kk - tap * uniforms.c;
      let kh = tap / 3;
      let kw = tap - kh * 3;
      let ih = oh ${sign} (kh - 1);
      let iw = ow ${sign} (kw - 1);
      if (ih < 0 || ih >= uniforms.h || iw < 0 || iw >= uniforms.w) { return 0.0; }
      return a[((ni * uniforms.h + ih) * uniforms.w + iw) * uniforms.c + ci];`;
}

function convKernel(grad: boolean) {
  return (args: {
    inputs: tf.NamedTensorInfoMap;
    backend: unknown;
  }): tf.TensorInfo => {
    const backend = args.backend as WebGPUBackendLike;
    const { x, w, bias } = args.inputs as Record<string, tf.TensorInfo | undefined>;
    const [nb, h, wd, cx] = x!.shape;
    const [, , cin, cout] = w!.shape;
    // Forward: x has Cin channels, output Cout. Input gradient: x is dy (Cout channels), the
    // output has Cin and the weight is read as B[(tap, co), ci].
    const outC = grad ? cin : cout;
    const program = gemmProgram({
      key: `texforceConv3x3_${grad}_${bias ? "bias" : ""}`,
      batch: 1,
      m: nb * h * wd,
      n: outC,
      a: { read: patchRead(grad), contiguousK: true },
      b: grad
        ? {
          read: `let tap = kk / uniforms.c; let co = kk - tap * uniforms.c;
                 return b[(tap * uniforms.n + col) * uniforms.c + co];`,
          contiguousK: true,
        }
        : { read: "return b[kk * uniforms.n + col];", contiguousK: false },
      bias: Boolean(bias),
      uniforms: "h : i32, w : i32, c : i32,",
      tile: webgpuKernels().gemmTile,
    });
    const inputs = bias ? [x!, w!, bias] : [x!, w!];
    const out = backend.runWebGPUProgram(program, inputs, "float32", [
      { type: "int32", data: [nb * h * wd] },
      { type: "int32", data: [outC] },
      { type: "int32", data: [9 * cx] },
      { type: "int32", data: [h] },
      { type: "int32", data: [wd] },
      { type: "int32", data: [cx] },
    ]);
    return { dataId: out.dataId, shape: [nb, h, wd, outC], dtype: "float32" };
  };
}

function register(): void {
  registerWebgpuKernel(FORWARD, convKernel(false) as unknown as tf.KernelFunc);
  registerWebgpuKernel(GRAD_INPUT, convKernel(true) as unknown as tf.KernelFunc);
}

/**
 * `tf.conv2d(x, weight, 1, "same") + bias` for a 3×3 weight [3, 3, Cin, Cout] on the webgpu
 * backend, with the gradient to `x` (the weight is treated as a constant).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { conv3x3 } from "@texforce/core/adapters";
 * const y = conv3x3(tf.ones([2, 64, 64, 320]) as tf.Tensor4D,
 *   tf.ones([3, 3, 320, 320]) as tf.Tensor4D); // on webgpu
 * ```
 */
export function conv3x3(x: Tensor4D, weight: Tensor4D, bias?: Tensor1D): Tensor4D {
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`conv3x3: needs the webgpu backend (active: ${tf.getBackend()})`);
  }
  const [kh, kw, cin] = weight.shape;
  if (kh !== 3 || kw !== 3 || x.shape[3] !== cin) {
    throw new Error(`conv3x3: expected a [3, 3, ${x.shape[3]}, out] weight, got ${weight.shape}`);
  }
  register();
  const f = tf.customGrad((xx) => {
    const inputs: Record<string, tf.Tensor> = { x: xx as tf.Tensor, w: weight };
    if (bias) inputs.bias = bias;
    return {
      value: runKernel(FORWARD, inputs),
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) =>
        runKernel(GRAD_INPUT, { x: dy as tf.Tensor, w: weight }),
    };
  });
  return f(x) as Tensor4D;
}
