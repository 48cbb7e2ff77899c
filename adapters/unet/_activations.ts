// Activations the UNet and VAE need that tfjs lacks under PyTorch's names and definitions.
import * as tf from "@tensorflow/tfjs";
import type { Tensor } from "../../core/tensor_types.ts";

/** SiLU (swish): x · σ(x). */
export function silu(x: Tensor): Tensor {
  return tf.tidy(() => tf.mul(x, tf.sigmoid(x)));
}

/** Exact GELU (PyTorch's default, not the tanh approximation): x · Φ(x). */
export function gelu(x: Tensor): Tensor {
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1)));
}
