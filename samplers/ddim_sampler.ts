/**
 * The `ddim` sampler: classifier-free-guided DDIM sampling over a frozen Stable Diffusion model
 * that records every latent and the log-prob of every step (DDPO's formulation), and recomputes
 * a step's log-prob differentiably for the policy-gradient update.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { resolve } from "node:path";
import { z } from "zod";
import { definePlugin, type Plugin, type PluginContext } from "../core/plugin.ts";
import type { Conditioning, SampleOptions, Sampler, Trajectory } from "../core/sampler.ts";
import { DdimScheduler } from "./ddim_scheduler.ts";
import { SeededNoise } from "../core/seeded_noise.ts";
import { loadStableDiffusion, type StableDiffusion } from "./stable_diffusion.ts";
import type {
  Tensor,
  Tensor1D,
  Tensor2D,
  Tensor3D,
  Tensor4D,
  Tensor5D,
} from "../core/tensor_types.ts";

/**
 * Options of the `ddim` sampler.
 *
 * @example
 * ```ts
 * import { ddimSampler, type DdimSamplerOptions } from "@texforce/core/samplers";
 * const o: Partial<DdimSamplerOptions> = { modelPath: "sd15", steps: 50, eta: 1, guidance: 5 };
 * const sampler = await ddimSampler(o);
 * ```
 */
export interface Options {
  /** The diffusers pipeline folder (default: the run's model). */
  modelPath?: string;
  /** Denoising steps T. */
  steps: number;
  /** DDIM η (must be > 0 for log-probs; 1 = DDPO's default). */
  eta: number;
  /** Classifier-free guidance scale (1 = no guidance, a single UNet pass). */
  guidance: number;
  /**
   * Most prompts per UNet call (a larger batch is split; results do not depend on it). Named
   * apart from the pipeline's `sampler.batchSize`, the images per sampling batch.
   */
  unetBatchSize: number;
  /**
   * The former name of `unetBatchSize`, still read by {@linkcode ddimSampler} and the
   * constructor (the plugin's schema takes only `unetBatchSize`).
   *
   * @deprecated Use `unetBatchSize`.
   */
  batchSize?: number;
  /** Default noise seed when `sample` gets none (random when absent). */
  seed?: number;
  /** Latent side (default: the UNet's `sample_size`). */
  latentSize?: number;
  /**
   * Queries per attention chunk, 0 = all at once. Bounds the attention memory at large latents,
   * in sampling and, more so, in `logProb`'s backward pass (the probabilities are recomputed).
   */
  attentionSlice: number;
  /** A UNet LoRA (file or PEFT folder) merged into the UNet at load. */
  unetLora?: string;
  /** Scale of that LoRA. */
  unetLoraScale: number;
  /** Weight variant, e.g. `fp16`. */
  variant?: string;
}

const defaults = {
  steps: 50,
  eta: 1,
  guidance: 5,
  unetBatchSize: 4,
  attentionSlice: 0,
  unetLoraScale: 1,
} satisfies Options;

/**
 * A DDIM sampler over a loaded {@linkcode StableDiffusion}.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { DdimSampler, loadStableDiffusion } from "@texforce/core/samplers";
 * const sampler = new DdimSampler(await loadStableDiffusion("sd15"), { steps: 20 }, true);
 * const prompt = tf.randomNormal([1, 77, 768]) as tf.Tensor3D;
 * const traj = await sampler.sample({ prompt, negative: tf.zerosLike(prompt) }, { seed: 7 });
 * console.log(traj.images.shape); // [1, 512, 512, 3]
 * ```
 */
export class DdimSampler implements Sampler {
  /** Plugin name. */
  readonly name = "ddim";
  /** Resolved options. */
  readonly options: Readonly<Options>;
  /** The frozen model. */
  readonly model: StableDiffusion;
  /** This sampler's scheduler (its timesteps are set to `steps`). */
  readonly scheduler: DdimScheduler;
  /** Timesteps, noisiest first. */
  readonly timesteps: readonly number[];
  #owns: boolean;

  /** Wrap `model`; with `ownsModel`, {@linkcode DdimSampler.dispose} also releases it. */
  constructor(model: StableDiffusion, options: Partial<Options> = {}, ownsModel = false) {
    const { batchSize, ...rest } = stripUndefined(options);
    const o: Options = {
      ...defaults,
      ...(batchSize !== undefined ? { unetBatchSize: batchSize } : {}),
      ...rest,
    };
    if (!Number.isInteger(o.steps) || o.steps < 1) {
      throw new RangeError(`ddim: steps ${o.steps} must be ≥ 1`);
    }
    if (!(o.eta >= 0)) throw new RangeError(`ddim: eta ${o.eta} must be ≥ 0`);
    if (!Number.isInteger(o.unetBatchSize) || o.unetBatchSize < 1) {
      throw new RangeError(`ddim: unetBatchSize ${o.unetBatchSize} must be a positive integer`);
    }
    this.options = o;
    this.model = model;
    this.scheduler = new DdimScheduler(model.schedulerConfig);
    this.timesteps = this.scheduler.setTimesteps(o.steps);
    model.unet.attentionSlice = o.attentionSlice;
    this.#owns = ownsModel;
  }

  /** Number of denoising steps T. */
  get numSteps(): number {
    return this.options.steps;
  }

  /**
   * The guided model output at `latent` [B, H, W, C] and timestep `t`: with guidance g ≠ 1 the
   * UNet runs on the batch [negative; prompt] and ε = ε_u + g · (ε_c − ε_u).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { Conditioning } from "@texforce/core";
   * import type { DdimSampler } from "@texforce/core/samplers";
   * declare const sampler: DdimSampler;
   * declare const cond: Conditioning;
   * const eps = sampler.guidedNoise(cond, tf.randomNormal([1, 64, 64, 4]), sampler.timesteps[0]);
   * ```
   */
  guidedNoise(cond: Conditioning, latent: Tensor4D, t: number): Tensor4D {
    const unet = this.model.unet;
    const g = this.options.guidance;
    return tf.tidy(() => {
      if (g === 1) return unet.forward(latent, t, cond.prompt);
      const b = latent.shape[0];
      const x = tf.concat([latent, latent], 0) as Tensor4D;
      const ctx = tf.concat([cond.negative, cond.prompt], 0) as Tensor3D;
      const out = unet.forward(x, t, ctx);
      const [u, c] = tf.split(out, [b, b], 0);
      return tf.add(u, tf.mul(tf.sub(c, u), g)) as Tensor4D;
    });
  }

  /**
   * Latents → RGB images in [0, 1] (the VAE, or clamp(x/2 + 0.5) for a pixel-space model).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { DdimSampler } from "@texforce/core/samplers";
   * declare const sampler: DdimSampler;
   * const images = sampler.decode(tf.randomNormal([1, 64, 64, 4]));
   * ```
   */
  decode(latents: Tensor4D): Tensor4D {
    const vae = this.model.vae;
    return tf.tidy(() => {
      if (!vae) return tf.clipByValue(tf.add(tf.mul(latents, 0.5), 0.5), 0, 1) as Tensor4D;
      const b = latents.shape[0];
      const bs = this.options.unetBatchSize;
      if (b <= bs) return vae.decode(latents);
      const parts: Tensor4D[] = [];
      for (let i = 0; i < b; i += bs) {
        parts.push(vae.decode(latents.slice([i, 0, 0, 0], [Math.min(bs, b - i), -1, -1, -1])));
      }
      return tf.concat(parts, 0) as Tensor4D;
    });
  }

  #check(cond: Conditioning): number {
    const b = cond.prompt.shape[0];
    if (cond.negative.shape[0] !== b) {
      throw new Error(`ddim: ${b} prompt states but ${cond.negative.shape[0]} negative ones`);
    }
    const d = this.model.unet.config.crossAttentionDim[0];
    if (cond.prompt.shape[2] !== d || cond.negative.shape[2] !== d) {
      throw new Error(
        `ddim: the encoder states are ${cond.prompt.shape[2]} wide, the UNet cross-attends to ${d}`,
      );
    }
    return b;
  }

  /**
   * Sample a batch from noise: T guided DDIM steps, recording x_T … x_0 and each step's log-prob,
   * then decode x_0. Noise comes from `options.initNoise`/`stepNoise` or a {@linkcode SeededNoise}
   * (initial noise first, then each step's, all for the whole batch, so results do not depend on
   * `unetBatchSize`).
   *
   * @example
   * ```ts
   * import type { Conditioning } from "@texforce/core";
   * import type { DdimSampler } from "@texforce/core/samplers";
   * declare const sampler: DdimSampler;
   * declare const cond: Conditioning;
   * const traj = await sampler.sample(cond, { seed: 1, onStep: (i, n) => console.log(i, n) });
   * ```
   */
  async sample(cond: Conditioning, options: SampleOptions = {}): Promise<Trajectory> {
    const b = this.#check(cond);
    const T = this.numSteps;
    const c = this.model.unet.config.inChannels;
    const side = this.options.latentSize ?? this.model.unet.config.sampleSize;
    const shape: [number, number, number, number] = options.initNoise
      ? options.initNoise.shape
      : [b, side, side, c];
    if (shape[0] !== b || shape[3] !== c) {
      throw new Error(
        `ddim: initNoise has shape ${JSON.stringify(shape)}; expected [${b}, H, W, ${c}]`,
      );
    }
    if (options.stepNoise) {
      const s = options.stepNoise.shape;
      if (s[0] !== T || s[1] !== b || s[2] !== shape[1] || s[3] !== shape[2] || s[4] !== c) {
        throw new Error(
          `ddim: stepNoise has shape ${JSON.stringify(s)}; expected [${T}, ${b}, ${shape[1]}, ${
            shape[2]
          }, ${c}]`,
        );
      }
    }
    const needGen = !options.initNoise || (!options.stepNoise && this.options.eta > 0);
    const gen = needGen
      ? new SeededNoise(
        options.seed ?? this.options.seed ?? crypto.getRandomValues(new Uint32Array(1))[0],
      )
      : null;
    const init = options.initNoise ? tf.clone(options.initNoise) : gen!.normal(shape) as Tensor4D;
    const stepNoise: Tensor4D[] = [];
    const latents: Tensor4D[] = [init];
    const logProbs: Tensor1D[] = [];
    try {
      for (let j = 0; j < T; j++) {
        if (options.stepNoise) {
          stepNoise.push(tf.tidy(() => options.stepNoise!.slice(j, 1).squeeze([0]) as Tensor4D));
        } else {
          stepNoise.push(
            this.options.eta > 0 ? gen!.normal(shape) as Tensor4D : tf.zeros(shape),
          );
        }
      }
      const bs = this.options.unetBatchSize;
      for (let j = 0; j < T; j++) {
        if (options.signal?.aborted) {
          throw options.signal.reason ?? new DOMException("aborted", "AbortError");
        }
        const t = this.timesteps[j];
        const x = latents[j];
        const [next, lp] = tf.tidy(() => {
          const nexts: Tensor[] = [];
          const lps: Tensor[] = [];
          for (let i = 0; i < b; i += bs) {
            const n = Math.min(bs, b - i);
            const sl = <R extends tf.Rank>(v: tf.Tensor<R>) =>
              b <= bs ? v : v.slice(i, n) as tf.Tensor<R>;
            const part = { prompt: sl(cond.prompt), negative: sl(cond.negative) };
            const xi = sl(x);
            const eps = this.guidedNoise(part, xi, t);
            const r = this.#step(eps, t, xi, sl(stepNoise[j]));
            nexts.push(r.prevSample);
            lps.push(r.logProb);
          }
          return [
            nexts.length === 1 ? nexts[0] : tf.concat(nexts, 0),
            lps.length === 1 ? lps[0] : tf.concat(lps, 0),
          ] as [Tensor4D, Tensor1D];
        });
        latents.push(next);
        logProbs.push(lp);
        options.onStep?.(j + 1, T);
        // Let timers and abort signals run between steps.
        await new Promise((r) => setTimeout(r, 0));
      }
      const out = tf.tidy(() => ({
        latents: tf.stack(latents, 1) as Tensor5D,
        logProbs: tf.stack(logProbs, 1) as Tensor2D,
        images: this.decode(latents[T]),
      }));
      return { ...out, timesteps: [...this.timesteps] };
    } finally {
      tf.dispose([...latents, ...logProbs, ...stepNoise]);
    }
  }

  #step(
    eps: Tensor4D,
    t: number,
    x: Tensor4D,
    noise: Tensor4D,
  ): { prevSample: Tensor4D; logProb: Tensor1D } {
    const eta = this.options.eta;
    if (eta > 0) {
      const r = this.scheduler.stepWithLogProb(eps, t, x, { eta, noise });
      r.mean.dispose();
      return { prevSample: r.prevSample as Tensor4D, logProb: r.logProb };
    }
    // η = 0 is deterministic: there is no density, so the log-probs are recorded as 0.
    const r = this.scheduler.step(eps, t, x, { eta: 0 });
    r.predOriginalSample.dispose();
    return { prevSample: r.prevSample as Tensor4D, logProb: tf.zeros([x.shape[0]]) };
  }

  /**
   * Differentiable log-prob [B] of `next` (x_{j+1}) given `latent` (x_j) at step index j,
   * recomputing the guided noise from `cond` (gradients flow through the frozen UNet into the
   * conditioning). Needs eta > 0.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { Conditioning } from "@texforce/core";
   * import type { DdimSampler } from "@texforce/core/samplers";
   * declare const sampler: DdimSampler;
   * declare const cond: Conditioning;
   * declare const x: tf.Tensor4D;
   * declare const next: tf.Tensor4D;
   * const lp = sampler.logProb(cond, x, next, 3); // [B]
   * ```
   */
  logProb(
    cond: Conditioning,
    latent: Tensor4D,
    next: Tensor4D,
    stepIndex: number,
  ): Tensor1D {
    this.#check(cond);
    if (!Number.isInteger(stepIndex) || stepIndex < 0 || stepIndex >= this.numSteps) {
      throw new RangeError(
        `ddim.logProb: step index ${stepIndex} is outside [0, ${this.numSteps - 1}]`,
      );
    }
    const t = this.timesteps[stepIndex];
    return tf.tidy(() =>
      this.scheduler.logProb(this.guidedNoise(cond, latent, t), latent, t, next, this.options.eta)
    );
  }

  /**
   * Release the model when this sampler owns it.
   *
   * @example
   * ```ts
   * import type { DdimSampler } from "@texforce/core/samplers";
   * declare const sampler: DdimSampler;
   * sampler.dispose();
   * ```
   */
  dispose(): void {
    if (this.#owns) this.model.dispose();
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Load the model folder `options.modelPath` and build a sampler that owns it.
 *
 * @example
 * ```ts
 * import { ddimSampler } from "@texforce/core/samplers";
 * const sampler = await ddimSampler({ modelPath: "sd15", steps: 50, guidance: 5 });
 * ```
 */
export async function ddimSampler(options: Partial<Options> = {}): Promise<DdimSampler> {
  if (!options.modelPath) {
    throw new Error("ddim: no model folder (set modelPath, or the run's model)");
  }
  const model = await loadStableDiffusion(options.modelPath, {
    variant: options.variant,
    unetLora: options.unetLora,
    unetLoraScale: options.unetLoraScale,
  });
  try {
    return new DdimSampler(model, options, true);
  } catch (e) {
    model.dispose();
    throw e;
  }
}

const optionsSchema: z.ZodType<Options, Partial<Options>> = z.strictObject({
  modelPath: z.string().min(1).optional(),
  steps: z.number().int().min(1).max(1000).default(defaults.steps),
  eta: z.number().min(0).default(defaults.eta),
  guidance: z.number().min(0).default(defaults.guidance),
  unetBatchSize: z.number().int().min(1).default(defaults.unetBatchSize),
  seed: z.number().int().optional(),
  latentSize: z.number().int().min(1).optional(),
  attentionSlice: z.number().int().min(0).default(defaults.attentionSlice),
  unetLora: z.string().min(1).optional(),
  unetLoraScale: z.number().default(defaults.unetLoraScale),
  variant: z.string().optional(),
});

/**
 * The `ddim` sampler plugin. Relative `modelPath` and `unetLora` resolve against the pipeline
 * file's folder; without `modelPath` the run's model is used.
 *
 * @example
 * ```ts
 * import { PluginRegistry } from "@texforce/core";
 * import { ddimSamplerPlugin } from "@texforce/core/samplers";
 * const registry = new PluginRegistry([ddimSamplerPlugin]);
 * ```
 */
export const ddimSamplerPlugin: Plugin<"sampler", Options> = definePlugin({
  kind: "sampler",
  name: "ddim",
  version: "0.1.0",
  description: "Classifier-free-guided DDIM sampling with per-step log-probs (DDPO)",
  options: optionsSchema,
  async create(o, ctx: PluginContext) {
    const modelPath = o.modelPath ? resolve(ctx.baseDir, o.modelPath) : ctx.modelPath;
    const sampler = await ddimSampler({
      ...o,
      modelPath,
      unetLora: o.unetLora ? resolve(ctx.baseDir, o.unetLora) : undefined,
    });
    const d = sampler.model.unet.config.crossAttentionDim[0];
    if (ctx.encoder && ctx.encoder.hiddenSize !== d) {
      sampler.dispose();
      throw new Error(
        `ddim: the encoder '${ctx.encoder.name}' is ${ctx.encoder.hiddenSize} wide, but the UNet of ` +
          `${modelPath} cross-attends to ${d}`,
      );
    }
    return sampler;
  },
});
