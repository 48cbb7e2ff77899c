// The CPU benchmarks' workloads, shared by `bench cpu` (timings, PyTorch side by side) and
// `bench profile` (where the time goes), so both measure the same work.
import * as tf from "@tensorflow/tfjs";
import { parseUNetConfig, UNet2DConditionModel } from "../adapters/unet/unet_2d_condition.ts";
import { RandomWeightReader } from "../adapters/unet/random_weight_reader.ts";
import { SeededNoise } from "../core/seeded_noise.ts";
import { benchTokenIds, clipWithBenchLora, SD15_TEXT } from "./clip.ts";
import { TINY_UNET } from "./_unet_bench.ts";

/** The SD 1.5 CLIP ViT-L/14 text encoder (random weights) with LoRA r16, batch 2 × 77. */
export interface ClipLoraWorkload {
  /** One forward pass. */
  forward(): Promise<void>;
  /** One forward + backward pass into the LoRA (loss: mean square of the last hidden state). */
  forwardBackward(): Promise<void>;
  dispose(): void;
}

/**
 * Build the CLIP-L LoRA workload (LoRA B random, so the adapter takes part in both passes).
 *
 * @example
 * ```ts
 * import { clipLoraWorkload } from "./_cpu_workloads.ts";
 * const w = await clipLoraWorkload();
 * await w.forwardBackward();
 * w.dispose();
 * ```
 */
export async function clipLoraWorkload(): Promise<ClipLoraWorkload> {
  const { model, lora, vars } = await clipWithBenchLora(SD15_TEXT, 16);
  const ids = benchTokenIds(2);
  return {
    forward: async () => {
      const h = model.forward(ids, { lora }).lastHiddenState;
      await h.data();
      h.dispose();
    },
    forwardBackward: async () => {
      const { value, grads } = tf.variableGrads(
        () => tf.mean(tf.square(model.forward(ids, { lora }).lastHiddenState)) as tf.Scalar,
        vars,
      );
      await Promise.all(Object.values(grads).map((g) => g.data()));
      tf.dispose([value, ...Object.values(grads)]);
    },
    dispose: () => {
      ids.dispose();
      lora.dispose();
      model.dispose();
    },
  };
}

/** The tiny UNet (the test fixture's shape, random weights) and its inputs per batch. */
export interface TinyUNetWorkload {
  unet: UNet2DConditionModel;
  /** Latents, encoder states and timesteps of `batch` samples (seeded; dispose the tensors). */
  inputs(batch: number): { x: tf.Tensor4D; states: tf.Tensor3D; t: number[] };
}

/**
 * Build the tiny UNet workload.
 *
 * @example
 * ```ts
 * import { tinyUNetWorkload } from "./_cpu_workloads.ts";
 * const { unet, inputs } = await tinyUNetWorkload();
 * const { x, states, t } = inputs(2);
 * unet.forward(x, t, states).dispose();
 * ```
 */
export async function tinyUNetWorkload(): Promise<TinyUNetWorkload> {
  const config = parseUNetConfig(TINY_UNET, "<tiny config>");
  const unet = await UNet2DConditionModel.fromReader(config, new RandomWeightReader(1));
  const side = config.sampleSize;
  return {
    unet,
    inputs: (batch) => {
      const gen = new SeededNoise(7);
      return {
        x: gen.normal([batch, side, side, config.inChannels]) as tf.Tensor4D,
        states: gen.normal([batch, 77, config.crossAttentionDim[0]]) as tf.Tensor3D,
        t: Array.from({ length: batch }, (_, i) => 999 - ((i * 37) % 999)),
      };
    },
  };
}
