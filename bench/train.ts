/**
 * `deno task bench train [--model DIR] [--epochs N] [--backend B] [--steps T]`: seconds per
 * epoch split into sampling, rewards and training (from the run's metrics), on the tiny fixture
 * model by default.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { builtinRegistry } from "../builtin_plugins.ts";
import { parsePipeline } from "../core/pipeline_schema.ts";
import { readMetrics } from "../core/report.ts";
import { train } from "../core/train.ts";
import { formatBytes, peakRss } from "./_peak_rss.ts";

/** Run the training benchmark. */
export default async function benchTrain(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: {
        type: "string",
        default: fileURLToPath(new URL("../tests/fixtures/sd-tiny/tiny-sd", import.meta.url)),
      },
      epochs: { type: "string", default: "3" },
      backend: { type: "string", default: "wasm" },
      steps: { type: "string", default: "10" },
      "batch-size": { type: "string", default: "2" },
    },
  });
  const dir = await Deno.makeTempDir({ prefix: "texforce-bench-train-" });
  try {
    const bs = Number(values["batch-size"]);
    const pipeline = parsePipeline({
      model: values.model,
      backend: values.backend,
      rewards: [{ use: "brightness" }],
      prompts: { builtin: "tiny" },
      sampler: { steps: Number(values.steps), batchSize: bs },
      train: { epochs: Number(values.epochs), batchesPerEpoch: 2, batchSize: bs },
      output: { dir, saveImages: false, exportFormats: [] },
    });
    const t0 = performance.now();
    await train(pipeline, { registry: builtinRegistry(), log: () => {} });
    const total = (performance.now() - t0) / 1000;
    const epochs = (await readMetrics(dir)).filter((r) => r.type === "epoch");
    console.log(
      `model ${values.model}\nbackend ${values.backend}, ${values.steps} DDIM steps, ` +
        `2 batches × ${bs} images per epoch, timestep fraction 0.5\n`,
    );
    console.log("epoch  sampling s  rewards s  training s  total s");
    for (const r of epochs) {
      const [s, w, t] = [r.seconds_sampling, r.seconds_rewards, r.seconds_training].map(Number);
      console.log(
        `${String(r.epoch).padStart(5)}  ${s.toFixed(2).padStart(10)}  ${
          w.toFixed(2).padStart(9)
        }  ${t.toFixed(2).padStart(10)}  ${(s + w + t).toFixed(2).padStart(7)}`,
      );
    }
    console.log(
      `\nwhole run incl. loading: ${total.toFixed(1)} s, peak RSS ${formatBytes(peakRss())}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
