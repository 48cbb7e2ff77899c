/**
 * The PPO clipped objective of DDPO/TexForce, with its diagnostics.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Scalar, Tensor1D } from "./tensor_types.ts";

/** PPO settings. */
export interface PpoLossOptions {
  /** ε of the ratio clip (TexForce: 1e-4). */
  clipRange: number;
  /** Advantages are clipped to ±advClipMax (TexForce: 5). */
  advClipMax: number;
}

/** The loss and its diagnostics (scalars owned by the caller). */
export interface PpoLoss {
  /** mean(max(−A·r, −A·clip(r, 1−ε, 1+ε))). */
  loss: Scalar;
  /** 0.5 · mean((new − old)²). */
  approxKl: Scalar;
  /** Fraction of samples with |r − 1| > ε. */
  clipFraction: Scalar;
}

/**
 * PPO clipped loss for one timestep of a minibatch; differentiable in `newLogProb`.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { ppoLoss } from "@texforce/core";
 * const { loss } = ppoLoss(tf.tensor1d([-1.0]), tf.tensor1d([-1.1]), tf.tensor1d([2]), {
 *   clipRange: 0.2,
 *   advClipMax: 5,
 * });
 * ```
 */
export function ppoLoss(
  newLogProb: Tensor1D,
  oldLogProb: Tensor1D,
  advantages: Tensor1D,
  o: PpoLossOptions,
): PpoLoss {
  return tf.tidy(() => {
    const adv = tf.clipByValue(advantages, -o.advClipMax, o.advClipMax);
    const diff = tf.sub(newLogProb, oldLogProb);
    const ratio = tf.exp(diff);
    const unclipped = tf.mul(tf.neg(adv), ratio);
    const clipped = tf.mul(tf.neg(adv), tf.clipByValue(ratio, 1 - o.clipRange, 1 + o.clipRange));
    const loss = tf.mean(tf.maximum(unclipped, clipped)) as Scalar;
    const approxKl = tf.mul(0.5, tf.mean(tf.square(diff))) as Scalar;
    const clipFraction = tf.mean(
      tf.cast(tf.greater(tf.abs(tf.sub(ratio, 1)), o.clipRange), "float32"),
    ) as Scalar;
    return { loss, approxKl, clipFraction };
  });
}
