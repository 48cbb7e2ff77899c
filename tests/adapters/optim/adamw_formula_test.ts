// AdamW against torch.optim.AdamW's update written out in float64, with settings where every
// term matters (large weight decay, eps and learning rate, gradients that change scale): the
// golden update alone (lr 3e-4, weight decay 1e-4) cannot tell decoupled from coupled decay.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { adamw } from "../../../adapters/optim/adamw.ts";
import { useBackend } from "../../../core/backend.ts";

const O = { betas: [0.8, 0.95] as [number, number], weightDecay: 0.5, eps: 1e-2 };
const LR = [0.1, 0.05, 0.2];
const GRADS = [[0.3, -2, 0.01, 5], [-0.1, 0.4, 3, -0.02], [2, 2, -1, 0.5]];
const P0 = [1, -0.5, 0.25, 2];

/** torch's single-tensor AdamW step (decoupled decay, bias-corrected moments). */
function reference(): number[][] {
  const [b1, b2] = O.betas;
  let p = [...P0];
  let m = p.map(() => 0);
  let v = p.map(() => 0);
  const out: number[][] = [];
  for (const [k, g] of GRADS.entries()) {
    const t = k + 1;
    const lr = LR[k];
    p = p.map((x) => x * (1 - lr * O.weightDecay));
    m = m.map((x, i) => b1 * x + (1 - b1) * g[i]);
    v = v.map((x, i) => b2 * x + (1 - b2) * g[i] * g[i]);
    const stepSize = lr / (1 - b1 ** t);
    const bc2Sqrt = Math.sqrt(1 - b2 ** t);
    p = p.map((x, i) => x - stepSize * m[i] / (Math.sqrt(v[i]) / bc2Sqrt + O.eps));
    out.push(p);
  }
  return out;
}

Deno.test("AdamW equals torch's update rule, step by step", async () => {
  await useBackend("cpu");
  const w = tf.variable(tf.tensor1d(P0), true, "adamw_formula_w");
  const opt = adamw(new Map([["w", w]]), O);
  const want = reference();
  for (const [k, g] of GRADS.entries()) {
    const grad = tf.tensor1d(g);
    opt.step(new Map([["w", grad]]), LR[k]);
    grad.dispose();
    const got = Array.from(await w.data());
    for (const [i, e] of want[k].entries()) {
      assert.ok(
        Math.abs(got[i] - e) <= 1e-6 * Math.max(1, Math.abs(e)),
        `step ${k + 1}, element ${i}: ${got[i]} vs ${e}`,
      );
    }
  }
  assert.equal(opt.stepCount, GRADS.length);
  opt.dispose();
  w.dispose();
});
