// One worker thread of the packed matrix product (_gemm_threads.ts): it instantiates
// gemm_simd_wat.ts on tfjs' shared heap, then waits on its slot of the control block and runs
// the panels it is given, forever (the pool unrefs it, so it never keeps the process alive).
import { workerData } from "node:worker_threads";
import { GEMM_SIMD } from "./_gemm_simd_wasm.ts";
import { SLOT, SLOT_INTS } from "./_gemm_slots.ts";

const { memory, control, slot } = workerData as {
  memory: WebAssembly.Memory;
  control: SharedArrayBuffer;
  slot: number;
};
const bytes = Uint8Array.from(atob(GEMM_SIMD.shared), (ch) => ch.charCodeAt(0));
const { gemm } = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } })
  .exports as { gemm: (...args: number[]) => void };
const c = new Int32Array(control);
const at = slot * SLOT_INTS;
Atomics.store(c, at + SLOT.ready, 1);
Atomics.notify(c, at + SLOT.ready);
let seen = 0;
for (;;) {
  Atomics.wait(c, at + SLOT.seq, seen);
  const seq = Atomics.load(c, at + SLOT.seq);
  if (seq === seen) continue;
  seen = seq;
  if (c[at + SLOT.stop]) break;
  gemm(
    c[at + SLOT.m],
    c[at + SLOT.n],
    c[at + SLOT.k],
    c[at + SLOT.a],
    c[at + SLOT.b],
    c[at + SLOT.bias],
    c[at + SLOT.c],
    c[at + SLOT.p0],
    c[at + SLOT.p1],
  );
  Atomics.store(c, at + SLOT.done, seq);
  Atomics.notify(c, at + SLOT.done);
}
