// How texforce's own wasm kernels are declared and registered with tfjs (once per process).
import * as tf from "@tensorflow/tfjs";
import { installSimdAdd } from "./simd_add.ts";

/**
 * What tfjs passes a kernel function.
 *
 * @example
 * ```ts
 * import type { WasmKernelArgs } from "./_kernel_registry.ts";
 * const kernel = (args: WasmKernelArgs) => args.inputs.x;
 * ```
 */
export type WasmKernelArgs = {
  inputs: Record<string, tf.TensorInfo>;
  backend: unknown;
  attrs?: tf.NamedAttrMap;
};

/** A kernel's name and function. */
export type WasmKernel = readonly [
  string,
  (args: WasmKernelArgs) => tf.TensorInfo | tf.TensorInfo[],
];

const done = new Set<string>();

/**
 * Register the kernels for the wasm backend, each only the first time it is asked for.
 *
 * @example
 * ```ts
 * import { registerWasmKernels } from "./_kernel_registry.ts";
 * registerWasmKernels([["TexforceWasmExample", (args) => args.inputs.x]]);
 * ```
 */
export function registerWasmKernels(kernels: readonly WasmKernel[]): void {
  // The first of texforce's kernels also brings the same-shape Add (simd_add.ts), which the
  // models' residual sums and their gradients' accumulations run through tfjs' own op.
  installSimdAdd();
  for (const [kernelName, kernelFunc] of kernels) {
    if (done.has(kernelName)) continue;
    tf.registerKernel({
      kernelName,
      backendName: "wasm",
      kernelFunc: kernelFunc as unknown as tf.KernelFunc,
    });
    done.add(kernelName);
  }
}
