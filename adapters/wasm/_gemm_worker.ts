// One worker thread of the packed matrix product (_gemm_threads.ts): it instantiates
// gemm_simd_wat.ts on tfjs' shared heap, then waits for jobs and claims panels of each until
// none are left, forever (the pool unrefs it, so it never keeps the process alive). A job is a
// product's column panels, or an attention phase's (sample, head) pairs (_attention_heads.ts),
// which this thread runs with its own scratch (thread `slot + 1`; the JS thread is 0).
import { workerData } from "node:worker_threads";
import { GEMM_SIMD } from "./_gemm_simd_wasm.ts";
import { heapModule } from "./_wasm_heap.ts";
import { gemmPanels, JOB, JOB_KIND, PHASE_AT, SLOT, slotAt, takePanels } from "./_gemm_slots.ts";
import { PHASE_FIELDS, runHeadPairs, serialProduct } from "./_attention_heads.ts";
import type { GemmSimd } from "./gemm_simd_wat.ts";

const { memory, control, slot } = workerData as {
  memory: WebAssembly.Memory;
  control: SharedArrayBuffer;
  slot: number;
};
const g = new WebAssembly.Instance(heapModule(GEMM_SIMD, memory), { env: { memory } })
  .exports as unknown as GemmSimd;
const c = new Int32Array(control);
const at = slotAt(slot);
const phase = c.subarray(PHASE_AT, PHASE_AT + PHASE_FIELDS);
const product = serialProduct(g);
const panels = gemmPanels(c, g.gemm);
// No job is posted before every worker is ready, so the sequence number read first is the
// last one before this worker's first job.
let seen = Atomics.load(c, JOB.seq);
Atomics.store(c, at + SLOT.ready, 1);
for (;;) {
  Atomics.wait(c, JOB.seq, seen);
  const seq = Atomics.load(c, JOB.seq);
  if (seq === seen) continue;
  seen = seq;
  if (c[at + SLOT.stop]) break;
  const run = c[JOB.kind] === JOB_KIND.gemm
    ? panels
    : (p0: number, p1: number) => runHeadPairs(phase, p0, p1, slot + 1, g, product);
  // A trap is reported in the slot (its panels still count as completed, so the job ends).
  try {
    takePanels(c, run, seq, at + SLOT.failed);
  } catch { /* reported */ }
}
