/**
 * TexForce's aesthetic experiment on Stable Diffusion 1.5 as a TypeScript pipeline: the LAION
 * aesthetic predictor as reward over DDPO's simple-animal prompts.
 *
 * The model folder comes from `SD15_PATH` (default: `../models/stable-diffusion-v1-5`, relative
 * to this file). Run it directly, or through the command line:
 *
 * ```sh
 * SD15_PATH=/data/stable-diffusion-v1-5 deno run -A --unstable-webgpu examples/sd15_aesthetic.ts
 * deno task texforce run examples/sd15_aesthetic.ts --set train.epochs=10
 * ```
 *
 * The reward needs OpenAI's CLIP ViT-L/14 saved by transformers (`CLIP_PATH`, default
 * `../models/clip-vit-large-patch14`) and the LAION aesthetic head converted to safetensors
 * (`AESTHETIC_HEAD_PATH`, default `../models/sac+logos+ava1-l14-linearMSE.safetensors`; the
 * released `.pth` holds the same `layers.{0,2,4,6,7}` keys), both relative to this file.
 *
 * Importing this module only returns the config; it runs only as the main module.
 *
 * @module
 */
import { definePipeline } from "../cli.ts";
import type { PipelineInput } from "../mod.ts";

const pipeline: PipelineInput = definePipeline({
  name: "sd15_aesthetic",
  model: Deno.env.get("SD15_PATH") || "../models/stable-diffusion-v1-5",
  backend: "webgpu",
  seed: 42,
  encoder: { use: "clip-lora", options: { rank: 16, alpha: 16 } },
  sampler: { steps: 50, eta: 1, guidance: 5, batchSize: 2 },
  rewards: [{
    use: "aesthetic",
    weight: 1,
    options: {
      clipModel: Deno.env.get("CLIP_PATH") || "../models/clip-vit-large-patch14",
      head: Deno.env.get("AESTHETIC_HEAD_PATH") ||
        "../models/sac+logos+ava1-l14-linearMSE.safetensors",
    },
  }],
  prompts: { builtin: "simple-animals" },
  optimizer: { lr: 3e-4, schedule: { type: "constant", warmupSteps: 0 } },
  train: { epochs: 100, batchesPerEpoch: 2, batchSize: 2, timestepFraction: 0.5 },
  eval: { prompts: ["cat", "dog", "horse", "butterfly"], seeds: [0, 1], every: 5 },
  checkpoint: { every: 5, keep: 3 },
  output: { exportFormats: ["peft", "kohya"] },
}, import.meta);

export default pipeline;
