/**
 * The `Sampler` interface: runs the frozen diffusion model from noise to images and records the
 * trajectory that the policy-gradient update needs.
 *
 * Layout: latents and images are NHWC (tfjs' native layout); parity tests transpose the
 * PyTorch NCHW fixtures.
 *
 * @module
 */
import type { Tensor1D, Tensor2D, Tensor3D, Tensor4D, Tensor5D } from "./tensor_types.ts";

/** The conditioning of one batch: prompt and negative (unconditional) hidden states. */
export interface Conditioning {
  /** Prompt hidden states [B, L, D]. */
  prompt: Tensor3D;
  /** Negative-prompt hidden states [B, L, D] (the empty prompt for plain CFG). */
  negative: Tensor3D;
}

/** A sampled batch: every latent, the log-prob of every step, and the decoded images. */
export interface Trajectory {
  /** Latents x_T … x_0 as [B, T+1, H, W, C]. */
  latents: Tensor5D;
  /** Log-prob of each DDIM step's sample, [B, T]. */
  logProbs: Tensor2D;
  /** The scheduler timesteps used, length T. */
  timesteps: number[];
  /** Decoded images [B, H', W', 3] in [0, 1]. */
  images: Tensor4D;
}

/** Per-call sampling options. */
export interface SampleOptions {
  /** Seed for the noise generator (ignored when noise is injected). */
  seed?: number;
  /** Initial noise [B, H, W, C] (tests inject the fixtures' noise). */
  initNoise?: Tensor4D;
  /** Per-step noise, [T, B, H, W, C]. */
  stepNoise?: Tensor5D;
  /** Called after each denoising step. */
  onStep?: (step: number, total: number) => void;
  /** Stops sampling between steps. */
  signal?: AbortSignal;
}

/**
 * A sampler over a frozen diffusion model.
 *
 * @example
 * ```ts
 * import type { Conditioning, Sampler } from "@texforce/core";
 * declare const sampler: Sampler;
 * declare const cond: Conditioning;
 * const traj = await sampler.sample(cond, { seed: 1 });
 * console.log(traj.timesteps.length);
 * ```
 */
export interface Sampler {
  /** Plugin name (`ddim`). */
  readonly name: string;
  /** Number of denoising steps T. */
  readonly numSteps: number;
  /** Sample a batch; all tensors of the result are owned by the caller. */
  sample(cond: Conditioning, options?: SampleOptions): Promise<Trajectory>;
  /**
   * Differentiable log-prob [B] of `next` (x_{j+1}) given `latent` (x_j) at step index `j`,
   * recomputing the guided noise prediction from `cond` (the trainer calls this inside
   * `tf.variableGrads`, so gradients flow through the frozen UNet into the encoder).
   */
  logProb(
    cond: Conditioning,
    latent: Tensor4D,
    next: Tensor4D,
    stepIndex: number,
  ): Tensor1D;
  /** Release model weights. */
  dispose(): void;
}
