/**
 * Activation recomputation (gradient checkpointing): run a block's forward without recording
 * its intermediate tensors, and in the backward pass run it again under a fresh tape to get the
 * gradients for its inputs. The tape then holds only each block's inputs instead of every
 * activation inside it, for the price of one more forward pass.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Tensor } from "../../core/tensor_types.ts";

interface EngineState {
  activeTape: unknown;
}

/**
 * `fn(...inputs)` with its activations recomputed in the backward pass. Gradients flow to
 * `inputs` only (not to variables `fn` closes over): meant for frozen blocks such as the UNet's,
 * back-propagated into their inputs.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { recomputed } from "@texforce/core/adapters";
 * const [y] = recomputed((x) => [tf.tanh(tf.square(x))], [tf.ones([4])]);
 * ```
 */
export function recomputed(fn: (...xs: Tensor[]) => Tensor[], inputs: Tensor[]): Tensor[] {
  let shapes: number[][] = [];
  // customGrad takes one output: the block's outputs travel flattened and concatenated.
  const flat = (xs: Tensor[]): Tensor =>
    tf.tidy(() => {
      const outs = fn(...xs);
      shapes = outs.map((o) => o.shape);
      return tf.concat(outs.map((o) => o.reshape([-1])));
    });
  const run = tf.customGrad((...args: unknown[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const xs = args as Tensor[];
    save(xs);
    return {
      value: flat(xs),
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]): Tensor[] => {
        // A nested gradient computation during the outer backward pass: the engine keeps one
        // active tape, which the inner one replaces and clears, so the outer tape is put back.
        const state = (tf.engine() as unknown as { state: EngineState }).state;
        const outer = state.activeTape;
        try {
          const { value, grads } = tf.engine().gradients(
            () => flat(saved),
            saved,
            dy as Tensor,
            true,
          );
          value.dispose();
          return saved.map((s, i) => grads[i] ?? tf.zerosLike(s));
        } finally {
          state.activeTape = outer;
        }
      },
    };
  });
  return tf.tidy(() => {
    const packed = (run as (...xs: Tensor[]) => Tensor)(...inputs);
    const outs: Tensor[] = [];
    let at = 0;
    for (const s of shapes) {
      const n = s.reduce((a, b) => a * b, 1);
      outs.push(packed.slice([at], [n]).reshape(s));
      at += n;
    }
    return outs;
  });
}
