// Calling texforce's wasm kernel functions directly from inside another kernel (the fused
// transformer-block parts), on TensorInfos, without a trip through tfjs' engine per step: no
// tensor objects, scopes or tape nodes for the intermediates, which a composite frees itself.
import * as tf from "@tensorflow/tfjs";
import type { WasmKernel } from "./_kernel_registry.ts";
import type { WasmHeapBackend } from "./_wasm_heap.ts";

/** A kernel function as the kernel lists hold it. */
export type DirectKernel = WasmKernel[1];

/**
 * Look up kernel functions by name in the given kernel lists; `who` names the caller in the
 * error for a missing one (found when the composite's module loads).
 *
 * @example
 * ```ts
 * import { directKernels } from "./_direct_kernels.ts";
 * import { FUSED_GEGLU_KERNELS } from "./fused_geglu.ts";
 * const geglu = directKernels("example", FUSED_GEGLU_KERNELS)("TexforceWasmGeglu");
 * ```
 */
export function directKernels(
  who: string,
  ...lists: (readonly WasmKernel[])[]
): (name: string) => DirectKernel {
  const byName = new Map<string, DirectKernel>(lists.flat());
  return (name) => {
    const f = byName.get(name);
    if (!f) throw new Error(`${who}: no kernel '${name}'`);
    return f;
  };
}

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
 * A kernel's single output.
 *
 * @example
 * ```ts
 * // const p = single(product({ inputs: { x, packed }, backend, attrs: { n } }));
 * ```
 */
export const single = (r: tf.TensorInfo | tf.TensorInfo[]): tf.TensorInfo => r as tf.TensorInfo;

/**
 * A kernel's outputs.
 *
 * @example
 * ```ts
 * // const [y, stats] = several(norm({ inputs: { x, gamma, beta }, backend, attrs }));
 * ```
 */
export const several = (r: tf.TensorInfo | tf.TensorInfo[]): tf.TensorInfo[] =>
  r as tf.TensorInfo[];

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
