import { builtinRegistry, loadPipeline, loadTextToImage, train } from "@texforce/core";
import { brightnessReward } from "@texforce/core/rewards";

// Train a LoRA on the text encoder; the library prints nothing itself, the app decides.
const pipeline = await loadPipeline(new URL("./pipeline.yaml", import.meta.url).pathname, {
  set: Deno.args, // e.g. output.dir=/tmp/run train.epochs=1
});
await Deno.remove(pipeline.output.dir, { recursive: true }).catch(() => {});
const controller = new AbortController();
Deno.addSignalListener("SIGINT", () => controller.abort());
let phase = "";
const result = await train(pipeline, {
  registry: builtinRegistry(),
  signal: controller.signal,
  onProgress: (e) => {
    if (e.phase !== phase) console.log(`app: ${e.message}`);
    phase = e.phase;
  },
});
console.log(`app: trained to step ${result.steps}, checkpoint ${result.checkpoint}`);

// Generate with the trained LoRA and score the image.
const model = await loadTextToImage(pipeline.model, {
  encoder: { adapters: [{ path: `${result.outputDir}/export/peft` }] },
  sampler: { steps: pipeline.sampler.steps },
});
const prompts = ["a red circle"];
const images = await model.generate(prompts, { seed: 0 });
const [score] = await model.score(brightnessReward(), images, prompts);
console.log(`app: image ${images.shape.slice(1).join("×")}, brightness ${score.toFixed(4)}`);
images.dispose();
model.dispose();
