// Start tfjs-backend-wasm 4.22's threaded SIMD build (XNNPACK on a pthread pool) under Deno.
//
// The Emscripten glue in the bundle runs in Node mode under Deno (`process.versions.node` is
// set), so it takes `node:worker_threads`' Worker for its pthreads, which Deno provides (module
// workers underneath; SharedArrayBuffer, shared WebAssembly.Memory and Atomics.wait all work).
// Three things stand in the way, and each is worked around only while the backend initialises:
//
// 1. tfjs's flag `WASM_HAS_MULTITHREAD_SUPPORT` is false whenever `IS_NODE` (tfjs issue 3830):
//    it is set to true here.
// 2. Each pthread is started from a blob: URL holding the classic `*.worker.js` script, which
//    neither Deno's Worker nor its worker_threads can run (`ERR_WORKER_PATH`). The glue assigns
//    `globalThis.Worker = worker_threads.Worker` and then calls `new Worker(blobUrl)`; a
//    `globalThis.Worker` accessor hands it a constructor that starts core/_wasm_pthread_worker.ts
//    (a module) instead, with the package's own glue file to evaluate.
// 3. The C side sizes XNNPACK's pool as min(requested, 8, logical cores / 2) (backend.cc
//    halves `emscripten_num_logical_cores()`, read once at start-up, for hyper-threading), and
//    under Node mode that count is `os.cpus().length`: while the module starts, `os.cpus()`
//    reports twice the threads asked for, so the request itself decides (at most 8, the glue's
//    pre-started pool of 8 workers being the other cap).
import * as tf from "@tensorflow/tfjs";
import os from "node:os";

/**
 * The most threads tfjs-backend-wasm 4.22 uses (`max_num_threads` in its backend.cc).
 *
 * @example
 * ```ts
 * import { WASM_MAX_THREADS } from "./_wasm_threads.ts";
 * const n = Math.min(navigator.hardwareConcurrency, WASM_MAX_THREADS);
 * ```
 */
export const WASM_MAX_THREADS = 8;

/** The pthread worker script, a module. */
const WORKER_URL = new URL("./_wasm_pthread_worker.ts", import.meta.url);

/**
 * Path of the package's Emscripten glue for the threaded build, next to the bundle's dist/.
 * `entry` is the resolved `file:` URL of `@tensorflow/tfjs-backend-wasm`.
 *
 * @example
 * ```ts
 * import { threadedGluePath } from "./_wasm_threads.ts";
 * console.log(threadedGluePath(import.meta.resolve("@tensorflow/tfjs-backend-wasm")));
 * ```
 */
export function threadedGluePath(entry: string): string {
  return new URL("../wasm-out/tfjs-backend-wasm-threaded-simd.js", entry).pathname;
}

/**
 * Whether this runtime can run the threaded build (shared memory and blocking waits).
 *
 * @example
 * ```ts
 * import { wasmThreadsAvailable } from "./_wasm_threads.ts";
 * console.log(wasmThreadsAvailable()); // true in Deno 2
 * ```
 */
export function wasmThreadsAvailable(): boolean {
  try {
    if (typeof SharedArrayBuffer === "undefined") return false;
    const mem = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    return mem.buffer instanceof SharedArrayBuffer;
  } catch {
    return false;
  }
}

/**
 * Run `init` (which must create the wasm backend: `tf.setBackend("wasm")`) with the pthread
 * workarounds of the file comment in place, for a pool of `threads` threads. Everything is
 * restored afterwards, whether `init` succeeds or throws.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { setThreadsCount } from "@tensorflow/tfjs-backend-wasm";
 * import { threadedGluePath, withWasmThreads } from "./_wasm_threads.ts";
 * setThreadsCount(2);
 * const glue = threadedGluePath(import.meta.resolve("@tensorflow/tfjs-backend-wasm"));
 * await withWasmThreads(2, glue, () => tf.setBackend("wasm"));
 * ```
 */
export async function withWasmThreads<T>(
  threads: number,
  gluePath: string,
  init: () => Promise<T>,
): Promise<T> {
  tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", true);
  const g = globalThis as Record<string, unknown>;
  const workerDescriptor = Object.getOwnPropertyDescriptor(g, "Worker");
  let nodeWorker: (new (url: URL, options: object) => unknown) | undefined;
  function PthreadWorker(): unknown {
    if (!nodeWorker) throw new Error("wasm threads: the glue did not provide worker_threads");
    const worker = new nodeWorker(WORKER_URL, { workerData: { gluePath } }) as {
      ref(): void;
      unref(): void;
    };
    // The glue refs a worker while it runs a thread (and unrefs it once loaded), and XNNPACK's
    // threads run until the backend is disposed: they must not keep the process alive.
    worker.ref = () => {};
    return worker;
  }
  Object.defineProperty(g, "Worker", {
    configurable: true,
    get: () => (nodeWorker ? PthreadWorker : workerDescriptor?.value),
    set: (v) => {
      nodeWorker = v;
    },
  });
  const cpus = os.cpus;
  // The glue reads only the length; the entries are made up rather than read from the real
  // os.cpus(), which needs --allow-sys that the `texforce` task (and most embedders) do not grant.
  os.cpus = () =>
    Array.from({ length: 2 * threads }, () => ({
      model: "",
      speed: 0,
      times: { user: 0, nice: 0, sys: 0, idle: 0, irq: 0 },
    }));
  try {
    return await init();
  } finally {
    os.cpus = cpus;
    if (workerDescriptor) Object.defineProperty(g, "Worker", workerDescriptor);
    else delete g.Worker;
  }
}
