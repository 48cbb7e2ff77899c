// One TexForce policy-gradient update against the PyTorch reference (ppo.* and adamw.* of the
// sd-tiny golden): new log-probs, loss, [loss, approx KL, clip fraction] per step, every LoRA
// gradient and the global norm; then two AdamW steps.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { ClipLoraEncoder } from "../../adapters/encoder/clip_lora_encoder.ts";
import { adamw } from "../../adapters/optim/adamw.ts";
import { useBackend } from "../../core/backend.ts";
import { clipGlobalNorm, GradientAccumulator } from "../../core/gradients.ts";
import { ppoGradients } from "../../core/ppo_step.ts";
import { ddimSampler } from "../../samplers/ddim_sampler.ts";
import {
  assertClose,
  availableBackends,
  golden,
  goldenSettings,
  strictRelativeError,
  TINY_SD,
} from "../_helpers.ts";

Deno.test("PPO update and AdamW match the PyTorch reference", async (t) => {
  const g = await golden("sd-tiny");
  const settings = await goldenSettings();
  const get = (k: string) => {
    const v = g.get(k);
    if (!v) throw new Error(`golden has no ${k}`);
    return v;
  };
  for (const backend of await availableBackends()) {
    // WebGPU (lavapipe here, a real GPU elsewhere) may sum in another order and use approximate
    // transcendentals: AdamW gets a 10× looser bound there. Measured errors are printed.
    const gpu = backend === "webgpu";
    const tolFwd = 1e-3;
    const tolAdam = gpu ? 1e-4 : 1e-5;
    await t.step(backend, async () => {
      await useBackend(backend as "cpu" | "wasm" | "webgpu");
      const encoder = await ClipLoraEncoder.load(TINY_SD, {
        rank: settings.lora.r,
        alpha: settings.lora.alpha,
        targets: settings.lora.targets,
      });
      const sampler = await ddimSampler({ modelPath: TINY_SD, ...settings.sample });
      const vars = encoder.trainableVariables();
      for (const [name, v] of vars) {
        const p = get(`ppo.param.${name.replace(".default.", ".")}`);
        v.assign(tf.tensor(p.data, p.shape));
      }
      const ids = (k: string) =>
        tf.tensor2d(get(k).data as Int32Array, get(k).shape as [number, number], "int32");
      const promptIds = ids("sample.in.prompt_ids");
      const negativeIds = ids("sample.in.negative_ids");
      const lat = get("sample.latents");
      // [B, T+1, C, H, W] → [B, T+1, H, W, C]
      const latents = tf.tensor5d(
        lat.data as Float32Array,
        lat.shape as [number, number, number, number, number],
      )
        .transpose([0, 1, 3, 4, 2]) as tf.Tensor5D;
      const lps = get("sample.log_probs");
      const adv = tf.tensor1d(get("ppo.in.advantages").data as Float32Array);
      const js = Array.from(get("ppo.in.timestep_indices").data);
      const perStep = get("ppo.loss_kl_clipfrac_per_step").data;
      const acc = new GradientAccumulator();
      let lossSum = 0;
      let worstLp = 0;
      for (const [k, j] of js.entries()) {
        const [b, , h, w, c] = latents.shape;
        const x = latents.slice([0, j, 0, 0, 0], [b, 1, h, w, c]).reshape([
          b,
          h,
          w,
          c,
        ]) as tf.Tensor4D;
        const next = latents.slice([0, j + 1, 0, 0, 0], [b, 1, h, w, c]).reshape([
          b,
          h,
          w,
          c,
        ]) as tf.Tensor4D;
        const old = tf.tensor1d(
          Array.from({ length: lps.shape[0] }, (_, i) => lps.data[i * lps.shape[1] + j]),
        );
        const r = await ppoGradients(encoder, sampler, vars, {
          prompt: promptIds,
          negative: negativeIds,
          latent: x,
          next,
          oldLogProb: old,
          advantages: adv,
          stepIndex: j,
        }, settings.ppo);
        worstLp = Math.max(
          worstLp,
          assertClose(r.newLogProb, get(`ppo.new_log_prob.${j}`).data, tolFwd, `new_log_prob.${j}`),
        );
        assertClose(
          [r.loss, r.approxKl, r.clipFraction],
          perStep.slice(3 * k, 3 * k + 3),
          tolFwd,
          `per-step ${j}`,
        );
        lossSum += r.loss;
        acc.add(r.grads);
        x.dispose();
        next.dispose();
        old.dispose();
      }
      assertClose([lossSum / js.length], get("ppo.loss").data, tolFwd, "ppo.loss");
      const grads = acc.take();
      let worstGrad = 0;
      for (const [name, gr] of grads) {
        const actual = await gr.data();
        worstGrad = Math.max(
          worstGrad,
          // Gradients are small: compare relative to their own largest magnitude.
          (() => {
            const e = strictRelativeError(actual, get(`ppo.grad.${name}`).data);
            if (!(e <= tolFwd)) throw new Error(`grad ${name}: relative error ${e} > ${tolFwd}`);
            return e;
          })(),
        );
      }
      const norm = await clipGlobalNorm(grads, settings.adamw.maxGradNorm);
      const expectedNorm = get("ppo.grad_norm_before_clip").data[0];
      assert.ok(
        Math.abs(norm - expectedNorm) / expectedNorm < tolFwd,
        `norm ${norm} vs ${expectedNorm}`,
      );
      const { betas, weightDecay, eps, lr } = settings.adamw;
      const opt = adamw(vars, { betas, weightDecay, eps });
      let worstAdam = 0;
      for (const step of [1, 2]) {
        opt.step(grads, lr);
        for (const [name, v] of vars) {
          worstAdam = Math.max(
            worstAdam,
            assertClose(
              await v.data(),
              get(`adamw.step${step}.${name}`).data,
              tolAdam,
              `adamw.step${step} ${name}`,
            ),
          );
        }
      }
      console.log(
        `  ${backend}: worst relative error: new log-prob ${worstLp.toExponential(2)}, ` +
          `gradients ${worstGrad.toExponential(2)}, norm ${
            (Math.abs(norm - expectedNorm) / expectedNorm).toExponential(2)
          }, ` +
          `AdamW ${worstAdam.toExponential(2)}`,
      );
      for (const x of grads.values()) x.dispose();
      tf.dispose([promptIds, negativeIds, latents, adv]);
      opt.dispose();
      sampler.dispose();
      encoder.dispose();
    });
  }
});
