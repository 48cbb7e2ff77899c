// The PPO clipped objective on constructed ratios: inside and outside the clip range, with
// positive and negative advantages, and advantages beyond the advantage clip. The golden PPO
// update alone cannot catch a missing ratio clip (its ratios never leave the clip range).
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../core/backend.ts";
import { ppoLoss } from "../../core/ppo_loss.ts";

const CLIP = 0.2;
const ADV_CLIP = 5;

/** The DDPO objective of one sample, written out by hand. */
function expectedTerm(ratio: number, advantage: number): { loss: number; dLossDNew: number } {
  const a = Math.min(ADV_CLIP, Math.max(-ADV_CLIP, advantage));
  const unclipped = -a * ratio;
  const clipped = -a * Math.min(1 + CLIP, Math.max(1 - CLIP, ratio));
  const inside = Math.abs(ratio - 1) <= CLIP;
  // d(−A·r)/d new = −A·r; the clipped branch has no gradient outside the range.
  const dLossDNew = inside || unclipped > clipped ? -a * ratio : 0;
  return { loss: Math.max(unclipped, clipped), dLossDNew };
}

Deno.test("ppoLoss equals the clipped objective written out by hand", async (t) => {
  await useBackend("cpu");
  const ratios = [0.5, 0.79, 0.9, 1, 1.1, 1.21, 1.5, 3];
  const advantages = [2, -2, 0.5, -0.5, 7, -7];
  const cases: [number, number][] = [];
  for (const r of ratios) for (const a of advantages) cases.push([r, a]);
  const old = cases.map((_, i) => -1 - 0.01 * i);
  const fresh = cases.map(([r], i) => old[i] + Math.log(r));

  await t.step("loss, approx KL and clip fraction", async () => {
    const n = tf.tensor1d(fresh);
    const o = tf.tensor1d(old);
    const adv = tf.tensor1d(cases.map(([, a]) => a));
    const out = ppoLoss(n, o, adv, { clipRange: CLIP, advClipMax: ADV_CLIP });
    const want = cases.map(([r, a]) => expectedTerm(r, a).loss);
    const mean = want.reduce((s, x) => s + x, 0) / want.length;
    const [loss] = await out.loss.data();
    assert.ok(Math.abs(loss - mean) <= 1e-6 * Math.max(1, Math.abs(mean)), `${loss} vs ${mean}`);
    const kl = 0.5 * cases.reduce((s, [r]) => s + Math.log(r) ** 2, 0) / cases.length;
    assert.ok(Math.abs((await out.approxKl.data())[0] - kl) <= 1e-6 * Math.max(1, kl));
    const frac = cases.filter(([r]) => Math.abs(r - 1) > CLIP).length / cases.length;
    assert.ok(Math.abs((await out.clipFraction.data())[0] - frac) < 1e-6);
    tf.dispose([n, o, adv, out.loss, out.approxKl, out.clipFraction]);
  });

  await t.step("each sample on its own: the branch PPO takes, and its gradient", async () => {
    const newLogProb = tf.variable(tf.zeros([1]), true, "ppo_loss_test_new");
    const before = tf.memory().numTensors;
    for (const [i, [r, a]] of cases.entries()) {
      tf.tidy(() => newLogProb.assign(tf.tensor1d([fresh[i]])));
      const o = tf.tensor1d([old[i]]);
      const adv = tf.tensor1d([a]);
      const { value, grads } = tf.variableGrads(() => {
        const out = ppoLoss(newLogProb as tf.Tensor1D, o, adv, {
          clipRange: CLIP,
          advClipMax: ADV_CLIP,
        });
        tf.dispose([out.approxKl, out.clipFraction]);
        return out.loss;
      }, [newLogProb]);
      const want = expectedTerm(r, a);
      const got = (await value.data())[0];
      const g = (await grads[newLogProb.name].data())[0];
      const what = `ratio ${r}, advantage ${a}: loss ${got} vs ${want.loss}, ` +
        `gradient ${g} vs ${want.dLossDNew}`;
      assert.ok(Math.abs(got - want.loss) <= 1e-5 * Math.max(1, Math.abs(want.loss)), what);
      assert.ok(
        Math.abs(g - want.dLossDNew) <= 1e-5 * Math.max(1, Math.abs(want.dLossDNew)),
        what,
      );
      tf.dispose([o, adv, value, ...Object.values(grads)]);
    }
    assert.equal(tf.memory().numTensors, before);
    newLogProb.dispose();
  });
});
