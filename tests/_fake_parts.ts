// A tiny differentiable stand-in for the encoder and sampler, so trainer mechanics (resume,
// guard rails, abort, memory) are tested in milliseconds. Parity with the real models is tested
// in trainer_parity_test.ts.
import * as tf from "@tensorflow/tfjs";
import type { Encoder } from "../core/encoder.ts";
import type { Reward } from "../core/reward.ts";
import { Rng } from "../core/rng.ts";
import type { Conditioning, SampleOptions, Sampler, Trajectory } from "../core/sampler.ts";
import { parsePipeline } from "../core/pipeline_schema.ts";
import type { Pipeline } from "../core/pipeline_schema.ts";
import type { TrainerParts } from "../core/trainer.ts";
import { adamw } from "../adapters/optim/adamw.ts";
import { writeSafetensors } from "../core/io/safetensors.ts";

export function fakeEncoder(rank = 4): Encoder {
  const init = [0.1, -0.2, 0.3, 0.05];
  const w = tf.variable(tf.tensor1d(Array.from({ length: rank }, (_, i) => init[i % 4])), true);
  const tokenize = (prompts: string[]) =>
    tf.tensor2d(prompts.map((p) => [0, 1, 2].map((i) => (p.charCodeAt(i) || 0) / 100)), [
      prompts.length,
      3,
    ], "float32");
  const encodeIds = (ids: tf.Tensor2D) =>
    tf.tidy(() =>
      ids.expandDims(2).mul(w.slice([0], [4]).reshape([1, 1, 4])).add(0.01) as tf.Tensor3D
    );
  return {
    name: "fake",
    hiddenSize: 4,
    maxLength: 3,
    tokenize,
    encodeIds,
    encode: (prompts) => tf.tidy(() => encodeIds(tokenize(prompts))),
    trainableVariables: () => new Map([["lora.w", w]]),
    exportWeights: async (dir: string) => {
      await Deno.mkdir(dir, { recursive: true });
      const path = `${dir}/lora.safetensors`;
      await writeSafetensors(path, {
        "lora.w": { dtype: "F32", shape: [rank], data: await w.data() },
      });
      return [path];
    },
    dispose: () => w.dispose(),
  };
}

export function fakeSampler(steps = 4): Sampler {
  const drift = (cond: Conditioning) =>
    tf.tidy(() => cond.prompt.mean([1, 2]).sub(cond.negative.mean([1, 2])));
  const mean = (x: tf.Tensor4D, d: tf.Tensor) =>
    tf.tidy(() => x.mul(0.9).add(d.reshape([-1, 1, 1, 1]).mul(3)));
  const std = 0.1;
  return {
    name: "fake",
    numSteps: steps,
    sample(cond: Conditioning, o: SampleOptions = {}): Promise<Trajectory> {
      const rng = new Rng(o.seed ?? 0);
      const b = cond.prompt.shape[0];
      const n = () => tf.tensor4d(Array.from({ length: b * 4 }, () => rng.normal()), [b, 2, 2, 1]);
      return Promise.resolve(tf.tidy(() => {
        const d = drift(cond);
        let x = n();
        const xs = [x];
        const lps: tf.Tensor[] = [];
        for (let j = 0; j < steps; j++) {
          const m = mean(x, d);
          const next = m.add(n().mul(std)) as tf.Tensor4D;
          lps.push(next.sub(m).square().div(-2 * std * std).mean([1, 2, 3]));
          xs.push(next);
          x = next;
        }
        return {
          latents: tf.stack(xs, 1) as tf.Tensor5D,
          logProbs: tf.stack(lps, 1) as tf.Tensor2D,
          timesteps: Array.from({ length: steps }, (_, i) => 999 - i * 250),
          images: tf.sigmoid(x).tile([1, 1, 1, 3]) as tf.Tensor4D,
        };
      }));
    },
    logProb(cond, latent, next, _j) {
      return tf.tidy(() =>
        next.sub(mean(latent, drift(cond))).square().div(-2 * std * std).mean([
          1,
          2,
          3,
        ]) as tf.Tensor1D
      );
    },
    dispose() {},
  };
}

export function brightness(): Reward {
  return {
    name: "brightness",
    score: async ({ images }) => {
      const m = images.mean([1, 2, 3]);
      const v = Array.from(await m.data());
      m.dispose();
      return v;
    },
  };
}

export function fakePipeline(outputDir: string, overrides: Record<string, unknown> = {}): Pipeline {
  return parsePipeline({
    model: "/nonexistent",
    seed: 7,
    rewards: [{ use: "brightness" }],
    prompts: ["a cat", "a dog", "a red circle"],
    sampler: { steps: 4, batchSize: 2 },
    train: {
      epochs: 4,
      batchesPerEpoch: 2,
      batchSize: 4,
      timestepFraction: 0.5,
      clipRange: 0.2,
      perPromptTracking: { minCount: 2 },
    },
    optimizer: { lr: 0.05 },
    checkpoint: { every: 1, keep: 2 },
    output: { dir: outputDir, saveImages: false },
    ...overrides,
  });
}

export function fakeParts(rewards: Reward[] = [brightness()]): TrainerParts {
  const encoder = fakeEncoder();
  return {
    encoder,
    sampler: fakeSampler(),
    rewards: rewards.map((r) => ({ name: r.name, weight: 1, reward: r })),
    optimizer: adamw(encoder.trainableVariables()),
    prompts: ["a cat", "a dog", "a red circle"],
  };
}

export function disposeParts(p: TrainerParts): void {
  p.encoder.dispose();
  p.optimizer.dispose();
}
