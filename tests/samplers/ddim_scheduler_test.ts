import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { useBackend } from "../../core/backend.ts";
import { DdimScheduler, parseDdimSchedulerConfig } from "../../samplers/ddim_scheduler.ts";
import { SeededNoise } from "../../core/seeded_noise.ts";
import {
  assertClose,
  availableBackends,
  fixtureJson,
  golden,
  nchwToNhwc,
  TINY_SD,
} from "../_helpers.ts";

// Element-wise fp32 maths: the same bound on every backend (lavapipe's WebGPU is IEEE fp32 too,
// but its exp/log may be a few ulp off).
const TOL: Record<string, number> = { cpu: 1e-4, wasm: 1e-4, webgpu: 1e-4 };

/** The fixture's raw `scheduler/scheduler_config.json`. */
const rawConfig = () => fixtureJson("sd-tiny", "tiny-sd", "scheduler", "scheduler_config.json");

/** The golden run's number of inference steps (the length of `scheduler.timesteps`). */
async function goldenSteps(): Promise<number> {
  return (await golden("sd-tiny")).get("scheduler.timesteps")!.shape[0];
}

/** numpy's rint: round half to even. */
function rint(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}

/**
 * `DDIMScheduler.set_timesteps(n)` of diffusers, written out with numpy's semantics:
 * linspace: `np.linspace(0, N - 1, n).round()[::-1]`; leading: `(np.arange(n) * (N // n))
 * .round()[::-1] + steps_offset`; trailing: `np.round(np.arange(N, 0, -N / n)) - 1`.
 */
function diffusersTimesteps(N: number, n: number, spacing: string, offset: number): number[] {
  switch (spacing) {
    case "linspace": {
      if (n === 1) return [0];
      const step = (N - 1) / (n - 1);
      return Array.from({ length: n }, (_, i) => i === n - 1 ? N - 1 : rint(i * step)).reverse();
    }
    case "leading": {
      const ratio = Math.floor(N / n);
      return Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + offset);
    }
    case "trailing": {
      const step = -N / n;
      // np.arange's length is ceil((stop − start) / step), computed in float64.
      const len = Math.ceil((0 - N) / step);
      return Array.from({ length: len }, (_, i) => rint(N + i * step) - 1);
    }
  }
  throw new Error(`unknown spacing ${spacing}`);
}

Deno.test("ddim scheduler: schedule matches diffusers", async () => {
  const g = await golden("sd-tiny");
  const raw = await rawConfig();
  const s = await DdimScheduler.load(TINY_SD);
  const n = await goldenSteps();
  const ts = s.setTimesteps(n);
  assert.deepEqual(ts, Array.from(g.get("scheduler.timesteps")!.data));
  assert.deepEqual(
    ts,
    diffusersTimesteps(
      s.config.numTrainTimesteps,
      n,
      (raw.timestep_spacing as string) ?? "leading",
      (raw.steps_offset as number) ?? 0,
    ),
    "diffusers' formula on the fixture's config",
  );
  assert.equal(s.alphasCumprod.length, raw.num_train_timesteps ?? 1000);
  const err = assertClose(
    s.alphasCumprod,
    g.get("scheduler.alphas_cumprod")!.data,
    1e-6,
    "alphas_cumprod",
  );
  // The config's own choices are the ones in force (DDIMScheduler's defaults only fill gaps).
  const c = s.config;
  assert.equal(c.setAlphaToOne, raw.set_alpha_to_one ?? true, "set_alpha_to_one");
  assert.equal(c.stepsOffset, raw.steps_offset ?? 0, "steps_offset");
  assert.equal(c.timestepSpacing, raw.timestep_spacing ?? "leading", "timestep_spacing");
  assert.equal(c.predictionType, raw.prediction_type ?? "epsilon", "prediction_type");
  assert.equal(c.clipSample, raw.clip_sample ?? true, "clip_sample");
  assert.equal(s.finalAlphaCumprod, c.setAlphaToOne ? 1 : s.alphasCumprod[0]);
  console.log(`alphas_cumprod max rel err ${err.toExponential(2)}`);
});

Deno.test("ddim scheduler: timesteps follow diffusers' formula for every spacing", async () => {
  const raw = await rawConfig();
  const N = DdimScheduler.fromConfig(raw).config.numTrainTimesteps;
  const cases: [number, number][] = [];
  for (const trainSteps of [N, 1000, 500]) {
    for (const n of [1, 2, 3, 7, 10, 25, 50, await goldenSteps()]) {
      if (n <= trainSteps) cases.push([trainSteps, n]);
    }
  }
  for (const spacing of ["leading", "trailing", "linspace"]) {
    for (const offset of [0, 1, (raw.steps_offset as number) ?? 0]) {
      for (const [trainSteps, n] of cases) {
        const s = DdimScheduler.fromConfig({
          ...raw,
          num_train_timesteps: trainSteps,
          timestep_spacing: spacing,
          steps_offset: offset,
        });
        const want = diffusersTimesteps(trainSteps, n, spacing, offset);
        assert.equal(want.length, n, `numpy gives ${n} ${spacing} timesteps for N = ${trainSteps}`);
        assert.deepEqual(
          s.setTimesteps(n),
          want,
          `${spacing}, N ${trainSteps}, n ${n}, +${offset}`,
        );
      }
    }
  }
  // The spacings really differ (a spacing read as another would be caught above).
  const at = (spacing: string) =>
    DdimScheduler.fromConfig({ ...raw, timestep_spacing: spacing }).setTimesteps(10);
  assert.notDeepEqual(at("leading"), at("trailing"));
  assert.notDeepEqual(at("trailing"), at("linspace"));
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
  s.setTimesteps(await goldenSteps());
  const timestep = g.get("ddim_step.in.timestep")!.data[0];
  // The golden step uses the golden run's η (golden.json's `sample.eta`).
  const eta = (await fixtureJson<{ sample: { eta: number } }>("sd-tiny", "golden.json")).sample.eta;
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

      const d = s.step(eps, timestep, x, { eta, noise });
      const e1 = assertClose(
        await toNchw(d.prevSample),
        await toNchw(want),
        TOL[backend],
        "diffusers step",
      );
      const r = s.stepWithLogProb(eps, timestep, x, { eta, noise });
      const e2 = assertClose(
        await toNchw(r.prevSample),
        await toNchw(wantDdpo),
        TOL[backend],
        "ddpo step",
      );
      const e3 = assertClose(await r.logProb.data(), wantLp, TOL[backend], "ddpo log_prob");
      // The differentiable log-prob of the stored sample equals the one of the step.
      const lp = s.logProb(eps, x, timestep, wantDdpo, eta);
      const e4 = assertClose(await lp.data(), wantLp, TOL[backend], "logProb");
      const grad = tf.grad((m: tf.Tensor) => s.logProb(m, x, timestep, wantDdpo, eta).sum())(eps);
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

/** Host-side DDIM step of diffusers' `DDIMScheduler.step` (ε prediction, no clipping). */
function hostStep(
  eps: Float32Array,
  x: Float32Array,
  noise: Float32Array,
  alphaT: number,
  alphaPrev: number,
  eta: number,
): { prev: Float32Array; mean: Float32Array; std: number } {
  const variance = ((1 - alphaPrev) / (1 - alphaT)) * (1 - alphaT / alphaPrev);
  const std = eta * Math.sqrt(variance);
  const mean = new Float32Array(x.length);
  const prev = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const x0 = (x[i] - Math.sqrt(1 - alphaT) * eps[i]) / Math.sqrt(alphaT);
    mean[i] = Math.sqrt(alphaPrev) * x0 + Math.sqrt(1 - alphaPrev - std * std) * eps[i];
    prev[i] = mean[i] + std * noise[i];
  }
  return { prev, mean, std };
}

/** ε, x and noise [2, 4, 4, 4] from a seed. */
function stepInputs(seed: number): { eps: tf.Tensor; x: tf.Tensor; noise: tf.Tensor } {
  const gen = new SeededNoise(seed);
  return {
    eps: gen.normal([2, 4, 4, 4]),
    x: gen.normal([2, 4, 4, 4]),
    noise: gen.normal([2, 4, 4, 4]),
  };
}

Deno.test("ddim scheduler: η scales the noise by diffusers' variance", async () => {
  await useBackend("cpu");
  const raw: Record<string, unknown> = {
    ...(await rawConfig()),
    prediction_type: "epsilon",
    clip_sample: false,
  };
  const s = DdimScheduler.fromConfig(raw);
  const n = await goldenSteps();
  const ts = s.setTimesteps(n);
  const N = s.config.numTrainTimesteps;
  const { eps, x, noise } = stepInputs(5);
  const [e, xs, z] = [eps.dataSync(), x.dataSync(), noise.dataSync()] as Float32Array[];
  const stds: number[] = [];
  for (const t of [ts[0], ts[Math.floor(n / 2)]]) {
    const alphaT = s.alphasCumprod[t];
    const alphaPrev = s.alphasCumprod[t - Math.floor(N / n)];
    for (const eta of [0, 0.5, 1]) {
      const want = hostStep(e, xs, z, alphaT, alphaPrev, eta);
      const d = s.step(eps, t, x, { eta, noise });
      assertClose(await d.prevSample.data(), want.prev, 1e-5, `step t ${t} η ${eta}`);
      tf.dispose([d.prevSample, d.predOriginalSample]);
      if (eta === 0) continue;
      const r = s.stepWithLogProb(eps, t, x, { eta, noise });
      assert.ok(Math.abs(r.std - want.std) <= 1e-6 * want.std, `std at η ${eta}: ${r.std}`);
      assertClose(await r.prevSample.data(), want.prev, 1e-5, `DDPO step t ${t} η ${eta}`);
      // log N(prev; mean, std²) averaged over C, H, W, per sample.
      const per = xs.length / 2;
      const lp = [0, 1].map((b) => {
        let acc = 0;
        for (let i = b * per; i < (b + 1) * per; i++) {
          acc += -((want.prev[i] - want.mean[i]) ** 2) / (2 * want.std ** 2) -
            Math.log(want.std) - Math.log(Math.sqrt(2 * Math.PI));
        }
        return acc / per;
      });
      assertClose(await r.logProb.data(), lp, 1e-5, `log-prob t ${t} η ${eta}`);
      stds.push(r.std);
      tf.dispose([r.prevSample, r.logProb, r.mean]);
    }
  }
  console.log(`std at η 0.5 and 1: ${stds.map((v) => v.toExponential(3)).join(", ")}`);
  tf.dispose([eps, x, noise]);
});

Deno.test("ddim scheduler: set_alpha_to_one sets the ᾱ after the last step", async () => {
  await useBackend("cpu");
  const raw: Record<string, unknown> = {
    ...(await rawConfig()),
    prediction_type: "epsilon",
    clip_sample: false,
  };
  const n = await goldenSteps();
  const N = DdimScheduler.fromConfig(raw).config.numTrainTimesteps;
  const { eps, x, noise } = stepInputs(6);
  const [e, xs, z] = [eps.dataSync(), x.dataSync(), noise.dataSync()] as Float32Array[];
  const finals: number[] = [];
  for (const one of [true, false]) {
    const s = DdimScheduler.fromConfig({ ...raw, set_alpha_to_one: one });
    assert.equal(s.finalAlphaCumprod, one ? 1 : s.alphasCumprod[0], `set_alpha_to_one ${one}`);
    const last = s.setTimesteps(n).at(-1)!;
    assert.ok(last - Math.floor(N / n) < 0, "the last step has no training timestep after it");
    // diffusers' step: the final ᾱ (1 makes x_prev the predicted x₀ at η = 0).
    const want = hostStep(e, xs, z, s.alphasCumprod[last], s.finalAlphaCumprod, 0);
    const d = s.step(eps, last, x, { eta: 0 });
    assertClose(await d.prevSample.data(), want.prev, 1e-5, `last step, set_alpha_to_one ${one}`);
    if (one) assertClose(await d.prevSample.data(), await d.predOriginalSample.data(), 1e-6, "x₀");
    // DDPO clamps the previous timestep to 0 instead, whatever the flag says.
    const ddpo = hostStep(e, xs, z, s.alphasCumprod[last], s.alphasCumprod[0], 1);
    const r = s.stepWithLogProb(eps, last, x, { eta: 1, noise });
    assertClose(await r.prevSample.data(), ddpo.prev, 1e-5, `DDPO last step, flag ${one}`);
    finals.push(want.prev[0]);
    tf.dispose([d.prevSample, d.predOriginalSample, r.prevSample, r.logProb, r.mean]);
  }
  assert.notEqual(finals[0], finals[1], "the flag changes diffusers' last step");
  tf.dispose([eps, x, noise]);
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
