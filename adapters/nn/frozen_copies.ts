/**
 * The kernel-ready copies of every frozen linear and convolution in a model's weights, made at
 * load and released with the model (see `weight_copies.ts`).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { keepLinearCopies, type LinearWeights } from "./linear.ts";
import { type Conv2dWeights, keepConvCopies } from "./conv2d.ts";
import { releaseWeightCopies } from "./weight_copies.ts";

type Layer = { kind: "linear"; w: LinearWeights } | { kind: "conv"; w: Conv2dWeights };

/** Linears (a 2-D `weight`) and convolutions (a 4-D `weight` and a `stride`) in `weights`. */
function layersIn(weights: unknown): Layer[] {
  const found: Layer[] = [];
  const walk = (o: unknown): void => {
    if (!o || typeof o !== "object" || o instanceof tf.Tensor) return;
    const l = o as { weight?: unknown; stride?: unknown };
    if (l.weight instanceof tf.Tensor && l.weight.rank === 2) {
      found.push({ kind: "linear", w: o as LinearWeights });
      return;
    }
    if (l.weight instanceof tf.Tensor && l.weight.rank === 4 && typeof l.stride === "number") {
      found.push({ kind: "conv", w: o as Conv2dWeights });
      return;
    }
    for (const v of Object.values(o)) walk(v);
  };
  walk(weights);
  return found;
}

/**
 * Make and keep the copies of every frozen layer in `weights` (a model's weight tree); variables
 * are left alone.
 *
 * @example
 * ```ts
 * import { keepFrozenCopies, releaseFrozenCopies } from "./frozen_copies.ts";
 * declare const weights: unknown;
 * keepFrozenCopies(weights);
 * releaseFrozenCopies(weights);
 * ```
 */
export function keepFrozenCopies(weights: unknown): void {
  for (const l of layersIn(weights)) {
    if (l.kind === "linear") keepLinearCopies(l.w);
    else keepConvCopies(l.w);
  }
}

/**
 * Release the copies kept for the layers in `weights` (before disposing or replacing them).
 *
 * @example
 * ```ts
 * import { releaseFrozenCopies } from "./frozen_copies.ts";
 * declare const weights: unknown;
 * releaseFrozenCopies(weights);
 * ```
 */
export function releaseFrozenCopies(weights: unknown): void {
  releaseWeightCopies(layersIn(weights).map((l) => l.w.weight));
}
