/**
 * The demo: train the project's tiny Stable Diffusion model (random weights, in
 * `tests/fixtures/sd-tiny/tiny-sd`) to make brighter images, then print what happened.
 * `deno task demo` runs it; output goes to `runs/demo/`.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { builtinRegistry } from "../builtin_plugins.ts";
import { loadPipeline } from "../core/pipeline.ts";
import { progressPrinter } from "../core/progress.ts";
import { readMetrics } from "../core/report.ts";
import { train } from "../core/trainer.ts";

const file = fileURLToPath(new URL("./tiny_brightness.yaml", import.meta.url));
const pipeline = await loadPipeline(file, {
  set: ["output.dir=../runs/demo", ...Deno.args.flatMap((a) => (a.includes("=") ? [a] : []))],
});
// The demo's run folder is scratch: start afresh each time (real runs refuse to overwrite).
await Deno.remove(pipeline.output.dir, { recursive: true }).catch(() => {});
const controller = new AbortController();
Deno.addSignalListener("SIGINT", () => controller.abort());
console.log(`texforce demo: ${pipeline.model}`);
// The library prints nothing itself: draw its progress (a bar on a terminal, lines otherwise).
const progress = progressPrinter();
const result = await train(pipeline, {
  registry: builtinRegistry(),
  signal: controller.signal,
  onProgress: progress.onProgress,
  log: progress.log,
});
progress.close();
const epochs = (await readMetrics(result.outputDir)).filter((r) => r.type === "epoch");
console.log("\nepoch  mean brightness reward");
for (const r of epochs) {
  console.log(`${String(r.epoch).padStart(5)}  ${Number(r.reward_mean).toFixed(4)}`);
}
console.log(`\nrun folder: ${result.outputDir}`);
console.log(`report:     ${result.outputDir}/report.html`);
console.log(`checkpoint: ${result.checkpoint}`);
Deno.exit(0);
