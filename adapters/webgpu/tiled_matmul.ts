/**
 * Matrix product as a WebGPU compute shader with shared-memory tiles: each workgroup of 16 × 16
 * threads computes a 64 × 64 block of the output, each thread a 4 × 4 sub-block held in
 * registers, streaming 64 × 16 slices of both operands through workgroup memory. Either operand
 * may be transposed (read in place, no copy), so the gradients are the same kernel:
 * for C = A·B, dA = dC·Bᵀ and dB = Aᵀ·dC.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Tensor, Tensor1D, Tensor2D } from "../../core/tensor_types.ts";
import { registerWebgpuKernel, runKernel, type WebGPUBackendLike } from "./_program.ts";
import { gemmProgram } from "./_tiled_gemm.ts";
import { webgpuKernels } from "./kernel_options.ts";
import { useF16 } from "./f16.ts";

const KERNEL = "TexforceTiledMatMul";

function matMulKernel(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: unknown;
  attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const backend = args.backend as WebGPUBackendLike;
  const { a, b, bias } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const { transposeA, transposeB } = args.attrs as unknown as {
    transposeA: boolean;
    transposeB: boolean;
  };
  const batch = a!.shape.length === 3 ? a!.shape[0] : 1;
  const [ar, ac] = a!.shape.slice(-2);
  const [br, bc] = b!.shape.slice(-2);
  const m = transposeA ? ac : ar;
  const k = transposeA ? ar : ac;
  const n = transposeB ? br : bc;
  // Element (row, kk) of op(A) and (kk, col) of op(B), within batch bt.
  const aIndex = transposeA ? "kk * uniforms.m + row" : "row * uniforms.k + kk";
  const bIndex = transposeB ? "col * uniforms.k + kk" : "kk * uniforms.n + col";
  const program = gemmProgram({
    key: `texforceTiledMatMul_${transposeA}_${transposeB}_${bias ? "bias" : ""}`,
    batch,
    m,
    n,
    a: { read: `return a[bt * uniforms.m * uniforms.k + ${aIndex}];`, contiguousK: !transposeA },
    b: { read: `return b[bt * uniforms.k * uniforms.n + ${bIndex}];`, contiguousK: transposeB },
    bias: Boolean(bias),
    tile: webgpuKernels().gemmTile,
    f16: useF16(backend),
  });
  const inputs = bias ? [a!, b!, bias] : [a!, b!];
  const flat = backend.runWebGPUProgram(program, inputs, "float32", [
    { type: "int32", data: [m] },
    { type: "int32", data: [n] },
    { type: "int32", data: [k] },
  ]);
  // Same buffer, the product's shape (as tfjs' own reshape does).
  return {
    dataId: flat.dataId,
    shape: a!.shape.length === 3 ? [batch, m, n] : [m, n],
    dtype: "float32",
  };
}

function register(): void {
  registerWebgpuKernel(KERNEL, matMulKernel as unknown as tf.KernelFunc);
}

function checkShapes(a: Tensor, b: Tensor, transposeA: boolean, transposeB: boolean): void {
  const ka = transposeA ? a.shape[a.rank - 2] : a.shape[a.rank - 1];
  const kb = transposeB ? b.shape[b.rank - 1] : b.shape[b.rank - 2];
  const ranksOk = (a.rank === 2 && b.rank === 2) ||
    (a.rank === 3 && b.rank === 3 && a.shape[0] === b.shape[0]);
  if (!ranksOk || ka !== kb) {
    throw new Error(
      `tiledMatMul: expected 2-D operands or 3-D ones with equal batch and matching inner ` +
        `sizes; got ${a.shape}${transposeA ? "ᵀ" : ""} · ${b.shape}${transposeB ? "ᵀ" : ""}`,
    );
  }
}

/** The product alone, no gradient (the kernel). */
function product(a: Tensor, b: Tensor, transposeA: boolean, transposeB: boolean, bias?: Tensor) {
  register();
  const inputs: Record<string, Tensor> = { a, b };
  if (bias) inputs.bias = bias;
  return runKernel(KERNEL, inputs, { transposeA, transposeB });
}

/**
 * `op(a) · op(b)` for 2-D operands (or 3-D with equal batch) on the webgpu backend, with
 * gradients for both operands from the same kernel with transposes. Same result as
 * `tf.matMul(a, b, transposeA, transposeB)` up to float rounding.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { tiledMatMul } from "@texforce/core/adapters";
 * const c = tiledMatMul(tf.ones([2048, 2048]), tf.ones([2048, 2048])); // on webgpu
 * ```
 */
export function tiledMatMul(
  a: Tensor,
  b: Tensor,
  transposeA = false,
  transposeB = false,
): Tensor {
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`tiledMatMul: needs the webgpu backend (active: ${tf.getBackend()})`);
  }
  checkShapes(a, b, transposeA, transposeB);
  const f = tf.customGrad((aa, bb, save) => {
    const [at, bt] = [aa, bb] as Tensor[];
    (save as tf.GradSaveFunc)([at, bt]);
    return {
      value: product(at, bt, transposeA, transposeB),
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]): Tensor[] => {
        const [sa, sb] = saved;
        const g = dy as Tensor;
        if (!transposeA && !transposeB) {
          return [product(g, sb, false, true), product(sa, g, true, false)];
        }
        if (transposeA && !transposeB) {
          return [product(sb, g, false, true), product(sa, g, false, false)];
        }
        if (!transposeA && transposeB) {
          return [product(g, sb, false, false), product(g, sa, true, false)];
        }
        return [product(sb, g, true, true), product(g, sa, true, true)];
      },
    };
  });
  return f(a, b) as Tensor;
}

/**
 * `x · w (+ bias)` for a frozen weight `w` [in, out] on webgpu: the tiled kernel forward (bias
 * added in the kernel) and for the gradient to `x`, `dy · wᵀ`; no weight gradient.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { tiledConstLinear } from "@texforce/core/adapters";
 * const f = tiledConstLinear(tf.ones([320, 640]) as tf.Tensor2D);
 * const y = f(tf.ones([4096, 320]) as tf.Tensor2D); // on webgpu
 * ```
 */
export function tiledConstLinear(w: Tensor2D, bias?: Tensor1D): (x: Tensor2D) => Tensor2D {
  return (x: Tensor2D): Tensor2D => {
    checkShapes(x, w, false, false);
    const f = tf.customGrad((xx) => ({
      value: product(xx as Tensor, w, false, false, bias),
      gradFunc: (dy: Tensor | Tensor[]) => product(dy as Tensor, w, false, true),
    }));
    return f(x) as Tensor2D;
  };
}
