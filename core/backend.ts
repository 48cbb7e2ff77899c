/**
 * Tensor backends: pick and initialise the tfjs backend a run computes on.
 *
 * `auto` prefers WebGPU on a hardware adapter, then WebAssembly, then the plain JavaScript `cpu`
 * backend. `webgpu` asked for by name also accepts a software adapter (Mesa's lavapipe). The wasm
 * binaries are read from the installed npm package, never fetched.
 *
 * `wasm` runs XNNPACK on a pool of threads (tfjs-backend-wasm's threaded SIMD build, started as
 * Deno workers by core/_wasm_threads.ts): by default one per idle core
 * (`navigator.hardwareConcurrency` less the 1-minute load average), at most 8 (tfjs-backend-wasm's
 * own cap), or as set by {@linkcode BackendOptions.wasmThreads} or the `TEXFORCE_WASM_THREADS`
 * environment variable; 1 selects the single-threaded SIMD build.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { installWasmSliceKernels } from "./_wasm_kernels.ts";
import { installTapeMemoryRelease } from "./_tape_memory.ts";
import { installUniformShapes } from "./_uniform_shapes.ts";
import { installTensorTables } from "./_tensor_tables.ts";
import { patchedThreadedWasm, THREADED_SIMD_WASM } from "./_xnnpack_spin.ts";
import {
  attachXnnpackGate,
  installXnnpackGate,
  pinXnnpackPool,
  type PoolCountSite,
  poolCountSite,
} from "./_xnnpack_gate.ts";
import {
  threadedGluePath,
  WASM_MAX_THREADS,
  wasmThreadsAvailable,
  withWasmThreads,
} from "./_wasm_threads.ts";

/** Names accepted by {@linkcode useBackend}. */
export type BackendName = "auto" | "cpu" | "wasm" | "webgpu" | "tensorflow";

/** The list of backend names, for schemas and CLI help. */
export const BACKEND_NAMES: readonly BackendName[] = [
  "auto",
  "cpu",
  "wasm",
  "webgpu",
  "tensorflow",
] as const;

/** What {@linkcode useBackend} reports about the backend now in use. */
export interface BackendInfo {
  /** The tfjs backend name (`cpu`, `wasm`, `webgpu`, `tensorflow`). */
  name: string;
  /** A human-readable device description, e.g. the GPU adapter or "WebAssembly (SIMD)". */
  device: string;
}

/** Options of {@linkcode useBackend}. */
export interface BackendOptions {
  /**
   * Threads for the `wasm` backend: default `$TEXFORCE_WASM_THREADS`, else
   * `navigator.hardwareConcurrency` less the cores the load average says are busy; clamped to
   * 1..8. 1 is the single-threaded SIMD build. Results are bitwise the same for any count.
   * Asking for a count other than the one the wasm backend already runs with starts it afresh
   * (every tensor on it is lost), so pick it before making tensors.
   */
  wasmThreads?: number;
}

let webgpuLoaded = false;
let wasmLoaded = false;
let wasmEntry = "";
/** Threads the initialised wasm backend runs with; 0 before it is initialised. */
let wasmThreadsNow = 0;
let nodeLoaded = false;
let lastDevice = "";

async function loadWasm(): Promise<void> {
  if (wasmLoaded) return;
  const wasm = await import("@tensorflow/tfjs-backend-wasm");
  // Point the loader at the package's own dist folder so the binaries come from disk, both in a
  // checkout and when this package is a dependency of another app.
  const entry = import.meta.resolve("@tensorflow/tfjs-backend-wasm");
  wasmEntry = entry;
  if (entry.startsWith("file:")) {
    const path = new URL(".", entry).pathname;
    const dir = path.endsWith("/") ? path : path + "/";
    // The threaded build's XNNPACK workers are told not to busy-wait (core/_xnnpack_spin.ts).
    const threaded = await patchedThreadedWasm(dir);
    wasm.setWasmPaths(
      threaded
        ? {
          "tfjs-backend-wasm.wasm": dir + "tfjs-backend-wasm.wasm",
          "tfjs-backend-wasm-simd.wasm": dir + "tfjs-backend-wasm-simd.wasm",
          [THREADED_SIMD_WASM]: threaded,
        }
        : dir,
    );
  }
  // The gate goes in front of tfjs' own kernels first, so that the replacements below, which
  // call some of them, reach them through it too.
  installXnnpackGate();
  installWasmSliceKernels();
  wasmLoaded = true;
}

/**
 * The wasm thread count a call asks for: the option, else `$TEXFORCE_WASM_THREADS`, else
 * `navigator.hardwareConcurrency` less the cores busy with other work (1-minute load average),
 * decided once: once the wasm backend runs, the default is the count it runs with; clamped to
 * 1..8, and 1 where threads cannot run.
 *
 * @example
 * ```ts
 * import { wasmThreadCount } from "@texforce/core";
 * console.log(wasmThreadCount({ wasmThreads: 2 })); // 2 (1 without SharedArrayBuffer)
 * ```
 */
export function wasmThreadCount(options: BackendOptions = {}): number {
  let asked = options.wasmThreads;
  if (asked === undefined) {
    let env: string | undefined;
    try {
      env = Deno.env.get("TEXFORCE_WASM_THREADS");
    } catch { /* no env permission */ }
    if (env !== undefined && env.trim() !== "") {
      asked = Number(env);
      if (!Number.isInteger(asked)) {
        throw new Error(`TEXFORCE_WASM_THREADS must be a whole number, got '${env}'`);
      }
    }
  }
  // The load-aware default is decided once per process: a later call (the trainer after an
  // evaluation, say) must not restart the pool, losing every tensor, because the load moved.
  if (asked === undefined && wasmThreadsNow > 0) return wasmThreadsNow;
  asked ??= idleCores();
  const n = Math.min(Math.max(Math.floor(asked), 1), WASM_MAX_THREADS);
  return n > 1 && wasmThreadsAvailable() && wasmEntry.startsWith("file:") ? n : 1;
}

/**
 * `navigator.hardwareConcurrency` less the cores the 1-minute load average says are busy (at
 * least 1). Threads on busy cores lose far more than they gain: the tiny TexForce epoch ran 4.7×
 * slower with 2 threads than with 1 on a 2-core machine at load 7 (measured while XNNPACK's
 * workers still spin-waited between operations, which core/_xnnpack_spin.ts now stops; a thread
 * that must wait for a time slice still holds every split product up). Results are bitwise the
 * same for every thread count, so this choice never changes a run's numbers.
 */
function idleCores(): number {
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  let load = 0;
  try {
    load = Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]) || 0;
  } catch { /* not Linux, or no read permission: assume idle */ }
  return Math.max(1, cores - Math.floor(load));
}

// Where the threaded binary keeps XNNPACK's pool size (core/_xnnpack_gate.ts), read once from
// the package's own binary; null (no gate) where it cannot be read or has another shape.
let poolSite: Promise<PoolCountSite | null> | undefined;
function threadedPoolSite(): Promise<PoolCountSite | null> {
  poolSite ??= (async () => {
    if (!wasmEntry.startsWith("file:")) return null;
    try {
      return poolCountSite(await Deno.readFile(new URL(THREADED_SIMD_WASM, wasmEntry)));
    } catch {
      return null;
    }
  })();
  return poolSite;
}

async function activateWasm(threads: number): Promise<boolean> {
  const wasm = await import("@tensorflow/tfjs-backend-wasm");
  if (wasmThreadsNow !== 0 && wasmThreadsNow !== threads) {
    // A fresh module for another pool size: tfjs builds a backend once per registration.
    const factory = tf.findBackendFactory("wasm");
    tf.removeBackend("wasm");
    if (factory) tf.registerBackend("wasm", factory, 2);
    wasmThreadsNow = 0;
    attachXnnpackGate(null, null, 1);
  }
  wasm.setThreadsCount(threads);
  if (threads === 1) {
    tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", false);
    const ok = await activate("wasm");
    if (ok) wasmThreadsNow = 1;
    return ok;
  }
  if (wasmThreadsNow === threads) return await activate("wasm");
  const ok = await withWasmThreads(threads, threadedGluePath(wasmEntry), () => activate("wasm"));
  if (ok) {
    wasmThreadsNow = wasm.getThreadsCount();
    attachXnnpackGate(tf.backend(), await threadedPoolSite(), wasmThreadsNow);
  }
  return ok;
}

interface AdapterSummary {
  name: string;
  /** A software rasteriser such as Mesa's lavapipe (llvmpipe). */
  software: boolean;
}

/**
 * Prepare the process environment before the first WebGPU adapter request (idempotent):
 * - wgpu's Vulkan loader complains on every probe when XDG_RUNTIME_DIR is unset (containers,
 *   CI): give it a private one.
 * - On Linux wgpu also probes its GL backend, which loads libEGL (libglvnd); at process exit
 *   libEGL's destructor races a thread freeing its thread-specific data, and a process that did
 *   its work aborts ("double free or corruption", exit code 134; 3 of 40 runs of a test file).
 *   The adapter used is Vulkan's either way (lavapipe, or the NVIDIA driver), so wgpu is kept to
 *   Vulkan unless `DENO_WEBGPU_BACKEND` is already set.
 *
 * @example
 * ```ts
 * import { prepareWebgpuEnvironment } from "@texforce/core";
 * prepareWebgpuEnvironment();
 * const adapter = await navigator.gpu?.requestAdapter();
 * ```
 */
export function prepareWebgpuEnvironment(): void {
  try {
    if (Deno.build.os === "linux" && !Deno.env.get("DENO_WEBGPU_BACKEND")) {
      Deno.env.set("DENO_WEBGPU_BACKEND", "vulkan");
    }
    if (Deno.env.get("XDG_RUNTIME_DIR")) return;
    const dir = Deno.makeTempDirSync({ prefix: "texforce-xdg-" });
    Deno.chmodSync(dir, 0o700);
    Deno.env.set("XDG_RUNTIME_DIR", dir);
  } catch { /* no env or fs permission: wgpu's defaults apply */ }
}

async function webgpuAdapter(): Promise<AdapterSummary | null> {
  prepareWebgpuEnvironment();
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) return null;
  try {
    const adapter = await gpu.requestAdapter();
    if (!adapter) return null;
    const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
    const name = info?.description || info?.device || info?.vendor || "WebGPU adapter";
    const software = Boolean(info?.isFallbackAdapter) ||
      /llvmpipe|lavapipe|swiftshader/i.test(name);
    return { name, software };
  } catch {
    return null;
  }
}

async function loadWebgpu(): Promise<void> {
  if (webgpuLoaded) return;
  await import("@tensorflow/tfjs-backend-webgpu");
  webgpuLoaded = true;
}

async function loadNode(): Promise<void> {
  if (nodeLoaded) return;
  const errors: string[] = [];
  // Each package registers ~150 kernels before it fails on a missing native binding; the second
  // try then warns once per kernel ("already registered"). Those warnings say nothing useful.
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (!/^The kernel '.*' for backend 'tensorflow' is already registered/.test(String(args[0]))) {
      warn(...args);
    }
  };
  try {
    for (
      const spec of ["npm:@tensorflow/tfjs-node-gpu@4.22.0", "npm:@tensorflow/tfjs-node@4.22.0"]
    ) {
      try {
        await import(spec);
        nodeLoaded = true;
        return;
      } catch (e) {
        errors.push(`${spec}: ${(e as Error).message.split("\n")[0].trim()}`);
      }
    }
  } finally {
    console.warn = warn;
  }
  throw new Error(
    "backend 'tensorflow' needs @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node with their " +
      "native binding, which their install script downloads (Deno runs it only with " +
      '"nodeModulesDir": "auto" in deno.json and `deno install --allow-scripts`); neither loaded ' +
      `(${errors.join("; ")}). Use 'webgpu' for a GPU, or 'wasm'/'cpu'.`,
  );
}

async function activate(name: string): Promise<boolean> {
  try {
    const ok = await tf.setBackend(name);
    if (ok) await tf.ready();
    return ok && tf.getBackend() === name;
  } catch {
    return false;
  }
}

/**
 * Select and initialise a tfjs backend; returns what is in use.
 *
 * @example
 * ```ts
 * import { useBackend } from "@texforce/core";
 * const info = await useBackend("wasm");
 * console.log(info.name, info.device);
 * ```
 */
export async function useBackend(
  name: BackendName = "auto",
  options: BackendOptions = {},
): Promise<BackendInfo> {
  if (!BACKEND_NAMES.includes(name)) {
    throw new Error(`unknown backend '${name}': expected one of ${BACKEND_NAMES.join(", ")}`);
  }
  // Backward passes free each gradient once used, not all at the end (core/_tape_memory.ts).
  installTapeMemoryRelease();
  if (name === "auto") {
    // A software WebGPU adapter (lavapipe) is slower than wasm, so auto only takes a real GPU.
    const adapter = await webgpuAdapter();
    if (adapter && !adapter.software) {
      try {
        return await useBackend("webgpu", options);
      } catch { /* fall through to wasm */ }
    }
    try {
      return await useBackend("wasm", options);
    } catch {
      return await useBackend("cpu", options);
    }
  }
  if (name === "webgpu") {
    const adapter = await webgpuAdapter();
    if (!adapter) {
      throw new Error(
        "backend 'webgpu': no WebGPU adapter found. Run Deno with --unstable-webgpu and a Vulkan " +
          "driver (on a CPU-only Linux machine: apt-get install mesa-vulkan-drivers).",
      );
    }
    await loadWebgpu();
    if (!(await activate("webgpu"))) {
      throw new Error(`backend 'webgpu' failed to initialise on adapter '${adapter.name}'`);
    }
    lastDevice = adapter.name + (adapter.software ? " (software)" : "");
  } else if (name === "wasm") {
    await loadWasm();
    if (!(await activateWasm(wasmThreadCount(options)))) {
      throw new Error("backend 'wasm' failed to initialise");
    }
    // One elements kind of shape array for V8 (core/_uniform_shapes.ts: a deoptimisation loop otherwise).
    installUniformShapes(tf.backend());
    // Maps, not WeakMaps, for tfjs' tensor tables (core/_tensor_tables.ts).
    installTensorTables(tf.engine(), tf.backend());
    lastDevice = wasmThreadsNow > 1
      ? `WebAssembly (SIMD, ${wasmThreadsNow} threads)`
      : "WebAssembly (SIMD, single thread)";
  } else if (name === "tensorflow") {
    await loadNode();
    if (!(await activate("tensorflow"))) {
      throw new Error("backend 'tensorflow' was loaded but failed to initialise");
    }
    lastDevice = "libtensorflow";
  } else {
    await import("@tensorflow/tfjs-backend-cpu");
    if (!(await activate("cpu"))) throw new Error("backend 'cpu' failed to initialise");
    // The cpu backend prints a "use tfjs-node" banner on first use under Node compatibility.
    (tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
    lastDevice = "JavaScript (cpu)";
  }
  return currentBackend();
}

/**
 * The backend now in use and its device.
 *
 * @example
 * ```ts
 * import { currentBackend } from "@texforce/core";
 * console.log(currentBackend().name);
 * ```
 */
export function currentBackend(): BackendInfo {
  const name = tf.getBackend();
  return { name, device: lastDevice || name };
}

/**
 * Threads the wasm backend runs with (1 for the single-threaded build), 0 before it starts.
 * texforce's own wasm kernels share their work over as many.
 *
 * @example
 * ```ts
 * import { wasmThreadsInUse } from "@texforce/core";
 * console.log(wasmThreadsInUse());
 * ```
 */
export function wasmThreadsInUse(): number {
  return wasmThreadsNow;
}

let callingThreadHolds = 0;

/**
 * Keep the wasm backend's work on the calling thread until the returned release is called:
 * XNNPACK's pool and texforce's own product pool both, whatever an operation's size. For work
 * that runs beside other threads' work (a UNet's share of a batch next to its sample workers'
 * shares, adapters/unet/_sample_workers.ts), where a pool's helpers would only take cores the
 * others use. Holds nest; a release counts once. Results do not change (every kernel computes
 * the same bits on any thread count).
 *
 * @example
 * ```ts
 * import { holdCallingThread, wasmThreadsToShare } from "@texforce/core";
 * const release = holdCallingThread();
 * console.log(wasmThreadsToShare()); // 1
 * release();
 * ```
 */
export function holdCallingThread(): () => void {
  if (callingThreadHolds++ === 0) pinXnnpackPool(true);
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    if (--callingThreadHolds === 0) pinXnnpackPool(false);
  };
}

/**
 * Threads a texforce wasm kernel may share its work over now: {@linkcode wasmThreadsInUse}, or 1
 * while {@linkcode holdCallingThread} holds the work on the calling thread.
 *
 * @example
 * ```ts
 * import { wasmThreadsToShare } from "@texforce/core";
 * console.log(wasmThreadsToShare());
 * ```
 */
export function wasmThreadsToShare(): number {
  return callingThreadHolds > 0 ? 1 : wasmThreadsNow;
}

// Model code asks whether wasm's BatchMatMul already runs on XNNPACK (it then skips its own
// per-matrix rewrite); the kernel module itself stays private to core.
export { wasmBatchMatMulIsFast } from "./_wasm_kernels.ts";
