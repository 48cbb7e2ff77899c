/**
 * CLIP's quick GELU, `x · σ(1.702 x)` (transformers' `QuickGELUActivation`, the activation of
 * SD 1.x's text encoder), with its gradient as one SIMD kernel on the wasm backend.
 *
 * Why: tfjs' gradient of the composition is about eight kernels (multiplies, a subtraction,
 * casts, an accumulation), each a pass over the [tokens, 3072] activations of every layer. The
 * forward stays tfjs' own three ops (XNNPACK's σ shares its threads, and the values, the
 * images sampled with them included, are unchanged); the backward is one pass of
 * activation_simd.wat from the forward's σ, `dx = dy · (s + 1.702 x · s · (1 − s))`, which
 * differs from tfjs' chain of ops by float rounding.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { registerWasmKernels, type WasmKernelArgs } from "./_kernel_registry.ts";
import { heapOffset, type WasmHeapBackend } from "./_wasm_heap.ts";
import { activationSimdFor } from "./_activation_simd.ts";
import type { Tensor } from "../../core/tensor_types.ts";
import { useWasmKernel } from "./kernel_options.ts";

const QUICK_GELU_GRAD = "TexforceWasmQuickGeluGrad";

function quickGeluGradKernel(args: WasmKernelArgs): tf.TensorInfo {
  const backend = args.backend as WasmHeapBackend;
  const { x, s, dy } = args.inputs;
  const simd = activationSimdFor(backend);
  if (!simd) throw new Error("fusedQuickGelu: the SIMD loops are not available (normSimd off?)");
  const out = backend.makeOutput(x.shape, "float32");
  const [xo, so, dyo, oo] = [x, s, dy, out].map((t) => heapOffset(backend, t));
  simd.quick_gelu_grad(xo, so, dyo, oo, 4 * x.shape.reduce((p, q) => p * q, 1));
  return out;
}

const KERNELS = [[QUICK_GELU_GRAD, quickGeluGradKernel]] as const;

/**
 * Whether {@linkcode fusedQuickGelu} takes `x` now: the `fusedQuickGelu` and `normSimd`
 * switches are on, the backend is wasm, and `x` is float32 with a multiple of 4 values.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedQuickGeluFits } from "@texforce/core/adapters";
 * console.log(fusedQuickGeluFits(tf.ones([154, 3072])));
 * ```
 */
export function fusedQuickGeluFits(x: Tensor): boolean {
  return useWasmKernel("fusedQuickGelu") && useWasmKernel("normSimd") &&
    x.dtype === "float32" && x.size % 4 === 0;
}

/**
 * `x · σ(1.702 x)` by tfjs' ops, differentiable through one kernel: one node on the tape.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedQuickGelu } from "@texforce/core/adapters";
 * // on the wasm backend:
 * const y = fusedQuickGelu(tf.ones([154, 3072])); // [154, 3072]
 * ```
 */
export function fusedQuickGelu(x: Tensor): Tensor {
  if (!fusedQuickGeluFits(x)) {
    throw new Error(
      `fusedQuickGelu: needs a float32 tensor with a multiple of 4 values on wasm with the ` +
        `fusedQuickGelu and normSimd switches on (got ${x.dtype} [${x.shape}] on ${tf.getBackend()})`,
    );
  }
  registerWasmKernels(KERNELS);
  const f = tf.customGrad((xx, save) => {
    const x0 = xx as Tensor;
    const sig = tf.sigmoid(tf.mul(x0, 1.702));
    (save as tf.GradSaveFunc)([x0, sig]);
    return {
      value: tf.mul(x0, sig),
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]): Tensor =>
        tf.engine().runKernel(
          QUICK_GELU_GRAD,
          { x: saved[0], s: saved[1], dy: dy as Tensor },
        ) as Tensor,
    };
  });
  return f(x) as Tensor;
}
