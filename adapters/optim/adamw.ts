/**
 * AdamW (decoupled weight decay) exactly as `torch.optim.AdamW`, over named tf variables; its
 * moments and step count are saved in checkpoints.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { z } from "zod";
import type { Optimizer, OptimizerState } from "../../core/optimizer.ts";
import { definePlugin, type Plugin } from "../../core/plugin.ts";
import type { Tensor, Variable } from "../../core/tensor_types.ts";

/** AdamW settings. */
export interface Options {
  /** Adam betas. */
  betas: [number, number];
  /** Decoupled weight decay. */
  weightDecay: number;
  /** Denominator epsilon. */
  eps: number;
}

const defaults = { betas: [0.9, 0.999], weightDecay: 1e-4, eps: 1e-8 } satisfies Options;

/**
 * Create an AdamW optimizer over `variables` (TexForce defaults: betas 0.9/0.999, weight decay
 * 1e-4, eps 1e-8; the learning rate is passed to each `step`).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { adamw } from "@texforce/core/adapters";
 * const w = tf.variable(tf.ones([2]));
 * const opt = adamw(new Map([["w", w]]));
 * opt.step(new Map([["w", tf.ones([2])]]), 3e-4);
 * ```
 */
export function adamw(
  variables: Map<string, Variable>,
  options: Partial<Options> = {},
): Optimizer {
  const o: Options = { ...defaults, ...options } as Options;
  const [b1, b2] = o.betas;
  const m = new Map<string, Variable>();
  const v = new Map<string, Variable>();
  for (const [name, p] of variables) {
    m.set(name, tf.variable(tf.zerosLike(p), false));
    v.set(name, tf.variable(tf.zerosLike(p), false));
  }
  let t = 0;
  return {
    name: "adamw",
    get stepCount(): number {
      return t;
    },
    step(grads: Map<string, Tensor>, lr: number): void {
      t++;
      const bc1 = 1 - b1 ** t;
      const bc2Sqrt = Math.sqrt(1 - b2 ** t);
      const stepSize = lr / bc1;
      tf.tidy(() => {
        for (const [name, p] of variables) {
          const g = grads.get(name);
          if (!g) continue; // torch skips parameters without gradients
          const mi = m.get(name)!;
          const vi = v.get(name)!;
          // Same operation order as torch's single-tensor AdamW.
          const decayed = p.mul(1 - lr * o.weightDecay);
          const mNew = mi.mul(b1).add(g.mul(1 - b1));
          const vNew = vi.mul(b2).add(g.mul(g).mul(1 - b2));
          mi.assign(mNew);
          vi.assign(vNew);
          const denom = vNew.sqrt().div(bc2Sqrt).add(o.eps);
          p.assign(decayed.sub(mNew.div(denom).mul(stepSize)));
        }
      });
    },
    async getState(): Promise<OptimizerState> {
      const tensors: OptimizerState["tensors"] = {};
      for (const [name, mi] of m) {
        tensors[`${name}.exp_avg`] = {
          shape: [...mi.shape],
          data: (await mi.data()) as Float32Array,
        };
        const vi = v.get(name)!;
        tensors[`${name}.exp_avg_sq`] = {
          shape: [...vi.shape],
          data: (await vi.data()) as Float32Array,
        };
      }
      return { step: t, tensors };
    },
    setState(state: OptimizerState): void {
      for (const [name, mi] of m) {
        for (
          const [key, target] of [[`${name}.exp_avg`, mi], [
            `${name}.exp_avg_sq`,
            v.get(name)!,
          ]] as const
        ) {
          const s = state.tensors[key];
          if (!s) throw new Error(`optimizer state: missing '${key}'`);
          if (s.shape.join(",") !== target.shape.join(",")) {
            throw new Error(
              `optimizer state: '${key}' has shape [${s.shape}], the variable has [${target.shape}]`,
            );
          }
          tf.tidy(() => target.assign(tf.tensor(s.data, s.shape, "float32")));
        }
      }
      t = state.step;
    },
    dispose(): void {
      for (const x of [...m.values(), ...v.values()]) x.dispose();
    },
  };
}

/**
 * The `adamw` optimizer plugin (needs `context.variables`).
 *
 * @example
 * ```ts
 * import { adamwPlugin } from "@texforce/core/adapters";
 * console.log(adamwPlugin.name);
 * ```
 */
export const adamwPlugin: Plugin<"optimizer", Options> = definePlugin({
  kind: "optimizer",
  name: "adamw",
  version: "0.1.0",
  description: "AdamW with decoupled weight decay (torch.optim.AdamW)",
  options: z.strictObject({
    betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default(
      defaults.betas as [number, number],
    ),
    weightDecay: z.number().min(0).default(defaults.weightDecay),
    eps: z.number().positive().default(defaults.eps),
  }),
  create(options, context): Optimizer {
    if (!context.variables) throw new Error("optimizer 'adamw' needs the variables to train");
    return adamw(context.variables, options);
  },
});
