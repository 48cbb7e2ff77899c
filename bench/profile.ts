/**
 * `deno task bench profile [--model clip|unet] [--batch N] [--forward-only] [--threads N]
 * [--top K] [--shapes]`: where the wasm backend's time goes, per tfjs kernel (`tf.profile`), for the SD 1.5
 * CLIP ViT-L/14 text encoder with LoRA r16 (random weights, 2 × 77, forward + backward into
 * the LoRA) or the tiny UNet (forward + backward into the encoder states). Matrix products are
 * split by shape (every kernel with `--shapes`). Kernel times of nested scopes (custom gradients: "unnamed scope") include
 * the kernels inside them, so the column does not add up to the wall time.
 *
 * @module
 */
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../core/backend.ts";
import { clipLoraWorkload, tinyUNetWorkload } from "./_cpu_workloads.ts";

async function clipWorkload(forwardOnly: boolean): Promise<() => Promise<void>> {
  const clip = await clipLoraWorkload();
  return forwardOnly ? clip.forward : clip.forwardBackward;
}

async function unetWorkload(batch: number, forwardOnly: boolean): Promise<() => Promise<void>> {
  const { unet, inputs } = await tinyUNetWorkload();
  const { x, states, t } = inputs(batch);
  return async () => {
    const y = forwardOnly
      ? tf.tidy(() => unet.forward(x, t, states))
      : tf.grad((e: tf.Tensor) => unet.forward(x, t, e as tf.Tensor3D).square().sum())(states);
    await y.data();
    y.dispose();
  };
}

/**
 * Run the per-kernel profile.
 *
 * @example
 * ```ts
 * import benchProfile from "./profile.ts";
 * await benchProfile(["--model", "unet", "--batch", "2"]);
 * ```
 */
export default async function benchProfile(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: "unet" },
      batch: { type: "string", default: "2" },
      "forward-only": { type: "boolean", default: false },
      threads: { type: "string" },
      top: { type: "string", default: "25" },
      shapes: { type: "boolean", default: false },
    },
  });
  if (values.model !== "clip" && values.model !== "unet") {
    throw new Error(`bench profile: --model must be clip or unet (got '${values.model}')`);
  }
  const info = await useBackend("wasm", {
    wasmThreads: values.threads ? Number(values.threads) : undefined,
  });
  const forwardOnly = values["forward-only"];
  const run = values.model === "clip"
    ? await clipWorkload(forwardOnly)
    : await unetWorkload(Number(values.batch), forwardOnly);
  await run();
  await run();
  const t0 = performance.now();
  for (let i = 0; i < 3; i++) await run();
  const wall = (performance.now() - t0) / 3;
  const prof = await tf.profile(run);
  const by = new Map<string, { n: number; ms: number }>();
  for (const k of prof.kernels) {
    const ms = typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
    const key = k.name === "BatchMatMul" || values.shapes
      ? `${k.name} ${k.inputShapes.map((s) => s?.join("×")).join(" · ")}`
      : k.name;
    const e = by.get(key) ?? { n: 0, ms: 0 };
    e.n++;
    e.ms += ms;
    by.set(key, e);
  }
  const what = values.model === "clip"
    ? "CLIP-L LoRA r16, 2 × 77"
    : `tiny UNet, batch ${values.batch}`;
  console.log(
    `${what}, ${forwardOnly ? "forward" : "forward + backward"}, wasm ${info.device}: ` +
      `${wall.toFixed(0)} ms a call (mean of 3 after 2 warm-ups), ${prof.kernels.length} kernels\n`,
  );
  console.log("| kernel | calls | ms | µs / call |\n| --- | --- | --- | --- |");
  for (const [name, e] of [...by].sort((a, b) => b[1].ms - a[1].ms).slice(0, Number(values.top))) {
    console.log(`| ${name} | ${e.n} | ${e.ms.toFixed(1)} | ${(e.ms / e.n * 1000).toFixed(0)} |`);
  }
}
