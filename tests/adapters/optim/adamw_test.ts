import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { adamw } from "../../../adapters/optim/adamw.ts";
import { useBackend } from "../../../core/backend.ts";
import { clipGlobalNorm, globalNorm } from "../../../core/gradients.ts";
import { assertClose, golden, goldenSettings, textEncoderFacts } from "../../_helpers.ts";

// PEFT runtime name (with ".default.") → key of the saved adapter (without it).
const savedKey = (name: string) => name.replace(".default.", ".");

Deno.test("AdamW + clip_grad_norm_ match torch on the golden PPO gradients", async (t) => {
  const g = await golden("sd-tiny");
  const names = [...g.keys()].filter((k) =>
    k.startsWith("ppo.grad.") && k !== "ppo.grad_norm_before_clip"
  )
    .map((k) => k.slice("ppo.grad.".length));
  // One A and one B per targeted projection of every layer.
  const { layers } = await textEncoderFacts();
  const { lora, adamw: settings } = await goldenSettings();
  assert.equal(names.length, layers * lora.targets.length * 2);
  for (const backend of ["cpu", "wasm"] as const) {
    await t.step(backend, async (st) => {
      await useBackend(backend);
      const vars = new Map<string, tf.Variable>();
      for (const n of names) {
        const p = g.get(`ppo.param.${savedKey(n)}`)!;
        vars.set(n, tf.variable(tf.tensor(p.data, p.shape), true, `${backend}/${n}`));
      }
      const grads = () =>
        new Map(names.map((n) => {
          const h = g.get(`ppo.grad.${n}`)!;
          return [n, tf.tensor(h.data, h.shape)] as [string, tf.Tensor];
        }));
      const { betas, weightDecay, eps, lr, maxGradNorm } = settings;
      const opt = adamw(vars, { betas, weightDecay, eps });
      const clipped = grads();
      const norm = await clipGlobalNorm(clipped, maxGradNorm);
      const expectedNorm = g.get("ppo.grad_norm_before_clip")!.data[0];
      assert.ok(
        Math.abs(norm - expectedNorm) / expectedNorm < 1e-5,
        `norm ${norm} vs ${expectedNorm}`,
      );
      assert.ok(
        Math.abs((await globalNorm(clipped)) - Math.min(maxGradNorm, expectedNorm)) <
          1e-5 * Math.max(1, maxGradNorm),
      );
      let worst = 0;
      for (const step of [1, 2]) {
        opt.step(clipped, lr);
        for (const n of names) {
          const expected = g.get(`adamw.step${step}.${n}`)!.data;
          worst = Math.max(
            worst,
            assertClose(await vars.get(n)!.data(), expected, 1e-5, `step${step} ${n}`),
          );
        }
      }
      console.log(
        `  ${backend}: worst relative error after 2 AdamW steps ${worst.toExponential(2)}`,
      );
      assert.equal(opt.stepCount, 2);
      await st.step("state round trip", async () => {
        const state = await opt.getState();
        const opt2 = adamw(vars);
        opt2.setState(state);
        assert.equal(opt2.stepCount, 2);
        const s2 = await opt2.getState();
        for (const k of Object.keys(state.tensors)) {
          assert.deepEqual(Array.from(s2.tensors[k].data), Array.from(state.tensors[k].data));
        }
        opt2.dispose();
      });
      for (const x of clipped.values()) x.dispose();
      opt.dispose();
      for (const v of vars.values()) v.dispose();
    });
  }
});
