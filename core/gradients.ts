/**
 * Named-gradient helpers: accumulation across timesteps and minibatches, the global norm, and
 * clipping to a maximum norm as `torch.nn.utils.clip_grad_norm_` does.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { NamedTensorMap, Scalar, Tensor } from "./tensor_types.ts";

/**
 * Sums gradients over several backward passes and averages them on `take()`.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { GradientAccumulator } from "@texforce/core";
 * const acc = new GradientAccumulator();
 * acc.add({ w: tf.ones([2]) });
 * const mean = acc.take(); // Map { "w" => [1, 1] }
 * ```
 */
export class GradientAccumulator {
  #sum = new Map<string, Tensor>();
  #count = 0;

  /** Number of passes added since the last take. */
  get count(): number {
    return this.#count;
  }

  /** Add one pass's gradients (disposes them). */
  add(grads: NamedTensorMap): void {
    for (const [name, g] of Object.entries(grads)) {
      const prev = this.#sum.get(name);
      if (prev) {
        this.#sum.set(name, tf.add(prev, g));
        prev.dispose();
        g.dispose();
      } else {
        this.#sum.set(name, g);
      }
    }
    this.#count++;
  }

  /** The mean gradients; resets the accumulator. The caller owns the result. */
  take(): Map<string, Tensor> {
    const n = this.#count;
    const out = new Map<string, Tensor>();
    for (const [name, g] of this.#sum) {
      out.set(name, n === 1 ? g : tf.tidy(() => g.div(n)));
      if (n !== 1) g.dispose();
    }
    this.#sum = new Map();
    this.#count = 0;
    return out;
  }

  /** Drop accumulated gradients. */
  dispose(): void {
    for (const g of this.#sum.values()) g.dispose();
    this.#sum = new Map();
    this.#count = 0;
  }
}

/**
 * Global L2 norm over all gradients.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { globalNorm } from "@texforce/core";
 * await globalNorm(new Map([["a", tf.tensor([3, 4])]])); // 5
 * ```
 */
export async function globalNorm(grads: Map<string, Tensor>): Promise<number> {
  // Not tf.addN: tfjs-webgpu 4.22's AddN sums only its first four inputs.
  const sq = tf.tidy(() =>
    tf.stack([...grads.values()].map((g) => g.square().sum())).sum() as Scalar
  );
  const v = (await sq.data())[0];
  sq.dispose();
  return Math.sqrt(v);
}

/**
 * Scale gradients in place so their global norm is at most `maxNorm` (coefficient
 * maxNorm / (norm + 1e-6), clamped to 1, as torch does). Returns the norm before clipping.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { clipGlobalNorm } from "@texforce/core";
 * const g = new Map([["a", tf.tensor([3, 4])]]);
 * await clipGlobalNorm(g, 1); // 5; g.a is now [0.6, 0.8]
 * ```
 */
export async function clipGlobalNorm(
  grads: Map<string, Tensor>,
  maxNorm: number,
): Promise<number> {
  const norm = await globalNorm(grads);
  const coef = Math.min(1, maxNorm / (norm + 1e-6));
  if (coef < 1) {
    for (const [name, g] of grads) {
      grads.set(name, tf.tidy(() => g.mul(coef)));
      g.dispose();
    }
  }
  return norm;
}
