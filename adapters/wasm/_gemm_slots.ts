// The control block shared by the packed product's pool and its workers: one slot of Int32
// fields per worker (job parameters, a sequence number to start a job, the last finished one).

/** Field offsets within a slot. */
export const SLOT = {
  ready: 0,
  stop: 1,
  seq: 2,
  done: 3,
  m: 4,
  n: 5,
  k: 6,
  a: 7,
  b: 8,
  bias: 9,
  c: 10,
  p0: 11,
  p1: 12,
} as const;

/** Int32s per slot (a 64-byte cache line, so workers do not share lines). */
export const SLOT_INTS = 16;
