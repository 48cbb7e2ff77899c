// Timing calls for the benchmarks: each call's wall-clock and process CPU milliseconds (all
// threads), shared by `bench cpu`'s rows and its turns with PyTorch (_clip_turns.ts), and the
// median the benchmarks report.
import process from "node:process";

/** Wall and process CPU ms of each timed call. */
export interface Samples {
  ms: number[];
  cpu: number[];
}

/**
 * Time `fn` into `into`: at least `minCalls` calls, more while under `forMs` (at most
 * `maxCalls`).
 *
 * @example
 * ```ts
 * import { type Samples, timeCalls } from "./_call_timer.ts";
 * const s: Samples = { ms: [], cpu: [] };
 * await timeCalls(async () => {}, s, 3, 0, 3);
 * console.log(s.ms.length); // 3
 * ```
 */
export async function timeCalls(
  fn: () => Promise<void>,
  into: Samples,
  minCalls: number,
  forMs: number,
  maxCalls: number,
): Promise<void> {
  const started = performance.now();
  for (let i = 0; i < minCalls || (performance.now() - started < forMs && i < maxCalls); i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await fn();
    into.ms.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    into.cpu.push((c.user + c.system) / 1000);
  }
}

/**
 * The median of `xs` (for an even count, the upper of the two middle values: always a measured
 * time).
 *
 * @example
 * ```ts
 * import { median } from "./_call_timer.ts";
 * console.log(median([3, 1, 2])); // 2
 * ```
 */
export const median = (xs: number[]): number =>
  [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
