/**
 * `deno task bench unet [--tiny] [--latent 64] [--batch 2] [--runs 2] [--slice N]
 * [--backward-latent N] [--backend wasm] [--out DIR]`: the SD 1.5 UNet (320/640/1280/1280, 2
 * layers per block, 8 heads, cross-attention 768) with random weights built in memory; times the
 * forward pass and forward + backward into the encoder hidden states after a warm-up, and prints
 * median ms and peak RSS.
 *
 * On wasm the 4 GiB heap holds the 3.4 GiB of fp32 weights with little to spare, so attention is
 * sliced and the backward pass runs at a smaller latent by default (see the printed settings).
 *
 * @module
 */
import { runUNetBench } from "./_unet_bench.ts";

/**
 * Run the benchmark with `args` (wasm by default).
 *
 * @example
 * ```ts
 * import unet from "./unet.ts";
 * await unet(["--tiny"]);
 * ```
 */
export default async function (args: string[]): Promise<void> {
  await runUNetBench(args, { backend: "wasm" });
}

if (import.meta.main) await runUNetBench(Deno.args, { backend: "wasm" });
