// XNNPACK's thread pool in tfjs-backend-wasm 4.22's threaded build, used only where it pays.
//
// Every tfjs wasm kernel that runs on XNNPACK hands its work to the pool, whatever its size, and
// the pool wakes its sleeping workers (core/_xnnpack_spin.ts keeps them from spinning) for each
// one: at small batches that is every operation, tens of microseconds of wake-up apiece for work
// of about that length, while a woken worker's vCPU slows the calling thread's own kernels on
// this project's VM. Paired in one process, the tiny UNet at batch 2 on two threads ran its
// forward in 0.77× and its forward + backward in 0.87× the time with XNNPACK on the calling
// thread alone (30 pairs), while at batch 64 the pool is worth 1.2–1.4×. So each tfjs wasm kernel
// is wrapped: below MIN_THREADED_MACS multiply-adds (convolutions, products) or
// MIN_THREADED_VALUES values (everything else), the pool's thread count is set to 1 for the call,
// which pthreadpool reads at every dispatch (`threads_count <= 1`: run on the calling thread),
// and restored after. texforce's own product pool (adapters/wasm/_gemm_threads.ts) is separate
// and keeps its own thresholds.
//
// The count lives in the pool's struct, which tfjs allocates at start-up and keeps behind a
// global of its C side. Neither is exported, but `get_threads_count` is, and its body reads
// both: `i32.const <global's address>; i32.load; …; call <pthreadpool_get_threads_count>`, whose
// body is `… i32.load offset=<count's offset>`. Both bodies are matched exactly in the package's
// binary (the spin patch changes neither), and at start-up the count found there must equal
// `get_threads_count()` and writing 1 to it must make `get_threads_count()` say 1; otherwise the
// gate stays off and every operation uses the pool as before. Results do not change: XNNPACK
// computes every output the same way on any number of threads (tests/core/wasm_threads_test.ts
// compares 1, 2 and 3 threads bit for bit).
import * as tf from "@tensorflow/tfjs";

/**
 * From this many multiply-adds a convolution or product runs on XNNPACK's whole pool (the tiny
 * UNet's convolutions at batch 2 have 4.7 M and 14 M; from batch 16, most are above).
 *
 * @example
 * ```ts
 * import { MIN_THREADED_MACS } from "./_xnnpack_gate.ts";
 * console.log(2 * 16 * 16 * 9 * 32 * 32 < MIN_THREADED_MACS); // true: on the calling thread
 * ```
 */
export const MIN_THREADED_MACS = 1 << 24;

/**
 * From this many values (the largest input) any other XNNPACK operation runs on the pool.
 *
 * @example
 * ```ts
 * import { MIN_THREADED_VALUES } from "./_xnnpack_gate.ts";
 * console.log(64 * 2 * 256 * 256 >= MIN_THREADED_VALUES); // true: batch 64's softmax is shared
 * ```
 */
export const MIN_THREADED_VALUES = 1 << 20;

/**
 * Where the pool's thread count is: the global holding the pool's address, and the field.
 *
 * @example
 * ```ts
 * import type { PoolCountSite } from "./_xnnpack_gate.ts";
 * const site: PoolCountSite = { pointerAddress: 23564, countOffset: 132 };
 * ```
 */
export interface PoolCountSite {
  /** Linear-memory address of the C global that points at the pthreadpool struct. */
  pointerAddress: number;
  /** Byte offset of `threads_count` in that struct. */
  countOffset: number;
}

// ---- reading the binary ----

class Reader {
  constructor(readonly b: Uint8Array, public p = 0) {}
  byte(): number {
    if (this.p >= this.b.length) throw new RangeError("past the end");
    return this.b[this.p++];
  }
  u32(): number {
    let result = 0, shift = 0, byte: number;
    do {
      byte = this.byte();
      result += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80);
    return result;
  }
  s32(): number {
    let result = 0, shift = 0, byte: number;
    do {
      byte = this.byte();
      result |= (byte & 0x7f) << shift;
      shift += 7;
    } while (byte & 0x80 && shift < 35);
    return shift < 32 && byte & 0x40 ? result | (-1 << shift) : result;
  }
  name(): string {
    const n = this.u32();
    const s = new TextDecoder().decode(this.b.subarray(this.p, this.p + n));
    this.p += n;
    return s;
  }
  limits(): void {
    const flags = this.u32();
    this.u32();
    if (flags & 1) this.u32();
  }
}

// The code bytes of function `index` (after its locals), or null.
function functionCode(bodies: Uint8Array[], imported: number, index: number): Reader | null {
  const body = bodies[index - imported];
  if (!body) return null;
  const r = new Reader(body);
  const groups = r.u32();
  for (let i = 0; i < groups; i++) {
    r.u32();
    r.byte();
  }
  return r;
}

// Match `bytes` at r's position: numbers are literal bytes, "u"/"s" read a LEB128 (unsigned or
// signed) and return it in order.
function match(r: Reader, pattern: (number | "u" | "s")[]): number[] | null {
  const got: number[] = [];
  for (const step of pattern) {
    if (step === "u") got.push(r.u32());
    else if (step === "s") got.push(r.s32());
    else if (r.byte() !== step) return null;
  }
  return r.p === r.b.length ? got : null;
}

/**
 * Find the pool's thread count in tfjs-backend-wasm's threaded binary through its exported
 * `get_threads_count` (see the file comment), or null when the code is not the expected shape.
 *
 * @example
 * ```ts
 * import { poolCountSite } from "./_xnnpack_gate.ts";
 * const wasm = await Deno.readFile("tfjs-backend-wasm-threaded-simd.wasm");
 * console.log(poolCountSite(wasm)); // { pointerAddress: 23564, countOffset: 132 } for 4.22
 * ```
 */
export function poolCountSite(binary: Uint8Array): PoolCountSite | null {
  try {
    const r = new Reader(binary, 8);
    let imported = 0;
    let exported = -1;
    const bodies: Uint8Array[] = [];
    while (r.p < binary.length) {
      const id = r.byte();
      const size = r.u32();
      const end = r.p + size;
      if (id === 2) {
        for (let n = r.u32(); n > 0; n--) {
          r.name();
          r.name();
          const kind = r.byte();
          if (kind === 0) {
            r.u32();
            imported++;
          } else if (kind === 1) {
            r.byte();
            r.limits();
          } else if (kind === 2) r.limits();
          else if (kind === 3) r.p += 2;
          else if (kind === 4) {
            r.byte();
            r.u32();
          } else return null;
        }
      } else if (id === 7) {
        for (let n = r.u32(); n > 0; n--) {
          const name = r.name();
          const kind = r.byte();
          const index = r.u32();
          if (kind === 0 && name === "get_threads_count") exported = index;
        }
      } else if (id === 10) {
        for (let n = r.u32(); n > 0; n--) {
          const len = r.u32();
          bodies.push(binary.subarray(r.p, r.p + len));
          r.p += len;
        }
      }
      r.p = end;
    }
    if (exported < 0) return null;
    // i32.const A; i32.load align offset; local.tee l; i32.eqz; if; i32.const -1; return; end;
    // local.get l; call F; end
    const outer = functionCode(bodies, imported, exported);
    const a = outer &&
      match(outer, [
        0x41,
        "s",
        0x28,
        "u",
        "u",
        0x22,
        "u",
        0x45,
        0x04,
        0x40,
        0x41,
        0x7f,
        0x0f,
        0x0b,
        0x20,
        "u",
        0x10,
        "u",
        0x0b,
      ]);
    if (!a || a[3] !== a[4]) return null;
    // local.get 0; i32.eqz; if; i32.const 1; return; end; local.get 0; i32.load align offset; end
    const inner = functionCode(bodies, imported, a[5]);
    const c = inner &&
      match(inner, [
        0x20,
        0x00,
        0x45,
        0x04,
        0x40,
        0x41,
        0x01,
        0x0f,
        0x0b,
        0x20,
        0x00,
        0x28,
        "u",
        "u",
        0x0b,
      ]);
    if (!c) return null;
    return { pointerAddress: a[0] + a[2], countOffset: c[1] };
  } catch {
    return null;
  }
}

// ---- the gate ----

interface GateBackend {
  wasm?: {
    wasmMemory?: WebAssembly.Memory;
    asm?: { memory?: WebAssembly.Memory };
    _get_threads_count?: () => number;
  };
}

/** The live gate: the count's index in a view of the heap, and the pool's own count. */
let live: { count: Int32Array; at: number; threads: number } | null = null;
let enabled = Deno.env.get("TEXFORCE_XNNPACK_GATE") !== "off";
let sequential = 0;
let threaded = 0;
let pinned = false;

/**
 * Turn the gate on or off for this process (on by default; `TEXFORCE_XNNPACK_GATE=off` in the
 * environment starts it off). Off, every XNNPACK operation uses the whole pool, as tfjs does.
 *
 * @example
 * ```ts
 * import { setXnnpackGate } from "./_xnnpack_gate.ts";
 * setXnnpackGate(false);
 * ```
 */
export function setXnnpackGate(on: boolean): void {
  enabled = on;
}

/**
 * Pin XNNPACK's pool to the calling thread (`on`), or give it back its own thread count: while
 * pinned every operation runs on the calling thread, whatever its size. For work that runs
 * beside other threads' own (core/backend.ts `holdCallingThread`). Without an attached gate
 * this does nothing.
 *
 * @example
 * ```ts
 * import { pinXnnpackPool } from "./_xnnpack_gate.ts";
 * pinXnnpackPool(true);
 * pinXnnpackPool(false);
 * ```
 */
export function pinXnnpackPool(on: boolean): void {
  pinned = on;
  const g = live;
  if (g) g.count[g.at] = on ? 1 : g.threads;
}

/**
 * The calls the gate has seen since start-up with a pool attached: run on the calling thread
 * alone, and on the whole pool; `attached` says whether the site was found and checked.
 *
 * @example
 * ```ts
 * import { xnnpackGateStats } from "./_xnnpack_gate.ts";
 * console.log(xnnpackGateStats()); // { attached: true, sequential: 412, threaded: 36 }
 * ```
 */
export function xnnpackGateStats(): { attached: boolean; sequential: number; threaded: number } {
  return { attached: live !== null, sequential, threaded };
}

/**
 * Attach the gate to a freshly started threaded backend (`threads` > 1), checking the site as
 * the file comment says; detach it otherwise. Returns whether it is attached.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { attachXnnpackGate, poolCountSite } from "./_xnnpack_gate.ts";
 * const site = poolCountSite(await Deno.readFile("tfjs-backend-wasm-threaded-simd.wasm"));
 * attachXnnpackGate(tf.backend(), site, 2);
 * ```
 */
export function attachXnnpackGate(
  backend: unknown,
  site: PoolCountSite | null,
  threads: number,
): boolean {
  live = null;
  if (!site || threads <= 1) return false;
  const wasm = (backend as GateBackend).wasm;
  const buffer = (wasm?.wasmMemory ?? wasm?.asm?.memory)?.buffer;
  const read = wasm?._get_threads_count;
  if (!(buffer instanceof SharedArrayBuffer) || typeof read !== "function") return false;
  const heap = new Int32Array(buffer);
  if (site.pointerAddress % 4 || site.countOffset % 4) return false;
  const pool = heap[site.pointerAddress / 4];
  if (pool <= 0 || pool % 4) return false;
  const at = (pool + site.countOffset) / 4;
  if (at >= heap.length || heap[at] !== threads || read() !== threads) return false;
  heap[at] = 1;
  const seen = read();
  heap[at] = threads;
  if (seen !== 1) return false;
  live = { count: heap, at, threads };
  if (pinned) heap[at] = 1;
  return true;
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

const CONVOLUTIONS = new Set([
  "Conv2D",
  "FusedConv2D",
  "DepthwiseConv2dNative",
  "FusedDepthwiseConv2D",
  "Conv2DBackpropInput",
]);
const PRODUCTS = new Set(["BatchMatMul", "_FusedMatMul"]);

// Whether a call is worth the whole pool.
function worthThreads(name: string, args: Parameters<tf.KernelFunc>[0]): boolean {
  const inputs = args.inputs as Record<string, tf.TensorInfo | undefined>;
  if (CONVOLUTIONS.has(name)) {
    const x = inputs.x ?? inputs.dy;
    const filter = inputs.filter;
    if (!x || !filter || x.shape.length !== 4) return true;
    const s = args.attrs?.strides as number | number[] | undefined;
    const stride = Array.isArray(s) ? s[0] * s[1] : (s ?? 1) ** 2;
    const macs = size(x.shape) / x.shape[3] * size(filter.shape) /
      (name === "Conv2DBackpropInput" ? 1 : stride);
    return macs >= MIN_THREADED_MACS;
  }
  if (PRODUCTS.has(name)) {
    const { a, b } = inputs;
    if (!a || !b || b.shape.length < 2) return true;
    const r = b.shape.length;
    const n = args.attrs?.transposeB ? b.shape[r - 2] : b.shape[r - 1];
    return size(a.shape) * n >= MIN_THREADED_MACS;
  }
  let most = 0;
  for (const t of Object.values(inputs)) if (t) most = Math.max(most, size(t.shape));
  return most >= MIN_THREADED_VALUES;
}

function gated(name: string, stock: tf.KernelFunc): tf.KernelFunc {
  return ((args: Parameters<tf.KernelFunc>[0]) => {
    const g = live;
    // Off, or inside a call already on one thread (a kernel calling kernels): as it is.
    if (g === null || !enabled || g.count[g.at] <= 1) return stock(args);
    if (worthThreads(name, args)) {
      threaded++;
      return stock(args);
    }
    sequential++;
    g.count[g.at] = 1;
    try {
      return stock(args);
    } finally {
      g.count[g.at] = g.threads;
    }
  }) as tf.KernelFunc;
}

let wrapped = false;

/**
 * Put the gate in front of every kernel registered for wasm so far (once per process; call
 * it after tfjs-backend-wasm is imported and before texforce's own kernels are registered, which
 * call tfjs' kernels through the registry and so through the gate).
 *
 * @example
 * ```ts
 * import "@tensorflow/tfjs-backend-wasm";
 * import { installXnnpackGate } from "./_xnnpack_gate.ts";
 * installXnnpackGate();
 * ```
 */
export function installXnnpackGate(): void {
  if (wrapped) return;
  wrapped = true;
  for (const k of tf.getKernelsForBackend("wasm")) {
    if (k.kernelName.startsWith("Texforce")) continue;
    tf.unregisterKernel(k.kernelName, "wasm");
    tf.registerKernel({
      kernelName: k.kernelName,
      backendName: "wasm",
      setupFunc: k.setupFunc,
      disposeFunc: k.disposeFunc,
      kernelFunc: gated(k.kernelName, k.kernelFunc),
    });
  }
}
