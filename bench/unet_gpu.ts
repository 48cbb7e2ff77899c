/**
 * The UNet benchmark on WebGPU, bundlable for the GPU machine (imports nothing native):
 * `../shared/gpu/prepare.sh bench/unet_gpu.ts`, then on the device `bash .gpu/remote.sh [args]`.
 * Same arguments as `bench/unet.ts`; writes `unet_webgpu.json` under `$OUT` (or `--out`) and
 * prints a short table. Here it runs on lavapipe: `deno task bench unet_gpu --tiny`.
 *
 * @module
 */
import { runUNetBench } from "./_unet_bench.ts";

/**
 * Run the benchmark with `args` on WebGPU.
 *
 * @example
 * ```ts
 * import unetGpu from "./unet_gpu.ts";
 * await unetGpu(["--tiny", "--runs", "1"]);
 * ```
 */
export default async function (args: string[]): Promise<void> {
  await runUNetBench(args, { backend: "webgpu", outDir: Deno.env.get("OUT") });
}

if (import.meta.main) {
  await runUNetBench(Deno.args, { backend: "webgpu", outDir: Deno.env.get("OUT") });
}
