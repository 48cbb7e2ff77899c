/**
 * One TexForce policy-gradient pass: re-encode the prompts and negative prompts **with
 * gradients** through the LoRA encoder, recompute the guided noise prediction at x_j through the
 * frozen UNet, take the log-prob of the stored x_{j+1}, and differentiate the PPO loss with
 * respect to the encoder's trainable variables.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Encoder } from "./encoder.ts";
import { ppoLoss, type PpoLossOptions } from "./ppo_loss.ts";
import type { Sampler } from "./sampler.ts";
import type {
  NamedTensorMap,
  Tensor,
  Tensor1D,
  Tensor2D,
  Tensor4D,
  Variable,
} from "./tensor_types.ts";

/** Inputs of one pass (tensors owned by the caller). */
export interface PpoInput {
  /** Prompts, or their token ids [B, L]. */
  prompt: string[] | Tensor2D;
  /** Negative prompts, or their token ids [B, L]. */
  negative: string[] | Tensor2D;
  /** x_j [B, H, W, C]. */
  latent: Tensor4D;
  /** The stored x_{j+1} [B, H, W, C]. */
  next: Tensor4D;
  /** Log-prob of x_{j+1} recorded while sampling [B]. */
  oldLogProb: Tensor1D;
  /** Advantages [B] (clipped inside the loss). */
  advantages: Tensor1D;
  /** Step index j. */
  stepIndex: number;
}

/** Result of one pass. */
export interface PpoGradients {
  /** PPO loss. */
  loss: number;
  /** 0.5 · mean((new − old)²). */
  approxKl: number;
  /** Fraction of clipped ratios. */
  clipFraction: number;
  /** The new log-probs [B]. */
  newLogProb: number[];
  /** d loss / d variable, keyed like `variables` (owned by the caller). */
  grads: NamedTensorMap;
}

/**
 * Options of {@linkcode ppoGradients}: the loss settings and how many samples go through the
 * UNet's backward pass at once.
 *
 * @example
 * ```ts
 * import type { PpoStepOptions } from "@texforce/core";
 * const o: PpoStepOptions = { clipRange: 1e-4, advClipMax: 5, microBatchSize: 2 };
 * ```
 */
export interface PpoStepOptions extends PpoLossOptions {
  /**
   * Samples per backward pass (default: the whole minibatch). The gradient tape keeps every
   * activation of the UNet until the backward pass ends, so memory grows with this; the
   * minibatch's loss is the mean over samples, so chunks combine exactly (up to float rounding).
   */
  microBatchSize?: number;
}

/**
 * Loss, diagnostics and gradients of one PPO pass, `microBatchSize` samples at a time.
 *
 * @example
 * ```ts
 * import { ppoGradients, type Encoder, type PpoInput, type Sampler } from "@texforce/core";
 * declare const encoder: Encoder;
 * declare const sampler: Sampler;
 * declare const input: PpoInput;
 * const r = await ppoGradients(encoder, sampler, encoder.trainableVariables(), input, {
 *   clipRange: 1e-4,
 *   advClipMax: 5,
 * });
 * ```
 */
export async function ppoGradients(
  encoder: Encoder,
  sampler: Sampler,
  variables: Map<string, Variable>,
  input: PpoInput,
  options: PpoStepOptions,
): Promise<PpoGradients> {
  const n = input.latent.shape[0];
  const m = options.microBatchSize ?? n;
  if (m >= n) return await onePass(encoder, sampler, variables, input, options);
  const out: PpoGradients = { loss: 0, approxKl: 0, clipFraction: 0, newLogProb: [], grads: {} };
  for (let s = 0; s < n; s += m) {
    const k = Math.min(m, n - s);
    const part = <T extends Tensor>(t: T): T =>
      t.slice([s, ...t.shape.slice(1).map(() => 0)], [k, ...t.shape.slice(1)]) as T;
    const ids = (x: string[] | Tensor2D) => (Array.isArray(x) ? x.slice(s, s + k) : part(x));
    const sub: PpoInput = {
      prompt: ids(input.prompt),
      negative: ids(input.negative),
      latent: part(input.latent),
      next: part(input.next),
      oldLogProb: part(input.oldLogProb),
      advantages: part(input.advantages),
      stepIndex: input.stepIndex,
    };
    try {
      const r = await onePass(encoder, sampler, variables, sub, options);
      // The minibatch mean is the size-weighted mean of the chunk means.
      const w = k / n;
      out.loss += w * r.loss;
      out.approxKl += w * r.approxKl;
      out.clipFraction += w * r.clipFraction;
      out.newLogProb.push(...r.newLogProb);
      for (const [name, g] of Object.entries(r.grads)) {
        const prev = out.grads[name];
        out.grads[name] = tf.tidy(() => (prev ? tf.add(prev, tf.mul(g, w)) : tf.mul(g, w)));
        prev?.dispose();
        g.dispose();
      }
    } finally {
      for (const t of [sub.prompt, sub.negative, sub.latent, sub.next, sub.oldLogProb]) {
        if (!Array.isArray(t)) t.dispose();
      }
      sub.advantages.dispose();
    }
  }
  return out;
}

async function onePass(
  encoder: Encoder,
  sampler: Sampler,
  variables: Map<string, Variable>,
  input: PpoInput,
  options: PpoLossOptions,
): Promise<PpoGradients> {
  const enc = (x: string[] | Tensor2D) =>
    Array.isArray(x) ? encoder.encode(x) : encoder.encodeIds(x);
  const kept: Tensor[] = [];
  try {
    const { value, grads } = tf.variableGrads(() => {
      const cond = { prompt: enc(input.prompt), negative: enc(input.negative) };
      const lp = sampler.logProb(cond, input.latent, input.next, input.stepIndex);
      const r = ppoLoss(lp, input.oldLogProb, input.advantages, options);
      kept.push(tf.keep(r.approxKl), tf.keep(r.clipFraction), tf.keep(lp));
      return r.loss;
    }, [...variables.values()]);
    kept.push(value);
    // tfjs names gradients by variable name; map back to our names. Reads are async because
    // tfjs-webgpu cannot read synchronously in Deno.
    const byName: NamedTensorMap = {};
    for (const [name, v] of variables) byName[name] = grads[v.name];
    const [kl, clip, lp] = kept;
    return {
      loss: (await value.data())[0],
      approxKl: (await kl.data())[0],
      clipFraction: (await clip.data())[0],
      newLogProb: Array.from(await lp.data()),
      grads: byName,
    };
  } finally {
    for (const t of kept) t.dispose();
  }
}
