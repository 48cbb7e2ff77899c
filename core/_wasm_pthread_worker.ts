// One Emscripten pthread of tfjs-backend-wasm's threaded SIMD build, as a Deno module worker.
//
// tfjs-backend-wasm 4.22 starts each pthread as a classic worker from a blob: URL (its inlined
// `*.worker.js`), which Deno cannot run. core/_wasm_threads.ts starts this file instead through
// `node:worker_threads` (the Emscripten glue runs in Node mode under Deno and talks to its
// workers with the worker_threads API), and this file does what that `*.worker.js` does under
// Node: it gives the glue `self`, `require`, `importScripts` and `postMessage`, receives the
// main thread's `load` message (the compiled module and the shared memory), evaluates the
// package's own Emscripten glue (wasm-out/tfjs-backend-wasm-threaded-simd.js, passed in as
// workerData) and then runs the thread routines the main thread sends.
import { parentPort, workerData } from "node:worker_threads";
import { createRequire } from "node:module";

// deno-lint-ignore no-explicit-any
type Any = any;

const { gluePath } = workerData as { gluePath: string };
const g = globalThis as Any;
const port = parentPort!;

let Module: Any = {};
let initializedJS = false;
let pendingQueues: unknown[] = [];

Object.assign(g, {
  self: g,
  require: createRequire(gluePath),
  __filename: gluePath,
  __dirname: gluePath.replace(/\/[^/]*$/, ""),
  postMessage: (msg: unknown) => port.postMessage(msg),
  // The glue only loads itself this way; the script named in `load` is the bundle's copy of it,
  // which refers to helpers of the bundle's scope, so the package's own file is read instead.
  importScripts: () => {
    (0, eval)(Deno.readTextFileSync(gluePath) + "\n//# sourceURL=" + gluePath);
  },
});

g.startWorker = (instance: Any) => {
  Module = instance;
  port.postMessage({ cmd: "loaded" });
};

function handle(data: Any): void {
  try {
    if (data.cmd === "load") {
      Module.wasmModule = data.wasmModule;
      for (const handler of data.handlers as string[]) {
        Module[handler] = (...args: unknown[]) =>
          port.postMessage({ cmd: "callHandler", handler, args });
      }
      Module.wasmMemory = data.wasmMemory;
      Module.buffer = Module.wasmMemory.buffer;
      Module.ENVIRONMENT_IS_PTHREAD = true;
      Module.instantiateWasm = (info: Any, receiveInstance: Any) => {
        const instance = new WebAssembly.Instance(Module.wasmModule, info);
        receiveInstance(instance);
        Module.wasmModule = null;
        return instance.exports;
      };
      g.importScripts();
      g.WasmBackendModuleThreadedSimd(Module);
    } else if (data.cmd === "run") {
      Module.__emscripten_thread_init(data.pthread_ptr, 0, 0, 1);
      Module.establishStackSpace();
      Module.PThread.receiveObjectTransfer(data);
      Module.PThread.threadInitTLS();
      if (!initializedJS) {
        for (const queue of pendingQueues) Module.executeNotifiedProxyingQueue(queue);
        pendingQueues = [];
        initializedJS = true;
      }
      try {
        Module.invokeEntryPoint(data.start_routine, data.arg);
      } catch (ex) {
        if (ex !== "unwind") {
          if (ex instanceof Module.ExitStatus) {
            if (!Module.keepRuntimeAlive()) Module.__emscripten_thread_exit((ex as Any).status);
          } else {
            throw ex;
          }
        }
      }
    } else if (data.cmd === "cancel") {
      if (Module._pthread_self()) Module.__emscripten_thread_exit(-1);
    } else if (data.cmd === "processProxyingQueue") {
      if (initializedJS) Module.executeNotifiedProxyingQueue(data.queue);
      else pendingQueues.push(data.queue);
    }
  } catch (ex) {
    if (Module.__emscripten_thread_crashed) Module.__emscripten_thread_crashed();
    throw ex;
  }
}

port.on("message", handle);
