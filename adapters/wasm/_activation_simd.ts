// The SIMD loops of activation_simd.wat bound to the wasm backend's heap (every pointer a byte
// offset into it), for the fused GEGLU, the quick-GELU gradient, the fused norms' SiLU, the
// ResNet blocks' time add and the attention core's query scale and mask add.
import { ACTIVATION_SIMD } from "./_activation_simd_wasm.ts";
import { heapInstance, type WasmHeapBackend } from "./_wasm_heap.ts";
import { useWasmKernel } from "./kernel_options.ts";

/** activation_simd.wat's exports. */
export interface ActivationSimd {
  /** out[r, j] = v · gelu(g) for rows of [v (h), g (h)]; h a multiple of 4. */
  geglu(x: number, out: number, rows: number, half: number): void;
  /** d[v, g] of geglu for output gradient dy (rows × h). */
  geglu_grad(x: number, dy: number, out: number, rows: number, half: number): void;
  /** dx of y = x · s, s = σ(1.702 x) (given), for output gradient dy; `bytes` a multiple of 16. */
  quick_gelu_grad(x: number, s: number, dy: number, out: number, bytes: number): void;
  /** out = σ(x) over `bytes` bytes (a multiple of 16). */
  sigmoid(x: number, out: number, bytes: number): void;
  /** out = a + b over n values. */
  add(a: number, b: number, out: number, n: number): void;
  /** out = x · s over n values (float32 products). */
  scale(x: number, out: number, n: number, s: number): void;
  /** h[s, p, j] += t[s, j] in place (`samples` × `positions` rows of c values, c in fours). */
  add_per_sample(h: number, t: number, samples: number, positions: number, c: number): void;
}

/**
 * The loops on this backend's memory, or null where the `normSimd` switch is off or the memory
 * is not reachable (callers then run their JS loops or the stock kernel).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { activationSimdFor } from "./_activation_simd.ts";
 * import type { WasmHeapBackend } from "./_wasm_heap.ts";
 * const simd = activationSimdFor(tf.backend() as unknown as WasmHeapBackend);
 * ```
 */
export function activationSimdFor(backend: WasmHeapBackend): ActivationSimd | null {
  if (!useWasmKernel("normSimd")) return null;
  return heapInstance<ActivationSimd>(backend, ACTIVATION_SIMD);
}
