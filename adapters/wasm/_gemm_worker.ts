// One worker thread of the packed matrix product (_gemm_threads.ts): it instantiates
// gemm_simd_wat.ts on tfjs' shared heap, then waits for jobs and claims panels of each until
// none are left, forever (the pool unrefs it, so it never keeps the process alive).
import { workerData } from "node:worker_threads";
import { GEMM_SIMD } from "./_gemm_simd_wasm.ts";
import { heapModule } from "./_wasm_heap.ts";
import { JOB, SLOT, slotAt, takePanels } from "./_gemm_slots.ts";

const { memory, control, slot } = workerData as {
  memory: WebAssembly.Memory;
  control: SharedArrayBuffer;
  slot: number;
};
const { gemm } = new WebAssembly.Instance(heapModule(GEMM_SIMD, memory), { env: { memory } })
  .exports as { gemm: (...args: number[]) => void };
const c = new Int32Array(control);
const at = slotAt(slot);
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
  // A trap is reported in the slot (its panels still count as completed, so the job ends).
  try {
    takePanels(c, gemm, seq, at + SLOT.failed);
  } catch { /* reported */ }
}
