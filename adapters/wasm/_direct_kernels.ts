// Running registered wasm kernels (tfjs' own, or ones put in front of them) from inside another
// kernel (the fused transformer-block and ResNet parts), on TensorInfos, without a trip through
// tfjs' engine per step: no tensor objects, scopes or tape nodes for the intermediates, which a
// composite frees itself. texforce's own kernel functions are imported from their modules.
import * as tf from "@tensorflow/tfjs";
import type { WasmHeapBackend } from "./_wasm_heap.ts";
import { packedProductKernel } from "./packed_matmul.ts";

/**
 * Run a kernel registered for wasm (tfjs' own, such as FusedConv2D, or one replaced in front
 * of it) on TensorInfos.
 *
 * @example
 * ```ts
 * // inside a kernel: const y = runWasmKernel("Conv2D", backend, { x, filter }, attrs);
 * ```
 */
export function runWasmKernel(
  name: string,
  backend: WasmHeapBackend,
  inputs: Record<string, tf.TensorInfo>,
  attrs: Record<string, unknown> = {},
): tf.TensorInfo {
  const k = tf.getKernel(name, "wasm");
  if (!k) throw new Error(`runWasmKernel: the wasm backend has no ${name} kernel`);
  return k.kernelFunc({ inputs, backend, attrs } as never) as tf.TensorInfo;
}

/**
 * `a + b` (same shapes) by the Add registered for wasm (simd_add.ts in front of tfjs' own).
 *
 * @example
 * ```ts
 * // inside a kernel: const out = directAdd(backend, a, b);
 * ```
 */
export function directAdd(
  backend: WasmHeapBackend,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
): tf.TensorInfo {
  return runWasmKernel("Add", backend, { a, b });
}

/**
 * `x · W (+ bias)` for W packed (`packed`: the panels tensor's info, `n` columns) by the packed
 * product's kernel function.
 *
 * @example
 * ```ts
 * // inside a kernel: const q = directProduct(backend, n, wq, undefined, inner);
 * ```
 */
export function directProduct(
  backend: WasmHeapBackend,
  x: tf.TensorInfo,
  packed: tf.TensorInfo,
  bias: tf.TensorInfo | undefined,
  n: number,
): tf.TensorInfo {
  const inputs: Record<string, tf.TensorInfo> = bias ? { x, packed, bias } : { x, packed };
  return packedProductKernel({ inputs, backend, attrs: { n } });
}

/**
 * Free intermediates a composite made.
 *
 * @example
 * ```ts
 * // freeInfos(backend, dg, dp);
 * ```
 */
export function freeInfos(backend: WasmHeapBackend, ...infos: tf.TensorInfo[]): void {
  for (const t of infos) backend.disposeData(t.dataId);
}
