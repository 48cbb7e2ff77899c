import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { useBackend } from "../core/backend.ts";
import { DdimScheduler, parseDdimSchedulerConfig } from "../samplers/ddim_scheduler.ts";
import { SeededNoise } from "../samplers/seeded_noise.ts";
import { assertClose, availableBackends, golden, nchwToNhwc, TINY_SD } from "./_helpers.ts";

// Element-wise fp32 maths: the same bound on every backend (lavapipe's WebGPU is IEEE fp32 too,
// but its exp/log may be a few ulp off).
const TOL: Record<string, number> = { cpu: 1e-4, wasm: 1e-4, webgpu: 1e-4 };

Deno.test("ddim scheduler: schedule matches diffusers", async () => {
  const g = await golden("sd-tiny");
  const s = await DdimScheduler.load(TINY_SD);
  const ts = s.setTimesteps(10);
  assert.deepEqual(ts, Array.from(g.get("scheduler.timesteps")!.data));
  const err = assertClose(
    s.alphasCumprod,
    g.get("scheduler.alphas_cumprod")!.data,
    1e-6,
    "alphas_cumprod",
  );
  console.log(`alphas_cumprod max rel err ${err.toExponential(2)}`);
});

Deno.test("ddim scheduler: timestep spacings", () => {
  const mk = (spacing: string, offset = 0) =>
    DdimScheduler.fromConfig({ timestep_spacing: spacing, steps_offset: offset }).setTimesteps(10);
  assert.deepEqual(mk("leading", 1), [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
  assert.deepEqual(mk("trailing"), [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
  assert.deepEqual(mk("linspace"), [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
  assert.deepEqual(
    DdimScheduler.fromConfig({ timestep_spacing: "trailing" }).setTimesteps(3),
    [999, 666, 332],
  );
  assert.throws(() => DdimScheduler.fromConfig({}).setTimesteps(0), RangeError);
});

Deno.test("ddim scheduler: beta schedules", () => {
  const lin = DdimScheduler.fromConfig({ beta_schedule: "linear" });
  assert.ok(Math.abs(lin.betas[0] - 1e-4) < 1e-9 && Math.abs(lin.betas[999] - 0.02) < 1e-9);
  const cos = DdimScheduler.fromConfig({ beta_schedule: "squaredcos_cap_v2" });
  // ᾱ of the cosine schedule at t: cos²((t/N + s)/(1 + s) · π/2) / cos²(s/(1 + s) · π/2).
  const f = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
  assert.ok(Math.abs(cos.alphasCumprod[499] - f(0.5) / f(0)) < 1e-5);
  assert.ok(cos.betas.every((b) => b <= Math.fround(0.999)));
  const zsnr = DdimScheduler.fromConfig({
    beta_schedule: "scaled_linear",
    beta_start: 0.00085,
    beta_end: 0.012,
    rescale_betas_zero_snr: true,
  });
  assert.ok(zsnr.alphasCumprod[999] < 1e-6);
});

Deno.test("ddim scheduler: unsupported config values name file and field", () => {
  assert.throws(
    () => parseDdimSchedulerConfig({ thresholding: true }, "x/scheduler_config.json"),
    /x\/scheduler_config\.json: field 'thresholding'/,
  );
  assert.throws(
    () => parseDdimSchedulerConfig({ timestep_spacing: "karras" }, "s.json"),
    /s\.json: field 'timestep_spacing' = "karras" is not supported/,
  );
  assert.throws(
    () => parseDdimSchedulerConfig({ beta_schedule: "sigmoid" }, "s.json"),
    /field 'beta_schedule'/,
  );
  assert.throws(
    () => parseDdimSchedulerConfig({ prediction_type: "flow" }, "s.json"),
    /field 'prediction_type'/,
  );
  assert.throws(() => parseDdimSchedulerConfig({ steps_offset: 0.5 }, "s.json"), /'steps_offset'/);
});

Deno.test("ddim scheduler: one step matches diffusers and DDPO", async (t) => {
  const g = await golden("sd-tiny");
  const s = DdimScheduler.fromConfig(
    JSON.parse(await Deno.readTextFile(join(TINY_SD, "scheduler", "scheduler_config.json"))),
  );
  s.setTimesteps(10);
  const timestep = g.get("ddim_step.in.timestep")!.data[0];
  for (const backend of await availableBackends()) {
    await t.step(backend, async () => {
      await useBackend(backend as "cpu");
      const [eps, x, noise, want, wantDdpo] = [
        "ddim_step.in.model_output",
        "ddim_step.in.sample",
        "ddim_step.in.noise",
        "ddim_step.prev_sample_diffusers",
        "ddim_step.prev_sample",
      ].map((k) => nchwToNhwc(g.get(k)!));
      const wantLp = g.get("ddim_step.log_prob")!.data;
      const toNchw = async (x: tf.Tensor) => await x.transpose([0, 3, 1, 2]).data();

      const d = s.step(eps, timestep, x, { eta: 1, noise });
      const e1 = assertClose(
        await toNchw(d.prevSample),
        await toNchw(want),
        TOL[backend],
        "diffusers step",
      );
      const r = s.stepWithLogProb(eps, timestep, x, { eta: 1, noise });
      const e2 = assertClose(
        await toNchw(r.prevSample),
        await toNchw(wantDdpo),
        TOL[backend],
        "ddpo step",
      );
      const e3 = assertClose(await r.logProb.data(), wantLp, TOL[backend], "ddpo log_prob");
      // The differentiable log-prob of the stored sample equals the one of the step.
      const lp = s.logProb(eps, x, timestep, wantDdpo, 1);
      const e4 = assertClose(await lp.data(), wantLp, TOL[backend], "logProb");
      const grad = tf.grad((m: tf.Tensor) => s.logProb(m, x, timestep, wantDdpo, 1).sum())(eps);
      const gs = await grad.abs().sum().data();
      assert.ok(Number.isFinite(gs[0]) && gs[0] > 0, "gradient w.r.t. the model output");
      console.log(
        `${backend}: step ${e1.toExponential(2)}, ddpo ${e2.toExponential(2)}, ` +
          `log_prob ${e3.toExponential(2)}, logProb ${e4.toExponential(2)}`,
      );
      tf.dispose([
        eps,
        x,
        noise,
        want,
        wantDdpo,
        d.prevSample,
        d.predOriginalSample,
        r.prevSample,
        r.logProb,
        r.mean,
        lp,
        grad,
      ]);
    });
  }
});

Deno.test("ddim scheduler: prediction types agree", async () => {
  await useBackend("cpu");
  const common = {
    beta_schedule: "scaled_linear",
    beta_start: 0.00085,
    beta_end: 0.012,
    clip_sample: false,
  };
  const eS = DdimScheduler.fromConfig({ ...common, prediction_type: "epsilon" });
  const vS = DdimScheduler.fromConfig({ ...common, prediction_type: "v_prediction" });
  const xS = DdimScheduler.fromConfig({ ...common, prediction_type: "sample" });
  for (const sch of [eS, vS, xS]) sch.setTimesteps(20);
  const t = eS.timesteps[5];
  const a = eS.alphasCumprod[t];
  const gen = new SeededNoise(3);
  const x0 = gen.normal([1, 4, 4, 4]);
  const eps = gen.normal([1, 4, 4, 4]);
  const x = tf.add(tf.mul(x0, Math.sqrt(a)), tf.mul(eps, Math.sqrt(1 - a)));
  const v = tf.sub(tf.mul(eps, Math.sqrt(a)), tf.mul(x0, Math.sqrt(1 - a)));
  const ref = await eS.step(eps, t, x).prevSample.data();
  assertClose(await vS.step(v, t, x).prevSample.data(), ref, 1e-5, "v_prediction");
  assertClose(await xS.step(x0, t, x).prevSample.data(), ref, 1e-4, "sample prediction");
});

Deno.test("seeded noise: deterministic, resumable, standard normal", () => {
  const a = new SeededNoise(1234);
  const b = new SeededNoise(1234);
  const xs = a.fill(new Float32Array(7));
  assert.deepEqual(xs, b.fill(new Float32Array(7)));
  assert.notDeepEqual(xs, new SeededNoise(1235).fill(new Float32Array(7)));
  const state = JSON.parse(JSON.stringify(a.state()));
  const next = a.fill(new Float32Array(5));
  assert.deepEqual(SeededNoise.fromState(state).fill(new Float32Array(5)), next);
  const big = new SeededNoise(9).fill(new Float32Array(200_000));
  let m = 0;
  let v = 0;
  for (const z of big) m += z;
  m /= big.length;
  for (const z of big) v += (z - m) ** 2;
  v /= big.length;
  assert.ok(Math.abs(m) < 0.01 && Math.abs(v - 1) < 0.02, `mean ${m}, var ${v}`);
  assert.throws(() => SeededNoise.fromState({ s: [1, 2, 3], spare: null } as never));
});
