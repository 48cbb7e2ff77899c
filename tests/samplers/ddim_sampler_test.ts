import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { useBackend } from "../../core/backend.ts";
import { ClipLoraEncoder } from "../../adapters/encoder/clip_lora_encoder.ts";
import type { Conditioning, Encoder } from "../../core/mod.ts";
import { parsePluginOptions } from "../../core/plugin.ts";
import {
  DdimSampler,
  ddimSamplerPlugin,
  loadStableDiffusion,
  type StableDiffusion,
} from "../../samplers/mod.ts";
import { DdimScheduler, parseDdimSchedulerConfig } from "../../samplers/ddim_scheduler.ts";
import { SeededNoise } from "../../core/seeded_noise.ts";
import type { UNet2DConditionModel } from "../../adapters/unet/unet_2d_condition.ts";
import {
  assertClose,
  availableBackends,
  fixture,
  fixtureJson,
  golden,
  nchwToNhwc,
  TINY_SD,
} from "../_helpers.ts";

// Lavapipe's WebGPU: see unet_test.ts; ten guided steps compound to ~1e-5 in practice.
const TOL: Record<string, number> = { cpu: 1e-4, wasm: 1e-4, webgpu: 1e-3 };

/** The golden run's sampler settings (golden.json's `sample`). */
async function goldenSettings(): Promise<{ steps: number; eta: number; guidance: number }> {
  const j = await fixtureJson<{
    sample: { num_inference_steps: number; eta: number; guidance_scale: number };
  }>("sd-tiny", "golden.json");
  return {
    steps: j.sample.num_inference_steps,
    eta: j.sample.eta,
    guidance: j.sample.guidance_scale,
  };
}

/** Facts of the fixture's pipeline, from its config files. */
async function pipelineFacts(): Promise<{
  side: number;
  channels: number;
  crossDim: number;
  imageSide: number;
  imageChannels: number;
  scheduler: Record<string, unknown>;
}> {
  const unet = await fixtureJson("sd-tiny", "tiny-sd", "unet", "config.json");
  const vae = await fixtureJson("sd-tiny", "tiny-sd", "vae", "config.json");
  const cross = unet.cross_attention_dim;
  const side = unet.sample_size as number;
  return {
    side,
    channels: unet.in_channels as number,
    crossDim: (Array.isArray(cross) ? cross[0] : cross) as number,
    imageSide: side * 2 ** ((vae.block_out_channels as number[]).length - 1),
    imageChannels: vae.out_channels as number,
    scheduler: await fixtureJson("sd-tiny", "tiny-sd", "scheduler", "scheduler_config.json"),
  };
}

/** The golden run's prompt states, from the CLIP encoder with the PEFT LoRA. */
async function goldenConditioning(): Promise<Conditioning> {
  const enc = await ClipLoraEncoder.load(TINY_SD, {
    train: false,
    adapters: [{ path: fixture("sd-tiny", "lora_peft") }],
  });
  const g = await golden("sd-tiny");
  const ids = (k: string) =>
    tf.tensor2d(g.get(k)!.data as Int32Array, g.get(k)!.shape as [number, number], "int32");
  const cond = {
    prompt: enc.encodeIds(ids("sample.in.prompt_ids")),
    negative: enc.encodeIds(ids("sample.in.negative_ids")),
  };
  enc.dispose();
  return cond;
}

async function goldenNoise(): Promise<{ init: tf.Tensor4D; steps: tf.Tensor5D }> {
  const g = await golden("sd-tiny");
  const sn = g.get("sample.in.step_noise")!;
  return {
    init: nchwToNhwc(g.get("sample.in.init_noise")!),
    steps: tf.tidy(() =>
      tf.tensor5d(sn.data as Float32Array, sn.shape as [number, number, number, number, number])
        .transpose([0, 1, 3, 4, 2]) as tf.Tensor5D
    ),
  };
}

Deno.test("ddim sampler: guided DDIM run matches diffusers/DDPO", async (t) => {
  const g = await golden("sd-tiny");
  const settings = await goldenSettings();
  const T = settings.steps;
  const latents = g.get("sample.latents")!; // [B, T + 1, C, H, W]
  const [B, , C, H, W] = latents.shape;
  assert.deepEqual(latents.shape, [B, T + 1, C, H, W], "golden latents hold x_T … x_0");
  assert.deepEqual(g.get("sample.log_probs")!.shape, [B, T]);
  const wantLatents = latents.data;
  const wantLp = g.get("sample.log_probs")!.data;
  const wantImages = g.get("sample.images")!.data;
  for (const backend of await availableBackends()) {
    await t.step(backend, async () => {
      await useBackend(backend as "cpu");
      const cond = await goldenConditioning();
      const sd = await loadStableDiffusion(TINY_SD);
      const sampler = new DdimSampler(sd, settings, true);
      assert.deepEqual(sampler.timesteps, Array.from(g.get("scheduler.timesteps")!.data));
      if (backend === "cpu") {
        // The plain-JS backend is slow: check the first and last steps through logProb.
        const lat = tf.tensor5d(wantLatents as Float32Array, [B, T + 1, C, H, W]).transpose([
          0,
          1,
          3,
          4,
          2,
        ]);
        for (const j of [0, T - 1]) {
          const xj = lat.gather(j, 1) as tf.Tensor4D;
          const xn = lat.gather(j + 1, 1) as tf.Tensor4D;
          const lp = await sampler.logProb(cond, xj, xn, j).data();
          const err = assertClose(
            lp,
            Array.from({ length: B }, (_, b) => wantLp[b * T + j]),
            TOL.cpu,
            `cpu log-prob step ${j}`,
          );
          console.log(`cpu: step ${j} log-prob err ${err.toExponential(2)}`);
        }
        sampler.dispose();
        return;
      }
      const { init, steps } = await goldenNoise();
      const t0 = performance.now();
      const traj = await sampler.sample(cond, { initNoise: init, stepNoise: steps });
      const ms = performance.now() - t0;
      assert.deepEqual(traj.latents.shape, [B, T + 1, H, W, C]);
      const e1 = assertClose(
        await traj.latents.transpose([0, 1, 4, 2, 3]).data(),
        wantLatents,
        TOL[backend],
        "latents",
      );
      const e2 = assertClose(await traj.logProbs.data(), wantLp, TOL[backend], "log_probs");
      const e3 = assertClose(
        await traj.images.transpose([0, 3, 1, 2]).data(),
        wantImages,
        TOL[backend],
        "images",
      );
      console.log(
        `${backend}: latents ${e1.toExponential(2)}, log_probs ${e2.toExponential(2)}, ` +
          `images ${e3.toExponential(2)} (${ms.toFixed(0)} ms)`,
      );
      tf.dispose([
        init,
        steps,
        cond.prompt,
        cond.negative,
        traj.latents,
        traj.logProbs,
        traj.images,
      ]);
      sampler.dispose();
    });
  }
});

/** x_j of a trajectory's latents [B, T+1, H, W, C]. */
const at = (latents: tf.Tensor5D, j: number) => latents.gather(j, 1) as unknown as tf.Tensor4D;

async function tinyCond(): Promise<Conditioning> {
  const g = await golden("sd-tiny");
  const e = g.get("unet.in.encoder_hidden_states")!;
  const prompt = tf.tensor3d(e.data as Float32Array, e.shape as [number, number, number]);
  return { prompt, negative: tf.tidy(() => tf.mul(prompt.reverse(1), 0.5) as tf.Tensor3D) };
}

Deno.test("ddim sampler: seeds, batch splitting, log-prob recomputation, gradients", async () => {
  await useBackend("wasm");
  const sd = await loadStableDiffusion(TINY_SD);
  const facts = await pipelineFacts();
  const cond = await tinyCond();
  const batch = cond.prompt.shape[0];
  const a = new DdimSampler(sd, { steps: 4, unetBatchSize: 2 });
  const b = new DdimSampler(sd, { steps: 4, unetBatchSize: 1 });
  let calls = 0;
  const ta = await a.sample(cond, {
    seed: 11,
    onStep: (i, n) => {
      assert.equal(n, 4, `step ${i}`);
      calls++;
    },
  });
  assert.equal(calls, 4);
  const tb = await b.sample(cond, { seed: 11 });
  assert.deepEqual(ta.timesteps, DdimScheduler.fromConfig(facts.scheduler).setTimesteps(4));
  assert.deepEqual(ta.images.shape, [batch, facts.imageSide, facts.imageSide, facts.imageChannels]);
  assertClose(
    await tb.latents.data(),
    await ta.latents.data(),
    1e-5,
    "batchSize does not change results",
  );
  assertClose(await tb.logProbs.data(), await ta.logProbs.data(), 1e-5, "batchSize log-probs");
  const tc = await a.sample(cond, { seed: 12 });
  assert.notDeepEqual(await tc.latents.data(), await ta.latents.data());

  // The recomputed log-prob of each stored transition equals the recorded one.
  for (let j = 0; j < 4; j++) {
    const x = at(ta.latents, j);
    const n = at(ta.latents, j + 1);
    const lp = await a.logProb(cond, x, n, j).data();
    assertClose(lp, await ta.logProbs.gather(j, 1).data(), 1e-4, `log-prob step ${j}`);
    tf.dispose([x, n]);
  }
  // Gradient of the log-prob into the prompt states (what TexForce trains through).
  const x1 = at(ta.latents, 1);
  const x2 = at(ta.latents, 2);
  const grad = tf.grad((p: tf.Tensor) =>
    a.logProb({ prompt: p as tf.Tensor3D, negative: cond.negative }, x1, x2, 1).sum()
  )(cond.prompt);
  const [abs, finite] = await Promise.all([
    grad.abs().sum().data(),
    tf.all(tf.isFinite(grad)).data(),
  ]);
  assert.ok(finite[0] === 1 && abs[0] > 0, `gradient finite and non-zero (${abs[0]})`);
  tf.dispose([
    ta.latents,
    ta.logProbs,
    ta.images,
    tb.latents,
    tb.logProbs,
    tb.images,
    tc.latents,
    tc.logProbs,
    tc.images,
    x1,
    x2,
    grad,
  ]);

  // Repeated sampling does not grow the tensor count.
  const counts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const tr = await a.sample(cond, { seed: i });
    tf.dispose([tr.latents, tr.logProbs, tr.images]);
    counts.push(tf.memory().numTensors);
  }
  assert.equal(counts[2], counts[0], `tensors after each run: ${counts}`);
  // logProb leaves nothing behind either.
  const before = tf.memory().numTensors;
  const x = tf.zeros([batch, facts.side, facts.side, facts.channels]) as tf.Tensor4D;
  a.logProb(cond, x, x, 0).dispose();
  x.dispose();
  assert.equal(tf.memory().numTensors, before);

  // Abort between steps.
  const ctl = new AbortController();
  await assert.rejects(
    () =>
      a.sample(cond, {
        seed: 1,
        onStep: (i) => i === 2 && ctl.abort(new Error("stop")),
        signal: ctl.signal,
      }),
    /stop/,
  );
  assert.equal(tf.memory().numTensors, before, "an aborted run frees its tensors");
  sd.dispose();
});

/**
 * A pipeline around a stand-in UNet with a known output, ε = 0.3·x + mean(states) + t/1000 per
 * sample, so that guided steps can be recomputed by hand; it records each call's batch size.
 */
async function stubPipeline(): Promise<{ model: StableDiffusion; calls: number[] }> {
  const f = await pipelineFacts();
  const calls: number[] = [];
  const unet = {
    config: {
      inChannels: f.channels,
      outChannels: f.channels,
      sampleSize: f.side,
      crossAttentionDim: [f.crossDim],
    },
    attentionSlice: 0,
    forward(x: tf.Tensor4D, t: number, states: tf.Tensor3D): tf.Tensor4D {
      calls.push(x.shape[0]);
      return tf.tidy(() =>
        tf.add(tf.mul(x, 0.3), tf.add(states.mean([1, 2]).reshape([-1, 1, 1, 1]), t / 1000))
      );
    },
    dispose() {},
  } as unknown as UNet2DConditionModel;
  const model: StableDiffusion = {
    path: TINY_SD,
    unet,
    vae: null,
    schedulerConfig: parseDdimSchedulerConfig(f.scheduler),
    dispose() {},
  };
  return { model, calls };
}

Deno.test("ddim sampler: guidance ε_u + g·(ε_c − ε_u) and η reach every step", async () => {
  await useBackend("cpu");
  const { model, calls } = await stubPipeline();
  const golden = await goldenSettings();
  const { side, channels, crossDim } = await pipelineFacts();
  const b = 2;
  const T = 3;
  const gen = new SeededNoise(21);
  const cond: Conditioning = {
    prompt: gen.normal([b, 5, crossDim]) as tf.Tensor3D,
    negative: gen.normal([b, 5, crossDim]) as tf.Tensor3D,
  };
  const init = gen.normal([b, side, side, channels]) as tf.Tensor4D;
  const stepNoise = gen.normal([T, b, side, side, channels]) as tf.Tensor5D;
  const stub = (x: tf.Tensor, t: number, states: tf.Tensor) =>
    model.unet.forward(x as tf.Tensor4D, t, states as tf.Tensor3D);
  for (const guidance of [golden.guidance, 1]) {
    for (const eta of [golden.eta, 0.5]) {
      const sampler = new DdimSampler(model, { steps: T, eta, guidance, unetBatchSize: b });
      calls.length = 0;
      const traj = await sampler.sample(cond, { initNoise: init, stepNoise });
      // One UNet call per step: [negative; prompt] when guided, the prompt alone at g = 1.
      assert.deepEqual(calls, Array(T).fill(guidance === 1 ? b : 2 * b), `calls at g ${guidance}`);
      const sch = new DdimScheduler(model.schedulerConfig);
      const ts = sch.setTimesteps(T);
      assert.deepEqual(traj.timesteps, ts);
      let x: tf.Tensor = init;
      for (let j = 0; j < T; j++) {
        const eps = tf.tidy(() => {
          const c = stub(x, ts[j], cond.prompt);
          if (guidance === 1) return c;
          const u = stub(x, ts[j], cond.negative);
          return tf.add(u, tf.mul(tf.sub(c, u), guidance));
        });
        const noise = tf.tidy(() => stepNoise.slice(j, 1).squeeze([0]));
        const r = sch.stepWithLogProb(eps, ts[j], x, { eta, noise });
        const what = `g ${guidance}, η ${eta}, step ${j}`;
        const got = tf.tidy(() => traj.latents.gather(j + 1, 1));
        assertClose(await got.data(), await r.prevSample.data(), 1e-5, `${what} latent`);
        const lp = tf.tidy(() => traj.logProbs.gather(j, 1));
        assertClose(await lp.data(), await r.logProb.data(), 1e-5, `${what} log-prob`);
        if (x !== init) x.dispose();
        x = r.prevSample;
        tf.dispose([eps, noise, got, lp, r.logProb, r.mean]);
      }
      x.dispose();
      tf.dispose([traj.latents, traj.logProbs, traj.images]);
      sampler.dispose();
    }
  }
  tf.dispose([cond.prompt, cond.negative, init, stepNoise]);
});

Deno.test("ddim sampler: eta 0, guidance 1, input checks", async () => {
  await useBackend("wasm");
  const sd = await loadStableDiffusion(TINY_SD);
  const { side, channels: ch, crossDim } = await pipelineFacts();
  const cond = await tinyCond();
  const b = cond.prompt.shape[0];
  const init = tf.randomNormal([b, side, side, ch]) as tf.Tensor4D;
  const det = new DdimSampler(sd, { steps: 3, eta: 0, guidance: 1 });
  const r1 = await det.sample(cond, { initNoise: init, seed: 1 });
  const r2 = await det.sample(cond, { initNoise: init, seed: 2 });
  assert.deepEqual(await r1.latents.data(), await r2.latents.data(), "η = 0 is deterministic");
  assert.deepEqual(Array.from(await r1.logProbs.data()), Array(b * 3).fill(0));
  assert.throws(() => det.logProb(cond, init, init, 0), /eta must be > 0/);
  const s = new DdimSampler(sd, { steps: 3 });
  await assert.rejects(
    () => s.sample(cond, { initNoise: tf.zeros([b + 1, side, side, ch]) as tf.Tensor4D }),
    /initNoise has shape/,
  );
  await assert.rejects(
    () =>
      s.sample(cond, {
        initNoise: init,
        stepNoise: tf.zeros([2, b, side, side, ch]) as tf.Tensor5D,
      }),
    (e: Error) =>
      e.message.includes(
        `stepNoise has shape [2,${b},${side},${side},${ch}]; ` +
          `expected [3, ${b}, ${side}, ${side}, ${ch}]`,
      ),
  );
  await assert.rejects(
    () =>
      s.sample({
        prompt: tf.zeros([b, 7, crossDim + 1]),
        negative: tf.zeros([b, 7, crossDim + 1]),
      }),
    (e: Error) =>
      e.message.includes(
        `encoder states are ${crossDim + 1} wide, the UNet cross-attends to ${crossDim}`,
      ),
  );
  assert.throws(() => s.logProb(cond, init, init, 3), /step index 3/);
  assert.throws(() => new DdimSampler(sd, { steps: 0 }), /steps 0/);
  tf.dispose([init, r1.latents, r1.logProbs, r1.images, r2.latents, r2.logProbs, r2.images]);
  sd.dispose();
});

Deno.test("ddim sampler: pixel-space model without a VAE", async () => {
  await useBackend("wasm");
  const sd = await loadStableDiffusion(TINY_SD);
  const pixel: StableDiffusion = { ...sd, vae: null };
  const s = new DdimSampler(pixel, { steps: 2 });
  const tr = await s.sample(await tinyCond(), { seed: 3 });
  const last = tr.latents.gather(2, 1);
  const want = tf.clipByValue(tf.add(tf.mul(last, 0.5), 0.5), 0, 1);
  assertClose(await tr.images.data(), await want.data(), 1e-6, "images = clamp(x/2 + 0.5)");
  sd.dispose();
  // A folder without a VAE needs a 3-channel UNet.
  const dir = await Deno.makeTempDir({ prefix: "sd_novae_" });
  const index = JSON.parse(await Deno.readTextFile(join(TINY_SD, "model_index.json")));
  delete index.vae;
  await Deno.writeTextFile(join(dir, "model_index.json"), JSON.stringify(index));
  for (const c of ["unet", "scheduler", "text_encoder", "tokenizer"]) {
    await Deno.symlink(join(TINY_SD, c), join(dir, c));
  }
  await assert.rejects(
    () => loadStableDiffusion(dir),
    /model_index\.json: the pipeline has no 'vae', so the UNet must work on RGB pixels/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("ddim sampler: plugin", async () => {
  await useBackend("wasm");
  assert.equal(ddimSamplerPlugin.kind, "sampler");
  assert.equal(ddimSamplerPlugin.name, "ddim");
  assert.throws(
    () => parsePluginOptions(ddimSamplerPlugin, { stepz: 3 }, "sampler.options"),
    /stepz/,
  );
  assert.throws(
    () => parsePluginOptions(ddimSamplerPlugin, { eta: -1 }, "sampler.options"),
    /sampler\.options\.eta/,
  );
  const o = parsePluginOptions(ddimSamplerPlugin, { steps: 3 }, "sampler.options");
  assert.deepEqual([o.steps, o.eta, o.guidance, o.unetBatchSize], [3, 1, 5, 4]);
  const s = await ddimSamplerPlugin.create(o, { baseDir: "/", modelPath: TINY_SD });
  assert.equal(s.numSteps, 3);
  s.dispose();
  const { crossDim } = await pipelineFacts();
  const encoder = { name: "fake", hiddenSize: crossDim + 1 } as Encoder;
  await assert.rejects(
    async () => await ddimSamplerPlugin.create(o, { baseDir: "/", modelPath: TINY_SD, encoder }),
    new RegExp(
      `encoder 'fake' is ${crossDim + 1} wide, but the UNet of .* cross-attends to ${crossDim}\\b`,
    ),
  );
  await assert.rejects(
    async () => await ddimSamplerPlugin.create(o, { baseDir: "/" }),
    /no model folder/,
  );
});
