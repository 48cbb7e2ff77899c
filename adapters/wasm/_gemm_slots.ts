// The control block shared by the packed product's pool and its workers: a job (its
// parameters, a sequence number that starts it, the counter threads take panels from) and one
// slot per worker (ready, stop, the last job it finished).

/** Field offsets of the job, at the start of the block. */
export const JOB = {
  seq: 0,
  m: 1,
  n: 2,
  k: 3,
  a: 4,
  b: 5,
  bias: 6,
  c: 7,
  /** Panels of the product. */
  panels: 8,
  /** The next panel to take (threads add PANELS_PER_TAKE to it). */
  next: 16,
} as const;

/** Field offsets within a worker's slot. */
export const SLOT = { ready: 0, stop: 1, done: 2, failed: 3 } as const;

/** Int32s per slot and for the job's two lines (64 bytes: threads do not share a line). */
export const SLOT_INTS = 16;

/** Int32 offset of worker i's slot. */
export const slotAt = (i: number): number => 2 * SLOT_INTS + i * SLOT_INTS;

/** Panels a thread takes at a time: small enough to balance, big enough to be cheap. */
export const PANELS_PER_TAKE = 4;

/**
 * Take panels from the job's counter and run them until none are left; what a thread computes
 * depends on timing, each panel's result does not.
 */
export function takePanels(
  control: Int32Array,
  gemm: (...args: number[]) => void,
): void {
  const [m, n, k, a, b, bias, c, panels] = [
    control[JOB.m],
    control[JOB.n],
    control[JOB.k],
    control[JOB.a],
    control[JOB.b],
    control[JOB.bias],
    control[JOB.c],
    control[JOB.panels],
  ];
  for (;;) {
    const p0 = Atomics.add(control, JOB.next, PANELS_PER_TAKE);
    if (p0 >= panels) return;
    gemm(m, n, k, a, b, bias, c, p0, Math.min(p0 + PANELS_PER_TAKE, panels));
  }
}
