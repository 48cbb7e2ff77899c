// Waiting for the packed product's worker pool (adapters/wasm/_gemm_threads.ts) to join. Under
// `deno test` a worker's modules are type-checked when it starts; with a cold check cache (a
// clean clone in CI) on a busy machine that took 25 s here, so the wait is long and ends as
// soon as the workers report ready.
import { gemmHelpersReady } from "../../../adapters/wasm/_gemm_threads.ts";

/**
 * Wait until the pool's workers have joined (the pool starts on the first shared product or
 * attention phase, which the caller runs first); throws after `limitMs` (default 180 s).
 *
 * @example
 * ```ts
 * import { gemmHelpersJoined } from "./_gemm_helpers_joined.ts";
 * // after a product big enough to be shared, on two threads:
 * const helpers = await gemmHelpersJoined(); // 1
 * ```
 */
export async function gemmHelpersJoined(limitMs = 180_000): Promise<number> {
  const until = performance.now() + limitMs;
  while (gemmHelpersReady() === 0) {
    if (performance.now() > until) {
      throw new Error(`the packed product's workers did not report ready within ${limitMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return gemmHelpersReady();
}
