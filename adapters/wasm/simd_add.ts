/**
 * tfjs' wasm `Add` of two float32 tensors of one shape as one SIMD loop (activation_simd.wat's
 * `add`) instead of tfjs-backend-wasm's kernel.
 *
 * Why: the stock kernel costs about 35 µs a call before it adds anything (43 µs for 16 384
 * values on one thread here, 72 µs for 131 072; 62 µs for 16 384 with two threads, where it also
 * wakes XNNPACK's pool), and a tiny-UNet forward + backward at batch 2 runs 184 Adds of that size
 * (residual connections and the tape's gradient sums). The loop adds 4 values per instruction,
 * the same IEEE float32 sums, so results do not change. Large adds with more than one thread go
 * to the stock kernel (XNNPACK splits them). Other dtypes and broadcasting go to the kernel that
 * was registered before (tfjs' own, or core's broadcast loops).
 *
 * Installed when texforce's first wasm kernel registers (`_kernel_registry.ts`); off with the
 * `normSimd` switch, like the other SIMD loops.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { wasmThreadsToShare } from "../../core/backend.ts";
import { activationSimdFor } from "./_activation_simd.ts";
import { heapOffset, type WasmHeapBackend } from "./_wasm_heap.ts";

/** Above this many values, with threads, XNNPACK's split add is the faster. */
export const SIMD_ADD_MAX_THREADED = 1 << 18;

let installed = false;

function simdAdd(
  args: { inputs: Record<string, tf.TensorInfo>; backend: unknown },
): tf.TensorInfo | null {
  const { a, b } = args.inputs;
  if (a.dtype !== "float32" || b.dtype !== "float32" || a.shape.length !== b.shape.length) {
    return null;
  }
  let n = 1;
  for (let i = 0; i < a.shape.length; i++) {
    if (a.shape[i] !== b.shape[i]) return null;
    n *= a.shape[i];
  }
  if (n > SIMD_ADD_MAX_THREADED && wasmThreadsToShare() > 1) return null;
  const backend = args.backend as WasmHeapBackend;
  const simd = activationSimdFor(backend);
  if (!simd) return null;
  const out = backend.makeOutput(a.shape, "float32");
  if (n > 0) simd.add(heapOffset(backend, a), heapOffset(backend, b), heapOffset(backend, out), n);
  return out;
}

/**
 * Put the SIMD same-shape Add in front of the wasm backend's current `Add` kernel (once per
 * process; a no-op before tfjs-backend-wasm is loaded).
 *
 * @example
 * ```ts
 * import { installSimdAdd } from "./simd_add.ts";
 * installSimdAdd();
 * ```
 */
export function installSimdAdd(): void {
  if (installed) return;
  const previous = tf.getKernel("Add", "wasm");
  if (!previous) return;
  installed = true;
  const stock = previous.kernelFunc;
  tf.unregisterKernel("Add", "wasm");
  tf.registerKernel({
    kernelName: "Add",
    backendName: "wasm",
    setupFunc: previous.setupFunc,
    kernelFunc: ((args: Parameters<tf.KernelFunc>[0]) =>
      simdAdd(args as never) ?? stock(args)) as tf.KernelFunc,
  });
}
