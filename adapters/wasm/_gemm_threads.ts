// Where packed matrix products run: split by column panels between the JS thread and
// texforce's own workers when tfjs runs its threaded build (the heap is a shared memory), else
// on the JS thread alone.
//
// XNNPACK's pthread pool is internal to tfjs, so the pool here is separate: as many threads
// in all as tfjs uses (`wasmThreadsToShare`: 1 while the work is held on the calling thread).
// Threads take a few panels at a time from a shared counter until none are left, so a thread slowed down (a busy core, a virtual CPU sharing its
// core) takes fewer instead of holding the others up. Each output panel is computed by one
// thread with the same code whichever it is, so results are bitwise the same for any thread
// count. Workers start on the first product and take work once all report ready (until then
// the JS thread does it all: they must not be waited for while starting). The same pool runs
// the attention core's phases (_attention_heads.ts): there the threads claim (sample, head)
// pairs one at a time, each pair's products on the thread that took it: one claim per head
// instead of one per product, whose 10–32 panels (77 × 64 · 64 × 80 for CLIP-L, 256 × 16 ·
// 16 × 256 for the tiny UNet) take a few µs each.
import { Worker } from "node:worker_threads";
import { wasmThreadsToShare } from "../../core/backend.ts";
import { heapInstance, heapMemory, type WasmHeapBackend } from "./_wasm_heap.ts";
import { GEMM_SIMD } from "./_gemm_simd_wasm.ts";
import { GEMM_PANEL_COLUMNS, type GemmJob, type GemmSimd, paddedColumns } from "./gemm_simd_wat.ts";

export { type GemmJob, type GemmSimd, paddedColumns };
import {
  gemmPanels,
  giveUpPanels,
  JOB,
  JOB_KIND,
  MAX_SHARED_PANELS,
  PANELS_PER_TAKE,
  PHASE_AT,
  SLOT,
  slotAt,
  takePanels,
  ticketOf,
} from "./_gemm_slots.ts";
import {
  headMacs,
  headScratchValues,
  PHASE,
  PHASE_FIELDS,
  runHeadPairs,
  serialProduct,
} from "./_attention_heads.ts";

/**
 * gemm_simd_wat.ts instantiated on the backend's heap (once per heap); `who` names the caller
 * in the error where the heap is not reachable.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { gemmSimdFor } from "./_gemm_threads.ts";
 * import type { WasmHeapBackend } from "./_wasm_heap.ts";
 * const g = gemmSimdFor(tf.backend() as unknown as WasmHeapBackend, "example");
 * ```
 */
export function gemmSimdFor(backend: WasmHeapBackend, who: string): GemmSimd {
  const g = heapInstance<GemmSimd>(backend, GEMM_SIMD);
  if (!g) throw new Error(`${who}: the wasm backend's memory is not reachable`);
  return g;
}

// Below this many multiply-adds (256 K) a product or an attention phase runs on one thread.
// Waking a worker costs 20–45 µs here, about what 1 M multiply-adds take, but the calling
// thread never waits for the wake-up (it starts on the panels at once, and a worker that wakes
// late finds none left), and at small batches the jobs come back to back, so a worker woken
// for one is often still awake for the next. The tiny UNet's batch-2 pass on two threads,
// 256 K against 1.5 M paired in one process (a setting paired with itself: 0.96–1.00): forward
// + backward 0.92, 0.94 and 1.01 of the time, forward 0.93, 0.97 and 0.99; CLIP-L's jobs are
// all above 1.5 M (sharing its LoRA factors, 1.9 M, gained 101–103 → 90–91 ms of its forward +
// backward on two threads when the threshold went from 2 M to 1.5 M).
const MIN_SPLIT_MACS = 1 << 18;

// How long the calling thread polls for the workers' last panels before it sleeps.
const SPIN_MS = 0.05;

const WORKER_URL = new URL("./_gemm_worker.ts", import.meta.url);

class GemmPool {
  readonly control: Int32Array;
  readonly workers: Worker[] = [];
  #seq = 0;

  constructor(readonly memory: WebAssembly.Memory, size: number) {
    this.control = new Int32Array(new SharedArrayBuffer(4 * slotAt(size)));
    for (let slot = 0; slot < size; slot++) {
      const w = new Worker(WORKER_URL, {
        workerData: { memory, control: this.control.buffer, slot },
      });
      w.unref();
      this.workers.push(w);
    }
  }

  /** Whether every worker has reported ready (they are waited for at the end of each job). */
  ready(): boolean {
    return this.workers.every((_, i) => Atomics.load(this.control, slotAt(i) + SLOT.ready) === 1);
  }

  /** Run the product's panels on this thread and every worker, each claiming them as it goes. */
  run(gemm: GemmSimd, job: GemmJob): void {
    const c = this.control;
    [c[JOB.m], c[JOB.n], c[JOB.k], c[JOB.a], c[JOB.lda], c[JOB.b], c[JOB.bias], c[JOB.c]] = [
      job.m,
      job.n,
      job.k,
      job.a,
      job.lda ?? job.k,
      job.b,
      job.bias,
      job.c,
    ];
    c[JOB.ldc] = job.ldc ?? job.n;
    shared.products++;
    this.#share(
      JOB_KIND.gemm,
      job.n / GEMM_PANEL_COLUMNS,
      PANELS_PER_TAKE,
      gemmPanels(c, gemm.gemm),
      (w) => `packed matMul: worker ${w} failed on a [${job.m}, ${job.k}] product`,
    );
  }

  /** Run an attention phase's (sample, head) pairs, one claim each, on every thread. */
  runHeads(phase: Int32Array, pairs: number, local: (p0: number, p1: number) => void): void {
    shared.headPhases++;
    this.control.set(phase, PHASE_AT);
    this.#share(
      JOB_KIND.heads,
      pairs,
      1,
      local,
      (w) => `fused attention: worker ${w} failed on a pair of phase ${phase[PHASE.kind]}`,
    );
  }

  // Post the job (its parameters already in the block), take panels here too, wait for the
  // last one, then report a failure of this thread or of a worker.
  #share(
    kind: number,
    panels: number,
    take: number,
    local: (p0: number, p1: number) => void,
    failure: (worker: number) => string,
  ): void {
    const c = this.control;
    const seq = ++this.#seq;
    c[JOB.kind] = kind;
    c[JOB.take] = take;
    c[JOB.panels] = panels;
    Atomics.store(c, JOB.completed, 0);
    Atomics.store(c, JOB.ticket, ticketOf(seq));
    Atomics.store(c, JOB.seq, seq);
    Atomics.notify(c, JOB.seq);
    let error: unknown = null;
    try {
      takePanels(c, local, seq);
    } catch (e) {
      // The panels no thread has claimed are given up; claimed ones are written until done.
      error = e;
      giveUpPanels(c, seq);
    }
    // The job ends when every panel is completed: workers still asleep find none left. A
    // worker's last panel usually ends within microseconds, sooner than a sleeping thread wakes
    // here (20–45 µs), so the calling thread looks for a while before it sleeps.
    const until = performance.now() + SPIN_MS;
    while (Atomics.load(c, JOB.completed) < panels && performance.now() < until) { /* spin */ }
    for (let v = Atomics.load(c, JOB.completed); v < panels; v = Atomics.load(c, JOB.completed)) {
      Atomics.wait(c, JOB.completed, v);
    }
    if (error) throw error;
    const failed = this.workers.findIndex((_, i) => c[slotAt(i) + SLOT.failed] === seq);
    if (failed >= 0) throw new Error(failure(failed));
  }

  stop(): void {
    for (let slot = 0; slot < this.workers.length; slot++) {
      this.control[slotAt(slot) + SLOT.stop] = 1;
    }
    Atomics.add(this.control, JOB.seq, 1);
    Atomics.notify(this.control, JOB.seq);
    for (const w of this.workers) w.terminate();
  }
}

let pool: GemmPool | null = null;
const shared = { products: 0, headPhases: 0 };

/**
 * How many products and attention phases this process has shared with the pool's workers so
 * far (the tests check that a shape takes the shared path).
 *
 * @example
 * ```ts
 * import { sharedJobs } from "./_gemm_threads.ts";
 * console.log(sharedJobs().headPhases);
 * ```
 */
export function sharedJobs(): { products: number; headPhases: number } {
  return { ...shared };
}

function poolFor(memory: WebAssembly.Memory, size: number): GemmPool {
  if (pool && (pool.memory !== memory || pool.workers.length !== size)) {
    pool.stop();
    pool = null;
  }
  pool ??= new GemmPool(memory, size);
  return pool;
}

/**
 * Workers of the pool ready to take panels (0 before the first split product).
 *
 * @example
 * ```ts
 * import { gemmHelpersReady } from "./_gemm_threads.ts";
 * console.log(gemmHelpersReady());
 * ```
 */
export function gemmHelpersReady(): number {
  return pool?.ready() ? pool.workers.length : 0;
}

/**
 * Run the product's column panels, shared over the backend's threads where that pays.
 *
 * @example
 * ```ts
 * // inside the packed matMul kernel: runGemmPanels(backend, gemm, { m, n, k, a, b, bias, c });
 * ```
 */
export function runGemmPanels(backend: WasmHeapBackend, gemm: GemmSimd, job: GemmJob): void {
  const { m, n, k, a, b, bias, c } = job;
  const [lda, ldc] = [job.lda ?? k, job.ldc ?? n];
  const panels = n / GEMM_PANEL_COLUMNS;
  const threads = wasmThreadsToShare();
  const memory = heapMemory(backend);
  if (
    threads > 1 && panels > 1 && panels <= MAX_SHARED_PANELS && m * n * k >= MIN_SPLIT_MACS &&
    memory &&
    memory.buffer instanceof SharedArrayBuffer
  ) {
    const p = poolFor(memory, threads - 1);
    if (p.ready()) return p.run(gemm, job);
  }
  gemm.gemm(m, n, k, a, lda, b, bias, c, ldc, 0, panels);
}

/**
 * Run all `pairs` (sample, head) pairs of an attention phase (_attention_heads.ts): shared over
 * the backend's threads where that pays (two pairs at least, 256 K multiply-adds in all), each
 * pair's products then on the thread that took it; else one pair after the other here, each
 * product shared by its panels as {@linkcode runGemmUnpadded} shares it. The phase's scratch
 * (one stride per thread that may take pairs) is allocated here, for the call.
 *
 * @example
 * ```ts
 * // inside the attention kernel: runHeadPhase(backend, gemm, phase, b * heads);
 * ```
 */
export function runHeadPhase(
  backend: WasmHeapBackend,
  gemm: GemmSimd,
  phase: Int32Array,
  pairs: number,
): void {
  if (phase.length !== PHASE_FIELDS) throw new Error("runHeadPhase: not a phase");
  const memory = heapMemory(backend);
  if (!memory) throw new Error("runHeadPhase: the wasm backend's memory is not reachable");
  const threads = headThreads(phase, pairs);
  const stride = 4 * headScratchValues(phase);
  const scratch = backend.wasm._malloc(Math.max(threads * stride, 4));
  [phase[PHASE.scratch], phase[PHASE.stride]] = [scratch, stride];
  try {
    const local = (p0: number, p1: number) =>
      runHeadPairs(phase, p0, p1, 0, gemm, serialProduct(gemm));
    if (threads > 1 && memory.buffer instanceof SharedArrayBuffer) {
      const p = poolFor(memory, threads - 1);
      if (p.ready()) return p.runHeads(phase, pairs, local);
    }
    runHeadPairs(
      phase,
      0,
      pairs,
      0,
      gemm,
      (job, pad) => runGemmUnpadded(backend, gemm, job, pad),
    );
  } finally {
    backend.wasm._free(scratch);
  }
}

// The threads that may take pairs of the phase: all of the backend's, or 1 where it runs on
// the JS thread alone.
function headThreads(phase: Int32Array, pairs: number): number {
  const threads = wasmThreadsToShare();
  return threads > 1 && pairs > 1 && headMacs(phase, pairs) >= MIN_SPLIT_MACS ? threads : 1;
}

/**
 * A product of any width n (B packed with its last panel padded): straight into C when n comes
 * in whole panels, else into `pad` (m × {@linkcode paddedColumns}(n) values) and its rows copied
 * into C's, `ldc` (default n) apart.
 *
 * @example
 * ```ts
 * // runGemmUnpadded(backend, gemm, { m, n: 77, k, a, b, bias: 0, c }, pad);
 * ```
 */
export function runGemmUnpadded(
  backend: WasmHeapBackend,
  gemm: GemmSimd,
  job: GemmJob,
  pad: number,
): void {
  const np = paddedColumns(job.n);
  if (np === job.n) return runGemmPanels(backend, gemm, job);
  runGemmPanels(backend, gemm, { ...job, n: np, c: pad, ldc: np });
  gemm.unpad(pad, job.m, np, job.n, job.c, job.ldc ?? job.n);
}
