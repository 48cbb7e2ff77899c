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
 * Loss, diagnostics and gradients of one PPO pass.
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
