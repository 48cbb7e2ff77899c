// The control block shared by the packed product's pool and its workers: a job (its kind, its
// parameters, a sequence number that wakes the workers, the ticket threads claim panels with,
// the count of panels completed) and one slot per worker (ready, stop, the last job it failed).
// A job is a product's column panels (JOB_KIND.gemm), or one of the attention core's phases
// (adapters/wasm/_attention_heads.ts), whose "panels" are (sample, head) pairs and whose
// parameters sit at PHASE_AT.
//
// A job ends when all its panels are completed, not when every worker has looked at it: a
// worker that wakes late finds no panel left and goes back to sleep, so a product the calling
// thread finishes alone never waits for a wake-up (which took longer than a small product on
// this machine's VM). The ticket holds the job's sequence number (15 bits) above the next panel
// (16 bits); a thread claims panels by compare-and-swap on it, so a claim can only succeed for
// the job it read, and a job's parameters cannot change while one of its panels is claimed and
// not completed.

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
  /** Values between A's rows. */
  lda: 9,
  /** Values between C's rows. */
  ldc: 10,
  /** What the panels are: a value of {@linkcode JOB_KIND}. */
  kind: 11,
  /** The most panels a thread claims at a time. */
  take: 12,
  /** (seq & 0x7fff) << 16 | the next panel to claim. */
  ticket: 16,
  /** Panels completed (or given up after a failure). */
  completed: 17,
} as const;

/**
 * Kinds of job: a product's column panels, or an attention phase's (sample, head) pairs.
 *
 * @example
 * ```ts
 * import { JOB, JOB_KIND } from "./_gemm_slots.ts";
 * const control = new Int32Array(64);
 * control[JOB.kind] = JOB_KIND.gemm;
 * ```
 */
export const JOB_KIND = { gemm: 0, heads: 1 } as const;

/** Int32 offset of an attention phase's parameters (lines 3 and 4 of the block). */
export const PHASE_AT = 32;

/** The most panels a shared job can have (the ticket's 16 bits). */
export const MAX_SHARED_PANELS = 0xffff;

/** Field offsets within a worker's slot. */
export const SLOT = { ready: 0, stop: 1, failed: 2 } as const;

/** Int32s per slot and for the job's two lines (64 bytes: threads do not share a line). */
export const SLOT_INTS = 16;

/** Int32 offset of worker i's slot (after the job's four lines). */
export const slotAt = (i: number): number => 4 * SLOT_INTS + i * SLOT_INTS;

/** The most panels a thread takes at a time: small enough to balance, big enough to be cheap. */
export const PANELS_PER_TAKE = 4;

/**
 * Panels to take when `left` are unclaimed: a quarter of them, 1 to {@linkcode PANELS_PER_TAKE},
 * so the last takes are single panels and the threads finish close together (with fixed takes
 * of 4 the calling thread waited 3–280 µs a product for a worker's last take: 23 ms of the
 * CLIP-L LoRA forward + backward on two threads).
 */
export const takeSize = (left: number, most = PANELS_PER_TAKE): number =>
  Math.max(1, Math.min(most, left >> 2));

/** The ticket of job `seq` with no panel claimed yet. */
export const ticketOf = (seq: number): number => (seq & 0x7fff) << 16;

/**
 * The panels of the product posted in `control`, for {@linkcode takePanels}: `gemm(m, n, k, a,
 * lda, b, bias, c, ldc, p0, p1)` with the job's parameters.
 *
 * @example
 * ```ts
 * import { gemmPanels, takePanels } from "./_gemm_slots.ts";
 * // in a worker: takePanels(control, gemmPanels(control, exports.gemm), seq);
 * ```
 */
export function gemmPanels(
  control: Int32Array,
  gemm: (...args: number[]) => void,
): (p0: number, p1: number) => void {
  return (p0, p1) =>
    gemm(
      control[JOB.m],
      control[JOB.n],
      control[JOB.k],
      control[JOB.a],
      control[JOB.lda],
      control[JOB.b],
      control[JOB.bias],
      control[JOB.c],
      control[JOB.ldc],
      p0,
      p1,
    );
}

/**
 * Claim panels of job `seq` and run them (`run(p0, p1)` for panels p0 … p1 − 1) until none are
 * left; what a thread computes depends on timing, each panel's result does not. Claims take
 * {@linkcode takeSize} panels, at most the job's `take`. Claimed panels count as completed even
 * when `run` throws (the error goes on), so the job always ends; a worker passes the offset of
 * its `failed` field, set to `seq` before the panels count (so the job's end sees the failure).
 *
 * @example
 * ```ts
 * import { gemmPanels, takePanels } from "./_gemm_slots.ts";
 * // takePanels(control, gemmPanels(control, gemm), seq, slotAt(i) + SLOT.failed);
 * ```
 */
export function takePanels(
  control: Int32Array,
  run: (p0: number, p1: number) => void,
  seq: number,
  failedAt = -1,
): void {
  const tag = ticketOf(seq);
  for (;;) {
    const word = Atomics.load(control, JOB.ticket);
    if ((word & ~0xffff) !== tag) return;
    const p0 = word & 0xffff;
    const panels = control[JOB.panels];
    if (p0 >= panels) return;
    const p1 = p0 + takeSize(panels - p0, control[JOB.take] || PANELS_PER_TAKE);
    if (Atomics.compareExchange(control, JOB.ticket, word, tag | p1) !== word) continue;
    try {
      run(p0, p1);
    } catch (e) {
      if (failedAt >= 0) Atomics.store(control, failedAt, seq);
      throw e;
    } finally {
      complete(control, p1 - p0, panels);
    }
  }
}

/** Claim every panel of job `seq` left and count it completed without running it. */
export function giveUpPanels(control: Int32Array, seq: number): void {
  const tag = ticketOf(seq);
  for (;;) {
    const word = Atomics.load(control, JOB.ticket);
    const panels = control[JOB.panels];
    const p0 = word & 0xffff;
    if ((word & ~0xffff) !== tag || p0 >= panels) return;
    if (Atomics.compareExchange(control, JOB.ticket, word, tag | panels) === word) {
      complete(control, panels - p0, panels);
      return;
    }
  }
}

function complete(control: Int32Array, count: number, panels: number): void {
  if (Atomics.add(control, JOB.completed, count) + count === panels) {
    Atomics.notify(control, JOB.completed);
  }
}
