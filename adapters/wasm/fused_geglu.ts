/**
 * GEGLU, `value · gelu(gate)` for a projection [.., 2·I] whose first half is the value and second
 * half the gate (diffusers' `GEGLU`, exact erf GELU), as one kernel forward and one backward on
 * the wasm backend.
 *
 * Why: tfjs' composition (split, four multiplies and adds around Erf) is 7 kernels forward and
 * about 12 backward per transformer block; the fixed cost of each kernel dominated the tiny
 * UNet at small batches. The loops are activation_simd.wat's (four values at a time) where the
 * halves come in fours (and the `normSimd` switch is on), else JS loops with the same erf (Eigen's rational approximation,
 * absolute error about 1e-7) in double precision, the reference the SIMD loops are tested
 * against.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { registerWasmKernels, type WasmKernelArgs } from "./_kernel_registry.ts";
import { heapOffset, type WasmHeapBackend } from "./_wasm_heap.ts";
import { type ActivationSimd, activationSimdFor } from "./_activation_simd.ts";
import type { Tensor } from "../../core/tensor_types.ts";
import { useWasmKernel } from "./kernel_options.ts";

const GEGLU = "TexforceWasmGeglu";
const GEGLU_GRAD = "TexforceWasmGegluGrad";

const INV_SQRT2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

// Eigen's `generic_fast_erf_float`: x · P(x²) / Q(x²) on [-4, 4] (activation_simd.wat's erf).
const ERF_P = [
  -2.72614225801306e-10,
  2.77068142495902e-08,
  -2.10102402082508e-06,
  -5.69250639462346e-05,
  -7.34990630326855e-04,
  -2.95459980854025e-03,
  -1.60960333262415e-02,
];
const ERF_Q = [
  -1.45660718464996e-05,
  -2.13374055278905e-04,
  -1.68282697438203e-03,
  -7.37332916720468e-03,
  -1.42647390514189e-02,
];

function erf(x0: number): number {
  const x = Math.min(4, Math.max(-4, x0));
  const x2 = x * x;
  let p = ERF_P[0];
  for (let i = 1; i < ERF_P.length; i++) p = p * x2 + ERF_P[i];
  let q = ERF_Q[0];
  for (let i = 1; i < ERF_Q.length; i++) q = q * x2 + ERF_Q[i];
  return (x * p) / q;
}

/** The SIMD loops where the halves come in fours (and the switch is on), else null. */
function simdFor(backend: WasmHeapBackend, half: number): ActivationSimd | null {
  return half % 4 === 0 ? activationSimdFor(backend) : null;
}

function gegluKernel(args: WasmKernelArgs): tf.TensorInfo {
  const backend = args.backend as WasmHeapBackend;
  const { x } = args.inputs;
  const width = x.shape[x.shape.length - 1];
  const half = width / 2;
  const out = backend.makeOutput([...x.shape.slice(0, -1), half], "float32");
  const rows = half === 0 ? 0 : x.shape.reduce((a, b) => a * b, 1) / width;
  const simd = simdFor(backend, half);
  if (simd) {
    simd.geglu(heapOffset(backend, x), heapOffset(backend, out), rows, half);
    return out;
  }
  // Views after the allocation (the heap may have grown).
  const [xv, ov] = [x, out].map((t) => backend.typedArrayFromHeap(t));
  for (let r = 0, o = 0; r < xv.length; r += width) {
    for (let j = 0; j < half; j++, o++) {
      const g = xv[r + half + j];
      ov[o] = xv[r + j] * (g * (0.5 + 0.5 * erf(g * INV_SQRT2)));
    }
  }
  return out;
}

function gegluGradKernel(args: WasmKernelArgs): tf.TensorInfo {
  const backend = args.backend as WasmHeapBackend;
  const { x, dy } = args.inputs;
  const width = x.shape[x.shape.length - 1];
  const half = width / 2;
  const out = backend.makeOutput(x.shape, "float32");
  const rows = half === 0 ? 0 : x.shape.reduce((a, b) => a * b, 1) / width;
  const simd = simdFor(backend, half);
  if (simd) {
    const [xo, dyo, oo] = [x, dy, out].map((t) => heapOffset(backend, t));
    simd.geglu_grad(xo, dyo, oo, rows, half);
    return out;
  }
  const [xv, dv, ov] = [x, dy, out].map((t) => backend.typedArrayFromHeap(t));
  for (let r = 0, o = 0; r < xv.length; r += width) {
    for (let j = 0; j < half; j++, o++) {
      const v = xv[r + j];
      const g = xv[r + half + j];
      const cdf = 0.5 + 0.5 * erf(g * INV_SQRT2);
      ov[r + j] = dv[o] * (g * cdf);
      ov[r + half + j] = dv[o] * v * (cdf + g * (Math.exp(-0.5 * g * g) * INV_SQRT_2PI));
    }
  }
  return out;
}

const KERNELS = [[GEGLU, gegluKernel], [GEGLU_GRAD, gegluGradKernel]] as const;

/**
 * GEGLU's kernel functions, for composite kernels that call them directly on the heap instead
 * of through tfjs' engine (fused_feed_forward.ts).
 *
 * @example
 * ```ts
 * import { gegluKernels } from "./fused_geglu.ts";
 * // inside a kernel: const g = gegluKernels.forward({ inputs: { x }, backend });
 * console.log(Object.keys(gegluKernels));
 * ```
 */
export const gegluKernels = { forward: gegluKernel, backward: gegluGradKernel } as const;

/**
 * Whether {@linkcode fusedGeglu} takes `x` now: the `fusedGeglu` switch is on, the backend is
 * wasm, and `x` is float32 with an even last axis.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedGegluFits } from "@texforce/core/adapters";
 * console.log(fusedGegluFits(tf.ones([2, 16, 64])));
 * ```
 */
export function fusedGegluFits(x: Tensor): boolean {
  return useWasmKernel("fusedGeglu") && x.dtype === "float32" && x.rank >= 1 &&
    x.shape[x.rank - 1] % 2 === 0;
}

/**
 * `value · gelu(gate)` where `[value, gate]` are the halves of `x`'s last axis, differentiable.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedGeglu } from "@texforce/core/adapters";
 * // on the wasm backend:
 * const y = fusedGeglu(tf.ones([2, 16, 64])); // [2, 16, 32]
 * ```
 */
export function fusedGeglu(x: Tensor): Tensor {
  if (!fusedGegluFits(x)) {
    throw new Error(
      `fusedGeglu: needs a float32 tensor with an even last axis on wasm with the fusedGeglu ` +
        `switch on (got ${x.dtype} [${x.shape}] on ${tf.getBackend()})`,
    );
  }
  registerWasmKernels(KERNELS);
  const f = tf.customGrad((xx, save) => {
    (save as tf.GradSaveFunc)([xx as Tensor]);
    return {
      value: tf.engine().runKernel(GEGLU, { x: xx as Tensor }) as Tensor,
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]): Tensor =>
        tf.engine().runKernel(GEGLU_GRAD, { x: saved[0], dy: dy as Tensor }) as Tensor,
    };
  });
  return f(x) as Tensor;
}
