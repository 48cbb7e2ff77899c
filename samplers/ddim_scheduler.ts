/**
 * The DDIM scheduler of diffusers (`DDIMScheduler`), plus the log-probability of a DDIM step
 * that DDPO/TexForce's policy gradient needs (`ddim_step_with_logprob`).
 *
 * Tensors are NHWC; the per-timestep coefficients are host numbers, so a step is a handful of
 * element-wise ops and the log-prob stays differentiable with respect to the model output.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import { readJsonFile } from "../core/io/model_folder.ts";
import type { Tensor, Tensor1D } from "../core/tensor_types.ts";

/**
 * How the model's output is read.
 *
 * @example
 * ```ts
 * import type { PredictionType } from "@texforce/core/samplers";
 * const p: PredictionType = "v_prediction"; // SD 2.x 768
 * ```
 */
export type PredictionType = "epsilon" | "v_prediction" | "sample";
/**
 * How betas are laid out over the training timesteps.
 *
 * @example
 * ```ts
 * import type { BetaSchedule } from "@texforce/core/samplers";
 * const b: BetaSchedule = "scaled_linear"; // Stable Diffusion
 * ```
 */
export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";
/**
 * How inference timesteps are picked among the training ones.
 *
 * @example
 * ```ts
 * import type { TimestepSpacing } from "@texforce/core/samplers";
 * const s: TimestepSpacing = "leading"; // SD 1.x
 * ```
 */
export type TimestepSpacing = "leading" | "trailing" | "linspace";

/**
 * The validated fields of a `scheduler_config.json` that DDIM uses.
 *
 * @example
 * ```ts
 * import { type DdimSchedulerConfig, parseDdimSchedulerConfig } from "@texforce/core/samplers";
 * const c: DdimSchedulerConfig = parseDdimSchedulerConfig({ steps_offset: 1 });
 * console.log(c.stepsOffset);
 * ```
 */
export interface DdimSchedulerConfig {
  /** Training timesteps N (1000). */
  numTrainTimesteps: number;
  /** First beta. */
  betaStart: number;
  /** Last beta. */
  betaEnd: number;
  /** Beta schedule. */
  betaSchedule: BetaSchedule;
  /** Explicit betas (overrides the schedule). */
  trainedBetas: number[] | null;
  /** Clamp the predicted x₀ to ±clipSampleRange. */
  clipSample: boolean;
  /** Range of that clamp. */
  clipSampleRange: number;
  /** Use ᾱ = 1 after the last step (else ᾱ₀). */
  setAlphaToOne: boolean;
  /** Offset added to `leading` timesteps. */
  stepsOffset: number;
  /** What the model predicts. */
  predictionType: PredictionType;
  /** Timestep spacing. */
  timestepSpacing: TimestepSpacing;
  /** Rescale betas to zero terminal SNR. */
  rescaleBetasZeroSnr: boolean;
}

// DDIMScheduler's own defaults: a config written for another scheduler class (SD 1.5 ships
// PNDMScheduler's) is read the way `DDIMScheduler.from_config` reads it.
const CONFIG_DEFAULTS: DdimSchedulerConfig = {
  numTrainTimesteps: 1000,
  betaStart: 0.0001,
  betaEnd: 0.02,
  betaSchedule: "linear",
  trainedBetas: null,
  clipSample: true,
  clipSampleRange: 1,
  setAlphaToOne: true,
  stepsOffset: 0,
  predictionType: "epsilon",
  timestepSpacing: "leading",
  rescaleBetasZeroSnr: false,
};

/**
 * Validate a raw scheduler config; unsupported values throw an error naming `file` and the field.
 *
 * @example
 * ```ts
 * import { parseDdimSchedulerConfig } from "@texforce/core/samplers";
 * const c = parseDdimSchedulerConfig({ beta_schedule: "scaled_linear" }, "scheduler_config.json");
 * console.log(c.betaSchedule);
 * ```
 */
export function parseDdimSchedulerConfig(
  raw: Record<string, unknown>,
  file = "scheduler_config.json",
): DdimSchedulerConfig {
  const bad = (field: string, why: string): Error =>
    new Error(`${file}: field '${field}' = ${JSON.stringify(raw[field])} ${why}`);
  const num = (field: string, def: number, int = false): number => {
    const v = raw[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== "number" || !Number.isFinite(v) || (int && !Number.isInteger(v))) {
      throw bad(field, `is not ${int ? "an integer" : "a number"}`);
    }
    return v;
  };
  const bool = (field: string, def: boolean): boolean => {
    const v = raw[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== "boolean") throw bad(field, "is not a boolean");
    return v;
  };
  const oneOf = <T extends string>(field: string, def: T, allowed: readonly T[]): T => {
    const v = raw[field];
    if (v === undefined || v === null) return def;
    if (!allowed.includes(v as T)) {
      throw bad(field, `is not supported (supported: ${allowed.join(", ")})`);
    }
    return v as T;
  };
  if (raw.thresholding === true) {
    throw bad("thresholding", "is not supported (dynamic thresholding; set it to false)");
  }
  const d = CONFIG_DEFAULTS;
  const numTrainTimesteps = num("num_train_timesteps", d.numTrainTimesteps, true);
  if (numTrainTimesteps < 2) throw bad("num_train_timesteps", "must be at least 2");
  let trainedBetas: number[] | null = null;
  if (raw.trained_betas !== undefined && raw.trained_betas !== null) {
    const tb = raw.trained_betas;
    if (
      !Array.isArray(tb) || tb.length !== numTrainTimesteps || tb.some((x) => typeof x !== "number")
    ) {
      throw bad("trained_betas", `must be null or ${numTrainTimesteps} numbers`);
    }
    trainedBetas = tb as number[];
  }
  return {
    numTrainTimesteps,
    betaStart: num("beta_start", d.betaStart),
    betaEnd: num("beta_end", d.betaEnd),
    betaSchedule: oneOf("beta_schedule", d.betaSchedule, [
      "linear",
      "scaled_linear",
      "squaredcos_cap_v2",
    ]),
    trainedBetas,
    clipSample: bool("clip_sample", d.clipSample),
    clipSampleRange: num("clip_sample_range", d.clipSampleRange),
    setAlphaToOne: bool("set_alpha_to_one", d.setAlphaToOne),
    stepsOffset: num("steps_offset", d.stepsOffset, true),
    predictionType: oneOf("prediction_type", d.predictionType, [
      "epsilon",
      "v_prediction",
      "sample",
    ]),
    timestepSpacing: oneOf("timestep_spacing", d.timestepSpacing, [
      "leading",
      "trailing",
      "linspace",
    ]),
    rescaleBetasZeroSnr: bool("rescale_betas_zero_snr", d.rescaleBetasZeroSnr),
  };
}

const f32 = Math.fround;

/** linspace in float32, as torch.linspace writes it (first half from start, second from end). */
function linspaceF32(start: number, end: number, n: number): number[] {
  const step = (end - start) / (n - 1);
  const half = Math.floor(n / 2);
  return Array.from(
    { length: n },
    (_, i) => f32(i < half ? start + step * i : end - step * (n - 1 - i)),
  );
}

function computeBetas(c: DdimSchedulerConfig): number[] {
  if (c.trainedBetas) return c.trainedBetas.map(f32);
  const n = c.numTrainTimesteps;
  switch (c.betaSchedule) {
    case "linear":
      return linspaceF32(c.betaStart, c.betaEnd, n);
    case "scaled_linear":
      return linspaceF32(Math.sqrt(c.betaStart), Math.sqrt(c.betaEnd), n).map((b) => f32(b * b));
    case "squaredcos_cap_v2": {
      // betas_for_alpha_bar with the cosine ᾱ(t) of Nichol & Dhariwal, capped at 0.999.
      const abar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
      return Array.from(
        { length: n },
        (_, i) => f32(Math.min(1 - abar((i + 1) / n) / abar(i / n), 0.999)),
      );
    }
  }
}

/** rescale_zero_terminal_snr (Lin et al. 2023): shift √ᾱ so the last step has zero SNR. */
function rescaleZeroTerminalSnr(betas: number[]): number[] {
  const n = betas.length;
  const sqrtAbar: number[] = [];
  let prod = 1;
  for (const b of betas) {
    prod = f32(prod * f32(1 - b));
    sqrtAbar.push(Math.sqrt(prod));
  }
  const first = sqrtAbar[0];
  const last = sqrtAbar[n - 1];
  const scaled = sqrtAbar.map((s) => ((s - last) * first) / (first - last));
  const abar = scaled.map((s) => s * s);
  return abar.map((a, i) => f32(1 - (i === 0 ? a : a / abar[i - 1])));
}

/**
 * Options of {@linkcode DdimScheduler.step}.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import type { DdimStepOptions } from "@texforce/core/samplers";
 * const o: DdimStepOptions = { eta: 1, noise: tf.randomNormal([1, 64, 64, 4]) };
 * ```
 */
export interface DdimStepOptions {
  /** η: 0 is deterministic DDIM, 1 is DDPM-like ancestral sampling. */
  eta?: number;
  /** Variance noise [B, H, W, C] (needed when eta > 0). */
  noise?: Tensor;
}

/**
 * Result of {@linkcode DdimScheduler.step}.
 *
 * @example
 * ```ts
 * import type { DdimStepResult } from "@texforce/core/samplers";
 * declare const r: DdimStepResult;
 * console.log(r.prevSample.shape);
 * ```
 */
export interface DdimStepResult {
  /** x_{t-1}. */
  prevSample: Tensor;
  /** The predicted x₀. */
  predOriginalSample: Tensor;
}

/**
 * Options of {@linkcode DdimScheduler.stepWithLogProb}.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import type { DdimLogProbStepOptions } from "@texforce/core/samplers";
 * const o: DdimLogProbStepOptions = { eta: 1, prevSample: tf.zeros([1, 64, 64, 4]) };
 * ```
 */
export interface DdimLogProbStepOptions extends DdimStepOptions {
  /** A given x_{t-1} (its log-prob is computed instead of drawing one). */
  prevSample?: Tensor;
}

/**
 * Result of {@linkcode DdimScheduler.stepWithLogProb}.
 *
 * @example
 * ```ts
 * import type { DdimLogProbStepResult } from "@texforce/core/samplers";
 * declare const r: DdimLogProbStepResult;
 * console.log(r.logProb.shape, r.std);
 * ```
 */
export interface DdimLogProbStepResult {
  /** x_{t-1} (the given one, or mean + std · noise). */
  prevSample: Tensor;
  /** Log-density of x_{t-1}, averaged over H, W, C: [B]. */
  logProb: Tensor1D;
  /** Mean of x_{t-1}. */
  mean: Tensor;
  /** Standard deviation η·σ_t (a number: it depends only on t). */
  std: number;
}

const LOG_SQRT_2PI = Math.log(Math.sqrt(2 * Math.PI));

/**
 * A DDIM scheduler built from a diffusers scheduler config.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { DdimScheduler } from "@texforce/core/samplers";
 * const s = DdimScheduler.fromConfig({ beta_schedule: "scaled_linear", beta_start: 0.00085,
 *   beta_end: 0.012, steps_offset: 1, set_alpha_to_one: false, clip_sample: false });
 * const ts = s.setTimesteps(10); // [901, 801, …, 1]
 * const x = tf.randomNormal([1, 8, 8, 4]);
 * const eps = tf.randomNormal([1, 8, 8, 4]);
 * const { prevSample, logProb } = s.stepWithLogProb(eps, ts[0], x, { eta: 1, noise: tf.randomNormal([1, 8, 8, 4]) });
 * ```
 */
export class DdimScheduler {
  /** The validated config. */
  readonly config: DdimSchedulerConfig;
  /** β per training timestep (float32 values). */
  readonly betas: Float32Array;
  /** ᾱ per training timestep (float32 cumulative product, as torch computes it). */
  readonly alphasCumprod: Float32Array;
  /** ᾱ used after the last timestep. */
  readonly finalAlphaCumprod: number;
  #timesteps: number[] = [];
  #numInferenceSteps = 0;

  /** Build from a validated config (see {@linkcode parseDdimSchedulerConfig}). */
  constructor(config: DdimSchedulerConfig) {
    this.config = config;
    let betas = computeBetas(config);
    if (config.rescaleBetasZeroSnr) betas = rescaleZeroTerminalSnr(betas);
    this.betas = Float32Array.from(betas);
    this.alphasCumprod = new Float32Array(betas.length);
    let prod = 1;
    for (let i = 0; i < betas.length; i++) {
      prod = f32(prod * f32(1 - betas[i]));
      this.alphasCumprod[i] = prod;
    }
    // Zero terminal SNR makes ᾱ_T exactly 0; diffusers nudges it to keep 1/√ᾱ finite.
    if (config.rescaleBetasZeroSnr) this.alphasCumprod[betas.length - 1] = f32(2 ** -24);
    this.finalAlphaCumprod = config.setAlphaToOne ? 1 : this.alphasCumprod[0];
  }

  /**
   * Build from a raw `scheduler_config.json` object; `file` names it in errors.
   *
   * @example
   * ```ts
   * import { DdimScheduler } from "@texforce/core/samplers";
   * const s = DdimScheduler.fromConfig({ prediction_type: "v_prediction" });
   * ```
   */
  static fromConfig(raw: Record<string, unknown>, file?: string): DdimScheduler {
    return new DdimScheduler(parseDdimSchedulerConfig(raw, file));
  }

  /**
   * Load from a `scheduler_config.json` file, a `scheduler/` folder or a pipeline folder.
   *
   * @example
   * ```ts
   * import { DdimScheduler } from "@texforce/core/samplers";
   * const s = await DdimScheduler.load("stable-diffusion-v1-5");
   * ```
   */
  static async load(path: string): Promise<DdimScheduler> {
    const candidates = path.endsWith(".json")
      ? [path]
      : [join(path, "scheduler_config.json"), join(path, "scheduler", "scheduler_config.json")];
    for (const file of candidates) {
      try {
        if (!(await Deno.stat(file)).isFile) continue;
      } catch {
        continue;
      }
      return DdimScheduler.fromConfig(await readJsonFile(file), file);
    }
    throw new Error(`${path}: no scheduler config found (looked for ${candidates.join(", ")})`);
  }

  /** Timesteps of the last {@linkcode setTimesteps}, from noisiest to cleanest. */
  get timesteps(): number[] {
    return [...this.#timesteps];
  }

  /** Number of inference steps of the last {@linkcode setTimesteps}. */
  get numInferenceSteps(): number {
    return this.#numInferenceSteps;
  }

  /**
   * Choose `n` inference timesteps with the config's spacing; returns them (noisiest first).
   *
   * @example
   * ```ts
   * import { DdimScheduler } from "@texforce/core/samplers";
   * console.log(DdimScheduler.fromConfig({ steps_offset: 1 }).setTimesteps(4)); // [751, 501, 251, 1]
   * ```
   */
  setTimesteps(n: number): number[] {
    const N = this.config.numTrainTimesteps;
    if (!Number.isInteger(n) || n < 1 || n > N) {
      throw new RangeError(
        `setTimesteps(${n}): the number of steps must be an integer in [1, ${N}]`,
      );
    }
    let ts: number[];
    switch (this.config.timestepSpacing) {
      case "linspace":
        ts = Array.from(
          { length: n },
          (_, i) => roundHalfEven(n === 1 ? 0 : i * ((N - 1) / (n - 1))),
        )
          .reverse();
        break;
      case "leading": {
        const ratio = Math.floor(N / n);
        ts = Array.from({ length: n }, (_, i) => i * ratio + this.config.stepsOffset).reverse();
        break;
      }
      case "trailing": {
        const ratio = N / n;
        // np.arange(N, 0, -ratio) has ceil(N / ratio) = n elements, each start + i · step.
        ts = Array.from({ length: n }, (_, i) => roundHalfEven(N + i * -ratio) - 1);
        break;
      }
    }
    this.#timesteps = ts;
    this.#numInferenceSteps = n;
    return [...ts];
  }

  #requireSteps(): number {
    if (!this.#numInferenceSteps) throw new Error("DdimScheduler: call setTimesteps(n) first");
    return this.#numInferenceSteps;
  }

  /**
   * The timestep after `t`: diffusers' t − N/n (may be negative: then ᾱ is the final one), or,
   * with `clamp` (DDPO), clamped to [0, N−1].
   *
   * @example
   * ```ts
   * import { DdimScheduler } from "@texforce/core/samplers";
   * const s = DdimScheduler.fromConfig({});
   * s.setTimesteps(10);
   * console.log(s.prevTimestep(0, true)); // 0
   * ```
   */
  prevTimestep(t: number, clamp = false): number {
    const N = this.config.numTrainTimesteps;
    const prev = t - Math.floor(N / this.#requireSteps());
    return clamp ? Math.min(Math.max(prev, 0), N - 1) : prev;
  }

  #alpha(t: number): number {
    if (t < 0) return this.finalAlphaCumprod;
    if (!Number.isInteger(t) || t >= this.alphasCumprod.length) {
      throw new RangeError(`timestep ${t} is outside [0, ${this.alphasCumprod.length - 1}]`);
    }
    return this.alphasCumprod[t];
  }

  /** Predicted x₀ and ε from the model output (tensors; caller's tidy owns them). */
  #predict(modelOutput: Tensor, sample: Tensor, alphaT: number): [Tensor, Tensor] {
    const betaT = 1 - alphaT;
    const sa = Math.sqrt(alphaT);
    const sb = Math.sqrt(betaT);
    let x0: Tensor;
    let eps: Tensor;
    switch (this.config.predictionType) {
      case "epsilon":
        x0 = tf.div(tf.sub(sample, tf.mul(modelOutput, sb)), sa);
        eps = modelOutput;
        break;
      case "sample":
        x0 = modelOutput;
        eps = tf.div(tf.sub(sample, tf.mul(x0, sa)), sb);
        break;
      case "v_prediction":
        x0 = tf.sub(tf.mul(sample, sa), tf.mul(modelOutput, sb));
        eps = tf.add(tf.mul(modelOutput, sa), tf.mul(sample, sb));
        break;
    }
    if (this.config.clipSample) {
      const r = this.config.clipSampleRange;
      x0 = tf.clipByValue(x0, -r, r);
    }
    return [x0, eps];
  }

  #stdAndMean(
    modelOutput: Tensor,
    t: number,
    sample: Tensor,
    eta: number,
    clampPrev: boolean,
  ): { x0: Tensor; mean: Tensor; std: number } {
    const alphaT = this.#alpha(t);
    const alphaPrev = this.#alpha(this.prevTimestep(t, clampPrev));
    const [x0, eps] = this.#predict(modelOutput, sample, alphaT);
    const variance = ((1 - alphaPrev) / (1 - alphaT)) * (1 - alphaT / alphaPrev);
    const std = eta * Math.sqrt(variance);
    const dirCoef = Math.sqrt(Math.max(1 - alphaPrev - std * std, 0));
    const mean = tf.add(tf.mul(x0, Math.sqrt(alphaPrev)), tf.mul(eps, dirCoef));
    return { x0, mean, std };
  }

  /**
   * One DDIM step with diffusers' semantics (`DDIMScheduler.step`, prev timestep t − N/n).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import { DdimScheduler } from "@texforce/core/samplers";
   * const s = DdimScheduler.fromConfig({});
   * const [t] = s.setTimesteps(10);
   * const x = tf.randomNormal([1, 4, 4, 4]);
   * const { prevSample } = s.step(tf.zerosLike(x), t, x, { eta: 0 });
   * ```
   */
  step(
    modelOutput: Tensor,
    timestep: number,
    sample: Tensor,
    options: DdimStepOptions = {},
  ): DdimStepResult {
    const eta = options.eta ?? 0;
    return tf.tidy(() => {
      const { x0, mean, std } = this.#stdAndMean(modelOutput, timestep, sample, eta, false);
      let prev = mean;
      if (eta > 0) {
        if (!options.noise) throw new Error("DdimScheduler.step: eta > 0 needs options.noise");
        prev = tf.add(mean, tf.mul(options.noise, std));
      }
      return { prevSample: prev, predOriginalSample: x0 };
    });
  }

  /**
   * One DDIM step in DDPO's formulation (prev timestep clamped to [0, N−1]) with the log-density
   * of x_{t-1} under N(mean, std²), averaged over all axes but the batch. Needs eta > 0.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import { DdimScheduler } from "@texforce/core/samplers";
   * const s = DdimScheduler.fromConfig({});
   * const [t] = s.setTimesteps(10);
   * const x = tf.randomNormal([2, 4, 4, 4]);
   * const r = s.stepWithLogProb(tf.zerosLike(x), t, x, { eta: 1, noise: tf.randomNormal(x.shape) });
   * console.log(r.logProb.shape); // [2]
   * ```
   */
  stepWithLogProb(
    modelOutput: Tensor,
    timestep: number,
    sample: Tensor,
    options: DdimLogProbStepOptions = {},
  ): DdimLogProbStepResult {
    const eta = options.eta ?? 1;
    if (!(eta > 0)) throw new RangeError("DdimScheduler.stepWithLogProb: eta must be > 0");
    let std = 0;
    const out = tf.tidy(() => {
      const r = this.#stdAndMean(modelOutput, timestep, sample, eta, true);
      std = r.std;
      let prev = options.prevSample;
      if (!prev) {
        if (!options.noise) {
          throw new Error(
            "DdimScheduler.stepWithLogProb: give options.noise or options.prevSample",
          );
        }
        prev = tf.add(r.mean, tf.mul(options.noise, r.std));
      }
      const logProb = gaussianLogProb(prev, r.mean, r.std);
      return { prevSample: options.prevSample ? tf.clone(prev) : prev, logProb, mean: r.mean };
    });
    return { ...out, std };
  }

  /**
   * Differentiable log-prob [B] of `prevSample` given the model output at `sample`, timestep
   * `timestep` (DDPO's formulation; gradients flow into `modelOutput`).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import { DdimScheduler } from "@texforce/core/samplers";
   * const s = DdimScheduler.fromConfig({});
   * const [t] = s.setTimesteps(10);
   * const x = tf.randomNormal([2, 4, 4, 4]);
   * const lp = s.logProb(tf.zerosLike(x), x, t, tf.randomNormal(x.shape), 1);
   * ```
   */
  logProb(
    modelOutput: Tensor,
    sample: Tensor,
    timestep: number,
    prevSample: Tensor,
    eta = 1,
  ): Tensor1D {
    if (!(eta > 0)) throw new RangeError("DdimScheduler.logProb: eta must be > 0");
    return tf.tidy(() => {
      const { mean, std } = this.#stdAndMean(modelOutput, timestep, sample, eta, true);
      return gaussianLogProb(prevSample, mean, std);
    });
  }
}

/** mean over non-batch axes of log N(x; mean, std²). */
function gaussianLogProb(x: Tensor, mean: Tensor, std: number): Tensor1D {
  const axes = Array.from({ length: x.rank - 1 }, (_, i) => i + 1);
  const sq = tf.square(tf.sub(x, mean));
  const lp = tf.sub(tf.div(sq, -2 * std * std), Math.log(std) + LOG_SQRT_2PI);
  return tf.mean(lp, axes) as Tensor1D;
}

/** numpy's round (half to even), as used for `trailing` spacing. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
