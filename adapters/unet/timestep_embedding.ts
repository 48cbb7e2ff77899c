/**
 * The UNet's timestep conditioning: diffusers' sinusoidal `get_timestep_embedding` followed by
 * `TimestepEmbedding` (linear_1, SiLU, linear_2).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { linear, type LinearWeights } from "../nn/linear.ts";
import type { WeightReader } from "../nn/weight_reader.ts";
import { silu } from "./_activations.ts";
import { type LinearRegistry, loadRegisteredLinear } from "./_linear_registry.ts";
import type { Tensor2D } from "../../core/tensor_types.ts";

const f32 = Math.fround;

/**
 * Sinusoidal embedding [B, dim] of timesteps, computed on the host in float32 step by step as
 * PyTorch does (the arguments reach ~1000 rad, where float32 rounding of t·freq matters).
 *
 * @example
 * ```ts
 * import { sinusoidalTimestepEmbedding } from "@texforce/core/adapters";
 * const e = sinusoidalTimestepEmbedding([999, 421], 320, true, 0); // [2, 320]
 * ```
 */
export function sinusoidalTimestepEmbedding(
  timesteps: number[],
  dim: number,
  flipSinToCos: boolean,
  freqShift: number,
  maxPeriod = 10000,
): Tensor2D {
  const half = Math.floor(dim / 2);
  const c = f32(-Math.log(maxPeriod));
  const denom = f32(half - freqShift);
  const freqs = Array.from({ length: half }, (_, i) => f32(Math.exp(f32(f32(c * i) / denom))));
  const out = new Float32Array(timesteps.length * dim);
  timesteps.forEach((t, b) => {
    for (let i = 0; i < half; i++) {
      const arg = f32(f32(t) * freqs[i]);
      const s = Math.sin(arg);
      const co = Math.cos(arg);
      out[b * dim + i] = flipSinToCos ? co : s;
      out[b * dim + half + i] = flipSinToCos ? s : co;
    }
  });
  return tf.tensor2d(out, [timesteps.length, dim]);
}

/**
 * Weights of `TimestepEmbedding`.
 *
 * @example
 * ```ts
 * import type { TimestepEmbeddingWeights } from "@texforce/core/adapters";
 * declare const w: TimestepEmbeddingWeights;
 * console.log(w.linear1.weight.shape);
 * ```
 */
export interface TimestepEmbeddingWeights {
  /** [inDim, embDim]. */
  linear1: LinearWeights;
  /** [embDim, embDim]. */
  linear2: LinearWeights;
}

/**
 * Read `linear_1` and `linear_2` under `r` (e.g. `r.child("time_embedding")`).
 *
 * @example
 * ```ts
 * import { loadTimestepEmbedding, type WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const te = await loadTimestepEmbedding(r.child("time_embedding"), 320, 1280);
 * ```
 */
export async function loadTimestepEmbedding(
  r: WeightReader,
  inDim: number,
  embDim: number,
  registry?: LinearRegistry,
): Promise<TimestepEmbeddingWeights> {
  return {
    linear1: await loadRegisteredLinear(r, "linear_1", inDim, embDim, registry),
    linear2: await loadRegisteredLinear(r, "linear_2", embDim, embDim, registry),
  };
}

/**
 * linear_2(SiLU(linear_1(x))).
 *
 * @example
 * ```ts
 * import { sinusoidalTimestepEmbedding, timestepEmbedding, type TimestepEmbeddingWeights } from "@texforce/core/adapters";
 * declare const w: TimestepEmbeddingWeights;
 * const emb = timestepEmbedding(w, sinusoidalTimestepEmbedding([999], 320, true, 0));
 * ```
 */
export function timestepEmbedding(w: TimestepEmbeddingWeights, x: Tensor2D): Tensor2D {
  return tf.tidy(() => linear(silu(linear(x, w.linear1)), w.linear2) as Tensor2D);
}
