/**
 * The plan of a run: how many images, UNet calls and optimizer steps each epoch takes, computed
 * from the pipeline alone (no weights). `texforce run --dry-run` prints it; the run header and
 * the progress ETA use it.
 *
 * @module
 */
import type { Pipeline } from "./pipeline_schema.ts";

/**
 * Counts of the work a run does.
 *
 * @example
 * ```ts
 * import { parsePipeline, planRun, type RunPlan } from "@texforce/core";
 * const p = parsePipeline({ model: "m", rewards: [{ use: "brightness" }], prompts: ["a"] });
 * const plan: RunPlan = planRun(p);
 * console.log(plan.total.samplingUnetCalls);
 * ```
 */
export interface RunPlan {
  /** Epochs of the run. */
  epochs: number;
  /** DDIM steps per image. */
  steps: number;
  /** Sampling batches per epoch. */
  batchesPerEpoch: number;
  /** Images per sampling batch. */
  batchSize: number;
  /** Images sampled (and scored) per epoch. */
  imagesPerEpoch: number;
  /** UNet calls per epoch while sampling (one per DDIM step and batch, CFG batched). */
  samplingUnetCallsPerEpoch: number;
  /** PPO passes per epoch: each one UNet call forward and backward on a minibatch. */
  trainingPassesPerEpoch: number;
  /** Minibatches per inner epoch. */
  minibatches: number;
  /** Optimizer steps per epoch. */
  optimizerStepsPerEpoch: number;
  /** Evaluations over the whole run (before training, then every `eval.every` epochs). */
  evalRuns: number;
  /** Sampling batches per evaluation (one per eval seed). */
  evalBatchesPerRun: number;
  /** Images per evaluation. */
  evalImagesPerRun: number;
  /** Totals over the run. */
  total: {
    /** Images sampled for training. */
    images: number;
    /** Images sampled for evaluation. */
    evalImages: number;
    /** UNet forward calls (sampling and evaluation). */
    samplingUnetCalls: number;
    /** UNet forward+backward calls (PPO passes). */
    trainingPasses: number;
    /** Optimizer steps. */
    optimizerSteps: number;
  };
}

/**
 * The plan of `pipeline` from epoch `fromEpoch` (completed epochs, for a resumed run) on, for a
 * sampler of `steps` denoising steps (default: `sampler.steps`, else 1 — a sampler plugin that
 * takes its steps in `sampler.options` tells the trainer its `numSteps` once built).
 *
 * @example
 * ```ts
 * import { parsePipeline, planRun } from "@texforce/core";
 * const p = parsePipeline({ model: "m", rewards: [{ use: "brightness" }], prompts: ["a"] });
 * console.log(planRun(p).imagesPerEpoch);
 * ```
 */
export function planRun(
  pipeline: Pipeline,
  fromEpoch = 0,
  steps: number = pipeline.sampler.steps ?? 1,
): RunPlan {
  const t = pipeline.train;
  const s = { ...pipeline.sampler, steps };
  const imagesPerEpoch = t.batchesPerEpoch * s.batchSize;
  const minibatches = Math.ceil(imagesPerEpoch / t.batchSize);
  const numTrain = Math.max(1, Math.floor(s.steps * t.timestepFraction));
  const trainingPassesPerEpoch = t.innerEpochs * minibatches * numTrain;
  const optimizerStepsPerEpoch = t.innerEpochs * Math.ceil(minibatches / t.gradientAccumulation);
  const ev = pipeline.eval;
  let evalRuns = 0;
  if (ev) {
    if (fromEpoch === 0) evalRuns++;
    for (let e = fromEpoch + 1; e <= t.epochs; e++) if (e % ev.every === 0) evalRuns++;
  }
  const evalBatchesPerRun = ev ? ev.seeds.length : 0;
  const evalImagesPerRun = ev ? ev.seeds.length * ev.prompts.length : 0;
  const epochs = Math.max(0, t.epochs - fromEpoch);
  return {
    epochs: t.epochs,
    steps: s.steps,
    batchesPerEpoch: t.batchesPerEpoch,
    batchSize: s.batchSize,
    imagesPerEpoch,
    samplingUnetCallsPerEpoch: t.batchesPerEpoch * s.steps,
    trainingPassesPerEpoch,
    minibatches,
    optimizerStepsPerEpoch,
    evalRuns,
    evalBatchesPerRun,
    evalImagesPerRun,
    total: {
      images: epochs * imagesPerEpoch,
      evalImages: evalRuns * evalImagesPerRun,
      samplingUnetCalls: epochs * t.batchesPerEpoch * s.steps +
        evalRuns * evalBatchesPerRun * s.steps,
      trainingPasses: epochs * trainingPassesPerEpoch,
      optimizerSteps: epochs * optimizerStepsPerEpoch,
    },
  };
}

/**
 * The plan as indented lines for a terminal (the run header and `--dry-run`).
 *
 * @example
 * ```ts
 * import { formatPlan, parsePipeline, planRun } from "@texforce/core";
 * const p = parsePipeline({ model: "m", rewards: [{ use: "brightness" }], prompts: ["a"] });
 * console.log(formatPlan(p, planRun(p)).join("\n"));
 * ```
 */
export function formatPlan(pipeline: Pipeline, plan: RunPlan): string[] {
  const s = pipeline.sampler;
  const t = pipeline.train;
  const lines = [
    `plan:     ${count(plan.epochs, "epoch")} × ${count(plan.imagesPerEpoch, "image")} (` +
    `${count(plan.batchesPerEpoch, "batch")} of ${plan.batchSize}), ${
      count(plan.steps, "DDIM step")
    }` +
    (s.guidance !== undefined ? `, guidance ${s.guidance}` : "") +
    (s.eta !== undefined ? `, eta ${s.eta}` : ""),
    `epoch:    ${plan.samplingUnetCallsPerEpoch} UNet calls sampling (batch ${
      plan.batchSize * 2
    } with CFG), ${plan.trainingPassesPerEpoch} PPO passes (UNet forward+backward, ` +
    `${plan.minibatches} minibatch${plan.minibatches > 1 ? "es" : ""} of ≤${t.batchSize} × ` +
    `${
      Math.max(1, Math.floor(plan.steps * t.timestepFraction))
    } timesteps × ${t.innerEpochs} inner), ` +
    `${count(plan.optimizerStepsPerEpoch, "optimizer step")}`,
  ];
  const ev = pipeline.eval;
  if (ev) {
    lines.push(
      `eval:     ${ev.prompts.length} prompts × ${ev.seeds.length} seed${
        ev.seeds.length > 1 ? "s" : ""
      } before training and ` +
        `every ${ev.every} epoch${ev.every > 1 ? "s" : ""} (${count(plan.evalRuns, "evaluation")})`,
    );
  }
  lines.push(
    `total:    ${count(plan.total.images, "training image")} + ` +
      `${count(plan.total.evalImages, "eval image")}, ` +
      `${count(plan.total.samplingUnetCalls, "UNet sampling call")}, ` +
      `${count(plan.total.trainingPasses, "PPO pass")}, ` +
      `${count(plan.total.optimizerSteps, "optimizer step")}`,
  );
  return lines;
}

function count(n: number, word: string): string {
  if (n === 1) return `${n} ${word}`;
  return `${n} ${word}${/(tch|ss)$/.test(word) ? "es" : "s"}`;
}
