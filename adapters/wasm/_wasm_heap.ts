// Running texforce's own WebAssembly modules on tfjs-backend-wasm's heap: the backend's internals
// they need, its memory, tensor offsets, and one instance per module and memory.
import type * as tf from "@tensorflow/tfjs";

/**
 * The wasm backend's internals used here (stable across tfjs 4.x).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import type { WasmHeapBackend } from "./_wasm_heap.ts";
 * const backend = tf.backend() as unknown as WasmHeapBackend;
 * ```
 */
export interface WasmHeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
  disposeData(dataId: tf.DataId): boolean;
  dataIdMap: { get(dataId: tf.DataId): { memoryOffset: number } };
  wasm: {
    _malloc(bytes: number): number;
    _free(ptr: number): void;
    wasmMemory?: WebAssembly.Memory;
    asm?: { memory?: WebAssembly.Memory };
  };
}

/**
 * The backend's memory (shared in tfjs' threaded build), or null where it is not reachable.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { heapMemory, type WasmHeapBackend } from "./_wasm_heap.ts";
 * console.log(heapMemory(tf.backend() as unknown as WasmHeapBackend)?.buffer.byteLength);
 * ```
 */
export function heapMemory(backend: WasmHeapBackend): WebAssembly.Memory | null {
  const m = backend.wasm.wasmMemory ?? backend.wasm.asm?.memory;
  return m instanceof WebAssembly.Memory ? m : null;
}

/**
 * Byte offset of a tensor's data in the heap.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { heapOffset, type WasmHeapBackend } from "./_wasm_heap.ts";
 * const t = tf.ones([4]);
 * console.log(heapOffset(tf.backend() as unknown as WasmHeapBackend, t));
 * ```
 */
export function heapOffset(backend: WasmHeapBackend, t: tf.TensorInfo): number {
  return backend.dataIdMap.get(t.dataId).memoryOffset;
}

/** A module built twice: importing a shared memory (threaded build) and a plain one. */
export interface HeapModuleBinaries {
  shared: string;
  plain: string;
}

const instances = new WeakMap<
  HeapModuleBinaries,
  { memory: WebAssembly.Memory; exports: unknown }
>();
const compiled = new Map<string, WebAssembly.Module>();

/**
 * The module's exports instantiated on the backend's memory (`env.memory`), made once per
 * module and memory; null where the memory is not reachable.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { heapInstance, type WasmHeapBackend } from "./_wasm_heap.ts";
 * import { NORM_SIMD } from "./_norm_simd_wasm.ts";
 * const simd = heapInstance(tf.backend() as unknown as WasmHeapBackend, NORM_SIMD);
 * ```
 */
export function heapInstance<T>(backend: WasmHeapBackend, binaries: HeapModuleBinaries): T | null {
  const memory = heapMemory(backend);
  if (!memory) return null;
  const known = instances.get(binaries);
  if (known?.memory === memory) return known.exports as T;
  const instance = new WebAssembly.Instance(heapModule(binaries, memory), { env: { memory } });
  instances.set(binaries, { memory, exports: instance.exports });
  return instance.exports as T;
}

/**
 * The compiled module for this kind of memory (compiled once; workers get it by message).
 *
 * @example
 * ```ts
 * import { heapModule } from "./_wasm_heap.ts";
 * import { GEMM_SIMD } from "./_gemm_simd_wasm.ts";
 * const m = heapModule(GEMM_SIMD, new WebAssembly.Memory({ initial: 1 }));
 * ```
 */
export function heapModule(
  binaries: HeapModuleBinaries,
  memory: WebAssembly.Memory,
): WebAssembly.Module {
  const b64 = memory.buffer instanceof SharedArrayBuffer ? binaries.shared : binaries.plain;
  let m = compiled.get(b64);
  if (!m) {
    m = new WebAssembly.Module(Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0)));
    compiled.set(b64, m);
  }
  return m;
}
