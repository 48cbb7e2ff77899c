/**
 * The TexForce trainer: sample with the current text encoder, score, turn rewards into
 * advantages, then PPO updates of the encoder's LoRA through the frozen UNet.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { normalizeAdvantages, PerPromptTracker } from "./advantages.ts";
import { faultPoint } from "./_fault.ts";
import { type Checkpoint, hashConfig, restoreVariables, snapshotVariables } from "./checkpoint.ts";
import { type ImageWriter, RunFolder } from "./run_folder.ts";
import type { Encoder } from "./encoder.ts";
import { clipGlobalNorm, GradientAccumulator } from "./gradients.ts";
import { learningRate } from "./lr_schedule.ts";
import type { Optimizer } from "./optimizer.ts";
import type { Pipeline } from "./pipeline_schema.ts";
import { type PpoGradients, ppoGradients } from "./ppo_step.ts";
import {
  formatDuration,
  formatProgressLine,
  ProgressClock,
  type TrainPhase,
  type TrainProgress,
} from "./progress.ts";
import { planRun } from "./run_plan.ts";
import type { Reward } from "./reward.ts";
import { Rng } from "./rng.ts";
import type { Conditioning, Sampler } from "./sampler.ts";
import type { Tensor1D, Tensor2D, Tensor4D, Tensor5D, Variable } from "./tensor_types.ts";

/** A weighted reward term. */
export interface RewardTerm {
  /** Name in logs and metrics. */
  name: string;
  /** Weight in the total. */
  weight: number;
  /** The reward. */
  reward: Reward;
}

/** The built pieces a {@linkcode Trainer} drives. */
export interface TrainerParts {
  /** The policy: a text encoder with trainable LoRA variables. */
  encoder: Encoder;
  /** The frozen diffusion sampler. */
  sampler: Sampler;
  /** Reward terms. */
  rewards: RewardTerm[];
  /** Optimizer over `encoder.trainableVariables()`. */
  optimizer: Optimizer;
  /** Training prompts. */
  prompts: string[];
  /**
   * The encoder's options as its plugin resolved them (defaults filled in), recorded in each
   * checkpoint so `export` rebuilds the same LoRA (default: `encoder.options` of the pipeline).
   */
  encoderOptions?: Record<string, unknown>;
}

/** Options of a run. */
export interface TrainerOptions {
  /** Stops the run between steps; a final checkpoint is written. */
  signal?: AbortSignal;
  /** Resume from the newest intact checkpoint of the output folder. */
  resume?: boolean;
  /** Resume even when the config changed in keys that are not safe to change. */
  force?: boolean;
  /** Progress events (phase, epoch i/N, step, images/s, ETA); `progressPrinter()` draws them. */
  onProgress?: (e: TrainProgress) => void;
  /**
   * Log lines: the run header, one line per epoch, exports (`info`); per-step PPO diagnostics
   * (`detail`). Nothing is printed without it: the library never writes to the console itself.
   */
  log?: (line: string, level?: "info" | "detail") => void;
  /**
   * What produced the run's numbers besides the pipeline (backend, each reward's plugin version,
   * models and files), written to `run.json` once the run folder is accepted.
   */
  runInfo?: Record<string, unknown>;
  /** Writes an image grid (NHWC [0,1]) with one caption per image; images are skipped without. */
  saveImages?: ImageWriter;
  /**
   * The run folder, opened for this run ({@linkcode RunFolder.open}): everything the run writes
   * goes through it. Without it the trainer opens `output.dir` itself (with `resume`, `force`,
   * `runInfo` and `saveImages`).
   */
  runFolder?: RunFolder;
}

/** What a run produced. */
export interface TrainResult {
  /** Run folder. */
  outputDir: string;
  /** Newest checkpoint folder. */
  checkpoint: string;
  /** Optimizer steps taken in total. */
  steps: number;
  /** Epochs completed. */
  epochs: number;
  /** True when stopped by the signal. */
  interrupted: boolean;
  /** Mean total reward per epoch of this process's run. */
  rewardMeans: number[];
}

/** A training failure: non-finite numbers, a reward that threw, … */
export class TrainingError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "TrainingError";
  }
}

interface Samples {
  prompts: string[];
  latents: Tensor5D;
  logProbs: Tensor2D;
  rewards: number[];
  components: Record<string, number[]>;
}

function meanStd(xs: number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const v = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length);
  return { mean, std: Math.sqrt(v) };
}

/**
 * Runs TexForce training over built parts and a normalised pipeline.
 *
 * @example
 * ```ts
 * import { Trainer, type Pipeline, type TrainerParts } from "@texforce/core";
 * declare const pipeline: Pipeline;
 * declare const parts: TrainerParts;
 * const result = await new Trainer(pipeline, parts).run();
 * ```
 */
export class Trainer {
  /** The pipeline. */
  readonly config: Pipeline;
  /** The parts. */
  readonly parts: TrainerParts;
  #opts: TrainerOptions;
  #rng: Rng;
  #tracker: PerPromptTracker;
  #step = 0;
  #epoch = 0;
  #lastLr = 0;
  #clock: ProgressClock | undefined;
  #firstEpochLogged = false;
  #variables: Map<string, Variable>;
  #folder: RunFolder;

  /** Prepare a run (nothing is sampled until `run`). */
  constructor(config: Pipeline, parts: TrainerParts, options: TrainerOptions = {}) {
    this.config = config;
    this.parts = parts;
    this.#opts = options;
    this.#rng = new Rng(config.seed);
    const pp = config.train.perPromptTracking;
    this.#tracker = new PerPromptTracker(pp.bufferSize, pp.minCount);
    this.#variables = parts.encoder.trainableVariables();
    this.#folder = options.runFolder ?? new RunFolder(config.output.dir, options.saveImages);
    if (parts.prompts.length === 0) throw new TrainingError("no training prompts");
  }

  /** Optimizer steps taken. */
  get step(): number {
    return this.#step;
  }

  /** Epochs completed. */
  get epoch(): number {
    return this.#epoch;
  }

  /** Total optimizer steps of the configured run (for the LR schedule). */
  totalSteps(): number {
    const t = this.config.train;
    const samples = t.batchesPerEpoch * this.config.sampler.batchSize;
    const minibatches = Math.ceil(samples / t.batchSize);
    return t.epochs * t.innerEpochs * Math.ceil(minibatches / t.gradientAccumulation);
  }

  #lr(): number {
    const o = this.config.optimizer;
    return learningRate(this.#step, {
      type: o.schedule.type,
      lr: o.lr,
      warmupSteps: o.schedule.warmupSteps,
      minLr: o.schedule.minLr,
      totalSteps: this.totalSteps(),
    });
  }

  #log(line: string, level: "info" | "detail" = "info"): void {
    this.#opts.log?.(line, level);
  }

  /** A progress event for `epoch` (1-based; 0 = before training). */
  #emit(phase: TrainPhase, epoch: number, done = 0, total = 0): void {
    if (!this.#opts.onProgress) return;
    const snap = (this.#clock ??= this.#newClock()).snapshot();
    const e: TrainProgress = {
      epoch,
      epochs: this.config.train.epochs,
      step: this.#step,
      phase,
      done,
      total,
      ...snap,
      message: "",
    };
    e.message = formatProgressLine(e);
    this.#opts.onProgress(e);
  }

  /** The epoch's summary line; after the first epoch, the time the whole run will take. */
  #logEpoch(
    epoch: number,
    reward: { mean: number; std: number },
    times: { sampling: number; rewards: number; training: number },
    record: Record<string, unknown>,
  ): void {
    const snap = this.#clock?.snapshot();
    const secs = (times.sampling + times.rewards + times.training) / 1000;
    const terms = this.parts.rewards.length > 1
      ? ` (${
        this.parts.rewards.map((t) =>
          `${t.name} ${Number(record[`reward_${t.name}_mean`]).toFixed(4)}`
        )
          .join(", ")
      })`
      : "";
    this.#log(
      `epoch ${epoch}/${this.config.train.epochs}: reward ${reward.mean.toFixed(4)} ± ` +
        `${reward.std.toFixed(4)}${terms}, step ${this.#step}, ${formatDuration(secs)} ` +
        `(sampling ${(times.sampling / 1000).toFixed(1)}s, rewards ${
          (times.rewards / 1000).toFixed(1)
        }s, training ${(times.training / 1000).toFixed(1)}s)` +
        (snap?.etaSeconds !== undefined && epoch < this.config.train.epochs
          ? `, ETA ${formatDuration(snap.etaSeconds)}`
          : ""),
    );
    if (!this.#firstEpochLogged && snap?.etaSeconds !== undefined) {
      this.#firstEpochLogged = true;
      const end = new Date(Date.now() + snap.etaSeconds * 1000);
      this.#log(
        `time:     epoch ${epoch} done after ${formatDuration(snap.elapsedSeconds)}: about ` +
          `${formatDuration(snap.elapsedSeconds + snap.etaSeconds)} for the run, done ≈ ` +
          `${end.toISOString().slice(11, 16)} UTC`,
      );
    }
  }

  #newClock(): ProgressClock {
    const plan = planRun(this.config, this.#epoch, this.parts.sampler.numSteps);
    return new ProgressClock(plan, this.config.train.epochs - this.#epoch);
  }

  async #metric(record: Record<string, unknown>): Promise<void> {
    await this.#folder.appendMetric(record);
  }

  #checkpointDir(): string {
    return this.#folder.checkpointsDir;
  }

  async #configHash(): Promise<string> {
    const { checkpoint: _c, ...rest } = this.config;
    return await hashConfig(rest);
  }

  /** Write a checkpoint of the current state; returns its folder. */
  async saveCheckpoint(interrupted = false): Promise<string> {
    const ckpt: Checkpoint = {
      state: {
        version: 1,
        step: this.#step,
        epoch: this.#epoch,
        lr: this.#lastLr,
        tracker: this.#tracker.getState(),
        rng: this.#rng.state(),
        configHash: await this.#configHash(),
        interrupted,
        savedAt: new Date().toISOString(),
      },
      weights: await snapshotVariables(this.#variables),
      optimizer: await this.parts.optimizer.getState(),
      pipeline: this.config,
    };
    ckpt.state.lora = {
      encoder: this.config.encoder.use,
      options: this.parts.encoderOptions ?? this.config.encoder.options,
      model: this.config.model,
      layout: Object.fromEntries(Object.entries(ckpt.weights).map(([k, w]) => [k, w.shape])),
    };
    return await this.#folder.saveCheckpoint(ckpt, this.config.checkpoint.keep);
  }

  /**
   * Restore the newest intact checkpoint of the output folder (a damaged newer one is skipped
   * with a warning) and drop metrics rows written past it; returns its path or null.
   */
  async restoreLatest(): Promise<string | null> {
    // (A damaged checkpoint skipped here was reported by the run folder's preflight.)
    const hit = await this.#folder.latestCheckpoint();
    const dropped = await this.#folder.truncateMetrics(
      hit ? { epoch: hit.checkpoint.state.epoch, step: hit.checkpoint.state.step } : null,
    );
    if (dropped) {
      this.#log(`metrics.jsonl: dropped ${dropped} row(s) written after the checkpoint`);
    }
    if (!hit) return null;
    const { path, checkpoint: c } = hit;
    restoreVariables(this.#variables, c.weights, path);
    this.parts.optimizer.setState(c.optimizer);
    this.#tracker.setState(c.state.tracker);
    this.#rng = Rng.fromState(c.state.rng);
    this.#step = c.state.step;
    this.#epoch = c.state.epoch;
    this.#lastLr = c.state.lr;
    return path;
  }

  /** Run the remaining epochs. */
  async run(): Promise<TrainResult> {
    const cfg = this.config;
    let checkpoint = "";
    const resume = this.#opts.resume || cfg.checkpoint.resume;
    // Never touch another run's files: the folder policy is decided before anything is written.
    if (!this.#folder.plan) {
      this.#folder = await RunFolder.open(cfg, {
        resume,
        force: this.#opts.force,
        warn: (l) => this.#log(l),
        runInfo: this.#opts.runInfo,
      }, this.#opts.saveImages);
    }
    if (this.#folder.plan!.existing) {
      const p = await this.restoreLatest();
      if (p) {
        checkpoint = p;
        this.#log(`resumed from ${p} (epoch ${this.#epoch}, step ${this.#step})`);
      } else {
        this.#log(`no checkpoint in ${this.#checkpointDir()}; starting fresh`);
      }
    }
    const rewardMeans: number[] = [];
    this.#clock = this.#newClock();
    const signal = this.#opts.signal;
    let interrupted = false;
    try {
      try {
        if (
          cfg.eval && this.#epoch === 0 && this.#step === 0 &&
          !(await this.#folder.hasEvalRow("before"))
        ) await this.evaluate("before");
        while (this.#epoch < cfg.train.epochs) {
          if (signal?.aborted) {
            interrupted = true;
            break;
          }
          const stats = await this.#runEpoch();
          if (stats === null) {
            interrupted = true;
            break;
          }
          rewardMeans.push(stats);
          this.#epoch++;
          if (cfg.eval && this.#epoch % cfg.eval.every === 0) {
            await this.evaluate(`epoch-${this.#epoch}`);
          }
          if (this.#epoch % cfg.checkpoint.every === 0 || this.#epoch === cfg.train.epochs) {
            await faultPoint("metrics-written");
            this.#emit("checkpoint", this.#epoch);
            checkpoint = await this.saveCheckpoint();
          }
        }
      } catch (e) {
        // The sampler (or a reward) may stop with the signal's reason mid-batch.
        if (!signal?.aborted) throw e;
        interrupted = true;
      }
      if (interrupted) {
        // Epochs count only completed ones, so a resumed run repeats the interrupted epoch. When
        // no optimizer step was taken since the last checkpoint, that one already says it all
        // (and is never replaced in place).
        const last = await this.#folder.latestCheckpoint();
        checkpoint = last && last.checkpoint.state.step === this.#step
          ? last.path
          : await this.saveCheckpoint(true);
        this.#log(`interrupted: checkpoint written to ${checkpoint}`);
      }
    } finally {
      this.#emit("done", this.#epoch);
    }
    return {
      outputDir: cfg.output.dir,
      checkpoint,
      steps: this.#step,
      epochs: this.#epoch,
      interrupted,
      rewardMeans,
    };
  }

  /** Sample a batch of prompts with the current encoder (no gradients). */
  async #sampleBatch(prompts: string[], seed: number): Promise<{
    latents: Tensor5D;
    logProbs: Tensor2D;
    images: Tensor4D;
  }> {
    const negative = prompts.map(() => this.config.sampler.negativePrompt);
    const cond: Conditioning = tf.tidy(() => ({
      prompt: this.parts.encoder.encode(prompts),
      negative: this.parts.encoder.encode(negative),
    }));
    try {
      const traj = await this.parts.sampler.sample(cond, { seed, signal: this.#opts.signal });
      return { latents: traj.latents, logProbs: traj.logProbs, images: traj.images };
    } finally {
      cond.prompt.dispose();
      cond.negative.dispose();
    }
  }

  async #score(images: Tensor4D, prompts: string[]): Promise<{
    total: number[];
    components: Record<string, number[]>;
  }> {
    const total = prompts.map(() => 0);
    const components: Record<string, number[]> = {};
    for (const term of this.parts.rewards) {
      let scores: number[];
      try {
        scores = await term.reward.score({ images, prompts });
      } catch (e) {
        throw new TrainingError(
          `reward '${term.name}' failed on prompts ${JSON.stringify(prompts)}: ${
            (e as Error).message
          }`,
        );
      }
      if (scores.length !== prompts.length) {
        throw new TrainingError(
          `reward '${term.name}' returned ${scores.length} scores for ${prompts.length} images`,
        );
      }
      scores.forEach((s, i) => {
        if (!Number.isFinite(s)) {
          throw new TrainingError(
            `reward '${term.name}' returned ${s} for prompt ${JSON.stringify(prompts[i])}`,
          );
        }
        total[i] += term.weight * s;
      });
      components[term.name] = scores;
    }
    return { total, components };
  }

  /** One epoch; returns the mean reward, or null when interrupted. */
  async #runEpoch(): Promise<number | null> {
    const cfg = this.config;
    const signal = this.#opts.signal;
    const epoch = this.#epoch;
    const times = { sampling: 0, rewards: 0, training: 0 };
    // Sampling and scoring.
    const batches: Samples[] = [];
    const nb = cfg.train.batchesPerEpoch;
    try {
      for (let b = 0; b < nb; b++) {
        if (signal?.aborted) return null;
        this.#emit("sampling", epoch + 1, b, nb);
        const prompts = Array.from(
          { length: cfg.sampler.batchSize },
          () => this.parts.prompts[this.#rng.int(this.parts.prompts.length)],
        );
        const seed = this.#rng.nextU32();
        await faultPoint("sampling");
        const tBatch = performance.now();
        let t0 = tBatch;
        const s = await this.#sampleBatch(prompts, seed);
        times.sampling += performance.now() - t0;
        t0 = performance.now();
        this.#emit("rewards", epoch + 1, b, nb);
        let scored;
        try {
          await faultPoint("scoring");
          scored = await this.#score(s.images, prompts);
        } catch (e) {
          s.latents.dispose();
          s.logProbs.dispose();
          throw e;
        } finally {
          times.rewards += performance.now() - t0;
        }
        this.#clock?.finished("batch", (performance.now() - tBatch) / 1000, prompts.length);
        if (b === 0 && cfg.output.saveImages && this.#folder.imageWriter) {
          const caps = prompts.map((p, i) => `${p} | ${scored.total[i].toFixed(4)}`);
          await this.#folder.saveEpochImages(epoch + 1, s.images, caps);
        }
        s.images.dispose();
        batches.push({
          prompts,
          latents: s.latents,
          logProbs: s.logProbs,
          rewards: scored.total,
          components: scored.components,
        });
      }
      const prompts = batches.flatMap((b) => b.prompts);
      const rewards = batches.flatMap((b) => b.rewards);
      const advantages = cfg.train.perPromptTracking.enabled
        ? this.#tracker.update(prompts, rewards)
        : normalizeAdvantages(rewards);
      const rewardStats = meanStd(rewards);
      const record: Record<string, unknown> = {
        type: "epoch",
        epoch: epoch + 1,
        step: 0,
        reward_mean: rewardStats.mean,
        reward_std: rewardStats.std,
      };
      for (const term of this.parts.rewards) {
        const st = meanStd(batches.flatMap((b) => b.components[term.name]));
        record[`reward_${term.name}_mean`] = st.mean;
        record[`reward_${term.name}_std`] = st.std;
      }
      // Training.
      const t0 = performance.now();
      const latents = tf.concat(batches.map((b) => b.latents)) as Tensor5D;
      const logProbs = tf.concat(batches.map((b) => b.logProbs)) as Tensor2D;
      try {
        const ok = await this.#trainOnSamples(prompts, latents, logProbs, advantages);
        times.training = performance.now() - t0;
        record.seconds_sampling = times.sampling / 1000;
        record.seconds_rewards = times.rewards / 1000;
        record.seconds_training = times.training / 1000;
        record.step = this.#step;
        await this.#metric(record);
        this.#logEpoch(epoch + 1, rewardStats, times, record);
        return ok ? rewardStats.mean : null;
      } finally {
        latents.dispose();
        logProbs.dispose();
      }
    } finally {
      for (const b of batches) {
        b.latents.dispose();
        b.logProbs.dispose();
      }
    }
  }

  /** PPO passes over one epoch's samples; false when interrupted. */
  async #trainOnSamples(
    prompts: string[],
    latents: Tensor5D,
    logProbs: Tensor2D,
    advantages: number[],
  ): Promise<boolean> {
    const cfg = this.config;
    const t = cfg.train;
    const n = prompts.length;
    const steps = this.parts.sampler.numSteps;
    const numTrain = Math.max(1, Math.floor(steps * t.timestepFraction));
    const acc = new GradientAccumulator();
    const diag = { loss: 0, kl: 0, clip: 0, count: 0 };
    const minibatches = Math.ceil(n / t.batchSize);
    let done = 0;
    const total = t.innerEpochs * minibatches * numTrain;
    try {
      for (let inner = 0; inner < t.innerEpochs; inner++) {
        const perm = this.#rng.permutation(n);
        for (let mb = 0; mb < minibatches; mb++) {
          const idx = perm.slice(mb * t.batchSize, (mb + 1) * t.batchSize);
          // One random subset of timesteps per minibatch (shared by its samples, so the UNet
          // runs batched).
          const js = this.#rng.permutation(steps).slice(0, numTrain);
          const mbPrompts = idx.map((i) => prompts[i]);
          const idxT = tf.tensor1d(idx, "int32");
          const adv = tf.tensor1d(idx.map((i) => advantages[i]));
          try {
            for (const j of js) {
              if (this.#opts.signal?.aborted) return false;
              await faultPoint("training");
              this.#emit("training", this.#epoch + 1, done, total);
              const tPass = performance.now();
              const r = await this.ppoGradients(mbPrompts, latents, logProbs, idxT, adv, j);
              this.#clock?.finished("pass", (performance.now() - tPass) / 1000);
              diag.loss += r.loss;
              diag.kl += r.approxKl;
              diag.clip += r.clipFraction;
              diag.count++;
              acc.add(r.grads);
              done++;
            }
          } finally {
            idxT.dispose();
            adv.dispose();
          }
          const last = mb === minibatches - 1;
          if ((mb + 1) % t.gradientAccumulation === 0 || last) {
            await this.#optimizerStep(acc, diag);
            diag.loss =
              diag.kl =
              diag.clip =
              diag.count =
                0;
          }
        }
      }
    } finally {
      acc.dispose();
    }
    return true;
  }

  /** Loss and gradients of one PPO pass over minibatch `indices` at step index `j`. */
  async ppoGradients(
    prompts: string[],
    latents: Tensor5D,
    logProbs: Tensor2D,
    indices: Tensor1D,
    advantages: Tensor1D,
    j: number,
  ): Promise<PpoGradients> {
    const [x, next, old] = tf.tidy(() => {
      const sel = tf.gather(latents, indices);
      const [b, , h, w, c] = sel.shape;
      return [
        sel.slice([0, j, 0, 0, 0], [b, 1, h, w, c]).reshape([b, h, w, c]) as Tensor4D,
        sel.slice([0, j + 1, 0, 0, 0], [b, 1, h, w, c]).reshape([b, h, w, c]) as Tensor4D,
        tf.gather(logProbs, indices).slice([0, j], [b, 1]).reshape([b]) as Tensor1D,
      ];
    });
    try {
      return await ppoGradients(this.parts.encoder, this.parts.sampler, this.#variables, {
        prompt: prompts,
        negative: prompts.map(() => this.config.sampler.negativePrompt),
        latent: x,
        next,
        oldLogProb: old,
        advantages,
        stepIndex: j,
      }, this.config.train);
    } finally {
      x.dispose();
      next.dispose();
      old.dispose();
    }
  }

  async #optimizerStep(
    acc: GradientAccumulator,
    diag: { loss: number; kl: number; clip: number; count: number },
  ): Promise<void> {
    const grads = acc.take();
    try {
      const norm = await clipGlobalNorm(grads, this.config.optimizer.maxGradNorm);
      const loss = diag.loss / Math.max(1, diag.count);
      if (!Number.isFinite(loss) || !Number.isFinite(norm)) {
        throw new TrainingError(
          `non-finite ${
            !Number.isFinite(loss) ? `loss (${loss})` : `gradient norm (${norm})`
          } at ` +
            `step ${this.#step + 1} (epoch ${
              this.#epoch + 1
            }); the last good checkpoint is kept in ` +
            `${this.#checkpointDir()}. Lower the learning rate or check the rewards.`,
        );
      }
      const lr = this.#lr();
      this.parts.optimizer.step(grads, lr);
      this.#lastLr = lr;
      this.#step++;
      this.#log(
        `step ${this.#step}: loss ${loss.toExponential(3)}, approx KL ${
          (diag.kl / Math.max(1, diag.count)).toExponential(2)
        }, clip fraction ${(diag.clip / Math.max(1, diag.count)).toFixed(3)}, lr ${
          lr.toExponential(2)
        }, grad norm ${norm.toExponential(3)}`,
        "detail",
      );
      await this.#metric({
        type: "train",
        epoch: this.#epoch + 1,
        step: this.#step,
        loss,
        approx_kl: diag.kl / Math.max(1, diag.count),
        clipfrac: diag.clip / Math.max(1, diag.count),
        lr,
        grad_norm: norm,
      });
    } finally {
      for (const g of grads.values()) g.dispose();
    }
  }

  /** Sample the eval prompts at the eval seeds, score them, save a grid and a metrics line. */
  async evaluate(label: string): Promise<number[]> {
    const ev = this.config.eval;
    if (!ev) return [];
    const scores: number[] = [];
    const captions: string[] = [];
    const images: Tensor4D[] = [];
    try {
      for (const [k, seed] of ev.seeds.entries()) {
        this.#emit("eval", this.#epoch, k, ev.seeds.length);
        const tEval = performance.now();
        const s = await this.#sampleBatch(ev.prompts, seed);
        s.latents.dispose();
        s.logProbs.dispose();
        const r = await this.#score(s.images, ev.prompts);
        scores.push(...r.total);
        captions.push(
          ...ev.prompts.map((p, i) => `${p} | seed ${seed} | ${r.total[i].toFixed(4)}`),
        );
        images.push(s.images);
        this.#clock?.finished("eval", (performance.now() - tEval) / 1000, ev.prompts.length);
      }
      if (this.config.output.saveImages && this.#folder.imageWriter) {
        const all = tf.concat(images) as Tensor4D;
        try {
          await this.#folder.saveEvalImages(label, all, captions);
        } finally {
          all.dispose();
        }
      }
    } finally {
      for (const im of images) im.dispose();
    }
    const st = meanStd(scores);
    this.#log(
      `eval ${label}: held-out reward ${st.mean.toFixed(4)} ± ` +
        `${(st.std / Math.sqrt(Math.max(1, scores.length))).toFixed(4)} (standard error, ` +
        `${scores.length} images)`,
      "detail",
    );
    await this.#metric({
      type: "eval",
      label,
      epoch: this.#epoch,
      step: this.#step,
      reward_mean: st.mean,
      rewards: scores,
      prompts: ev.prompts,
      seeds: ev.seeds,
      captions,
    });
    return scores;
  }
}
