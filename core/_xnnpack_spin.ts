// XNNPACK's thread pool in tfjs-backend-wasm 4.22's threaded build, told not to busy-wait.
//
// Between two parallel operations each pthreadpool worker spin-waits for the next command
// (PTHREADPOOL_SPIN_WAIT_ITERATIONS = 1 000 000 atomic loads, about a millisecond here) before
// it sleeps, unless the job asked workers to yield (PTHREADPOOL_FLAG_YIELD_WORKERS), which
// tfjs never does. At small batches the next operation almost always comes within that
// millisecond, so the worker never sleeps: it spun 85 % of the wall time of a tiny-UNet pass
// at batch 2, and on a machine whose cores are hyper-thread siblings (this project's 2-vCPU
// VM) the spinning sibling slowed every kernel of the calling thread that XNNPACK does not
// run (the packed products, norms, attention: 1.3–1.6× their one-thread time). pthreadpool
// compiles the count in, so the binary is patched where the worker loop loads it: the bytes
// `i32.const 1000000; local.set; local.get; i32.const 2 (the yield flag); i32.and; i32.eqz;
// if` occur once, and the constant becomes WORKER_SPIN_ITERATIONS (a multiple of the loop's
// unrolling by 5). Results do not change: only how a worker waits. The patched binary is
// written once to the temporary directory under its content hash; anything unexpected (another
// tfjs version, no write permission) leaves the package's own binary in use.
import { createHash } from "node:crypto";
import os from "node:os";
import { join } from "node:path";

/** Spin iterations left to a worker between jobs (the loop counts down in fives). */
export const WORKER_SPIN_ITERATIONS = 5;

/** The threaded SIMD binary's file name in tfjs-backend-wasm's dist folder. */
export const THREADED_SIMD_WASM = "tfjs-backend-wasm-threaded-simd.wasm";

// i32.const 1000000 (LEB128 c0 84 3d), local.set $n, local.get $flags, i32.const 2, i32.and,
// i32.eqz, if: the worker's spin count right before its test of the yield flag (-1: any local
// index below 128).
const SPIN_SITE = [0x41, 0xc0, 0x84, 0x3d, 0x21, -1, 0x20, -1, 0x41, 0x02, 0x71, 0x45, 0x04, 0x40];

function sitesIn(binary: Uint8Array): number[] {
  const found: number[] = [];
  for (let i = 0; i + SPIN_SITE.length <= binary.length; i++) {
    let j = 0;
    while (
      j < SPIN_SITE.length &&
      (SPIN_SITE[j] < 0 ? binary[i + j] < 0x80 : binary[i + j] === SPIN_SITE[j])
    ) j++;
    if (j === SPIN_SITE.length) found.push(i);
  }
  return found;
}

/**
 * `binary` with the worker's spin count set to `iterations` (kept 3 bytes long: a padded
 * LEB128), or null unless the spin site occurs exactly once.
 *
 * @example
 * ```ts
 * import { patchWorkerSpin } from "./_xnnpack_spin.ts";
 * const stock = new Uint8Array([0x41, 0xc0, 0x84, 0x3d, 0x21, 7, 0x20, 6, 0x41, 2, 0x71, 0x45, 4, 0x40]);
 * console.log(patchWorkerSpin(stock, 5)?.slice(1, 4)); // Uint8Array [0x85, 0x80, 0x00]
 * ```
 */
export function patchWorkerSpin(binary: Uint8Array, iterations: number): Uint8Array | null {
  if (!Number.isInteger(iterations) || iterations <= 0 || iterations % 5 || iterations >= 1 << 21) {
    throw new Error(`patchWorkerSpin: ${iterations} is not a positive multiple of 5 below 2^21`);
  }
  const sites = sitesIn(binary);
  if (sites.length !== 1) return null;
  const at = sites[0] + 1;
  const out = binary.slice();
  out.set([0x80 | (iterations & 0x7f), 0x80 | ((iterations >> 7) & 0x7f), iterations >> 14], at);
  return out;
}

/**
 * Path of the threaded SIMD binary from `distDir` with the worker spin patched, written to the
 * temporary directory if not there yet; null (use the stock binary) when it cannot be.
 *
 * @example
 * ```ts
 * import { patchedThreadedWasm } from "./_xnnpack_spin.ts";
 * const path = await patchedThreadedWasm("/path/to/tfjs-backend-wasm/dist/");
 * console.log(path ?? "stock binary");
 * ```
 */
export async function patchedThreadedWasm(distDir: string): Promise<string | null> {
  try {
    const stock = await Deno.readFile(join(distDir, THREADED_SIMD_WASM));
    const patched = patchWorkerSpin(stock, WORKER_SPIN_ITERATIONS);
    if (!patched) return null;
    const hash = createHash("sha256").update(patched).digest("hex").slice(0, 16);
    const dir = join(os.tmpdir(), `texforce-wasm-${hash}`);
    const path = join(dir, THREADED_SIMD_WASM);
    try {
      const there = await Deno.readFile(path);
      if (there.length === patched.length && there.every((v, i) => v === patched[i])) return path;
    } catch { /* not written yet */ }
    await Deno.mkdir(dir, { recursive: true });
    // Written beside and renamed, so a concurrent start never reads half a file.
    const part = `${path}.${Deno.pid}.part`;
    await Deno.writeFile(part, patched);
    await Deno.rename(part, path);
    return path;
  } catch {
    return null;
  }
}
