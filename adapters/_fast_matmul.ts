// 2-D matrix products whose gradients use only untransposed matMuls.
//
// tfjs' wasm backend runs a matMul on XNNPACK only when neither side is transposed and there is
// no batch dimension; every other form falls back to a scalar loop about 10× slower. The stock
// gradient of `a·b` is `dy·bᵀ` and `aᵀ·dy`, i.e. exactly those slow forms, which made the
// backward pass of the CLIP text encoder ten times its forward. Rewriting `dy·bᵀ` as
// `(b·dyᵀ)ᵀ` and `aᵀ·dy` with an explicit transpose keeps every product on the fast path; the
// extra transposes are cheap on every backend.
import * as tf from "@tensorflow/tfjs";
import type { Tensor, Tensor1D, Tensor2D } from "../core/tensor_types.ts";

type CustomGradFunc = Parameters<typeof tf.customGrad>[0];

/** `a · b` (2-D) with gradients for both inputs computed from untransposed products. */
export const matMul2d: (a: Tensor2D, b: Tensor2D) => Tensor2D = tf.customGrad(
  ((a: Tensor2D, b: Tensor2D, save: tf.GradSaveFunc) => {
    save([a, b]);
    return {
      value: tf.matMul(a, b),
      gradFunc: (dy: Tensor2D, saved: Tensor[]) => {
        const [sa, sb] = saved as [Tensor2D, Tensor2D];
        return [tf.transpose(tf.matMul(sb, tf.transpose(dy))), tf.matMul(tf.transpose(sa), dy)];
      },
    };
  }) as unknown as CustomGradFunc,
) as unknown as (a: Tensor2D, b: Tensor2D) => Tensor2D;

/**
 * `x · w (+ bias)` for a constant weight `w` [in, out]: the gradient flows to `x` only (no
 * wasted weight gradient), as `(w · dyᵀ)ᵀ`.
 */
export function constLinear(
  w: Tensor2D,
  bias?: Tensor1D,
): (x: Tensor2D) => Tensor2D {
  return tf.customGrad(
    ((x: Tensor2D) => {
      const y = tf.matMul(x, w);
      return {
        value: bias ? tf.add(y, bias) : y,
        gradFunc: (dy: Tensor2D) => tf.transpose(tf.matMul(w, tf.transpose(dy))),
      };
    }) as unknown as CustomGradFunc,
  ) as unknown as (x: Tensor2D) => Tensor2D;
}
