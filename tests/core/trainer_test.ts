import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import { useBackend } from "../../core/backend.ts";
import { latestCheckpoint, listCheckpoints, loadCheckpoint } from "../../core/checkpoint.ts";
import { readMetrics, writeReport } from "../../core/report.ts";
import { Trainer, TrainingError } from "../../core/trainer.ts";
import { ppoGradients } from "../../core/ppo_step.ts";
import type { Reward } from "../../core/reward.ts";
import { brightness, disposeParts, fakeParts, fakePipeline } from "../_fake_parts.ts";

async function weights(p: ReturnType<typeof fakeParts>): Promise<number[]> {
  return Array.from(await p.encoder.trainableVariables().get("lora.w")!.data());
}

Deno.test("trainer: 4 epochs straight equal 2 + resume + 2, bit for bit", async () => {
  await useBackend("wasm");
  const dir = await Deno.makeTempDir();
  try {
    const a = fakeParts();
    const ra = await new Trainer(fakePipeline(join(dir, "a")), a, { log: () => {} }).run();
    assert.equal(ra.epochs, 4);
    const b1 = fakeParts();
    await new Trainer(
      fakePipeline(join(dir, "b"), {
        train: {
          epochs: 2,
          batchesPerEpoch: 2,
          batchSize: 4,
          timestepFraction: 0.5,
          clipRange: 0.2,
          perPromptTracking: { minCount: 2 },
        },
      }),
      b1,
      { log: () => {} },
    ).run();
    disposeParts(b1);
    const b2 = fakeParts();
    const rb = await new Trainer(fakePipeline(join(dir, "b")), b2, { resume: true, log: () => {} })
      .run();
    assert.equal(rb.steps, ra.steps);
    assert.deepEqual(await weights(b2), await weights(a));
    const sa = await a.optimizer.getState();
    const sb = await b2.optimizer.getState();
    assert.equal(sa.step, sb.step);
    for (const k of Object.keys(sa.tensors)) {
      assert.deepEqual(Array.from(sb.tensors[k].data), Array.from(sa.tensors[k].data), k);
    }
    // keep: 2 → only the newest two checkpoints remain.
    assert.equal((await listCheckpoints(join(dir, "a", "checkpoints"))).length, 2);
    disposeParts(a);
    disposeParts(b2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("trainer: training raises a brightness reward; metrics and report are written", async () => {
  await useBackend("wasm");
  const dir = await Deno.makeTempDir();
  try {
    const p = fakeParts();
    const cfg = fakePipeline(dir, {
      train: {
        epochs: 8,
        batchesPerEpoch: 2,
        batchSize: 4,
        timestepFraction: 1,
        clipRange: 0.2,
        perPromptTracking: { enabled: false },
      },
      eval: { prompts: ["a cat"], seeds: [1, 2] },
    });
    const before = tf.memory().numTensors;
    const r = await new Trainer(cfg, p, { log: () => {} }).run();
    assert.equal(tf.memory().numTensors, before, "no tensors leak across epochs");
    assert.ok(
      r.rewardMeans[r.rewardMeans.length - 1] > r.rewardMeans[0],
      `rewards ${r.rewardMeans}`,
    );
    const rows = await readMetrics(dir);
    const train = rows.filter((x) => x.type === "train");
    assert.equal(train.length, 8);
    for (const k of ["loss", "approx_kl", "clipfrac", "lr", "grad_norm"]) {
      assert.ok(k in train[0], k);
    }
    const evals = rows.filter((x) => x.type === "eval");
    assert.equal(evals.length, 9, "before + every epoch");
    const html = await Deno.readTextFile(await writeReport(dir, "fake"));
    assert.match(html, /<svg/);
    assert.match(html, /Held-out prompts at fixed seeds: before and after training/);
    assert.match(html, />before<\/text>/, "the held-out axis starts with 'before'");
    disposeParts(p);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("trainer: guard rails", async (t) => {
  await useBackend("wasm");
  const dir = await Deno.makeTempDir();
  try {
    await t.step("a reward that throws names the reward and the prompts", async () => {
      const bad: Reward = {
        name: "broken",
        score: () => Promise.reject(new Error("model missing")),
      };
      const p = fakeParts([bad]);
      await assert.rejects(
        () => new Trainer(fakePipeline(join(dir, "throw")), p, { log: () => {} }).run(),
        (e: Error) =>
          e instanceof TrainingError &&
          /reward 'broken' failed on prompts \[".*"\]: model missing/.test(e.message),
      );
      disposeParts(p);
    });
    await t.step("a NaN reward stops the run and keeps the last good checkpoint", async () => {
      let calls = 0;
      const flaky: Reward = {
        name: "flaky",
        score: async (input) => {
          calls++;
          const s = await brightness().score(input);
          // Epoch 3's first batch (two batches per epoch) returns NaN.
          return calls === 5 ? s.map(() => NaN) : s;
        },
      };
      const p = fakeParts([flaky]);
      const out = join(dir, "nan");
      await assert.rejects(
        () => new Trainer(fakePipeline(out), p, { log: () => {} }).run(),
        /reward 'flaky' returned NaN for prompt/,
      );
      const last = await latestCheckpoint(join(out, "checkpoints"));
      assert.ok(last);
      const c = await loadCheckpoint(last);
      assert.equal(c.state.epoch, 2);
      assert.ok(Object.values(c.weights).every((w) => w.data.every(Number.isFinite)));
      disposeParts(p);
    });
    await t.step("an infinite loss stops the run naming the step", async () => {
      const p = fakeParts();
      const logProb = p.sampler.logProb;
      // The recomputed log-prob overflows: ratio = exp(new - old) = inf.
      p.sampler.logProb = (...args) => tf.tidy(() => logProb(...args).add(1e30) as tf.Tensor1D);
      await assert.rejects(
        () => new Trainer(fakePipeline(join(dir, "inf")), p, { log: () => {} }).run(),
        /non-finite (loss|gradient norm) .* at step \d+ .*last good checkpoint/s,
      );
      disposeParts(p);
    });
    await t.step("an AbortSignal writes an interrupted checkpoint and returns", async () => {
      const p = fakeParts();
      const ctrl = new AbortController();
      const out = join(dir, "abort");
      const r = await new Trainer(fakePipeline(out), p, {
        signal: ctrl.signal,
        log: () => {},
        onProgress: (e) => {
          // Epochs are numbered 1…N in progress events: abort as the second one starts.
          if (e.phase === "sampling" && e.epoch === 2) ctrl.abort();
        },
      }).run();
      assert.ok(r.interrupted);
      // Aborted before any step of epoch 2: the checkpoint of epoch 1 is the state to resume.
      const c = await loadCheckpoint(r.checkpoint);
      assert.equal(c.state.epoch, 1);
      assert.equal(c.state.step, r.steps);
      disposeParts(p);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint: SIGKILL while writing leaves the previous checkpoint loadable", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A child writes large checkpoints in a loop; we kill it mid-write several times.
    const script = join(dir, "writer.ts");
    await Deno.writeTextFile(
      script,
      `import { saveCheckpoint } from ${
        JSON.stringify(new URL("../../core/checkpoint.ts", import.meta.url).href)
      };
const data = new Float32Array(4_000_000).fill(1);
for (let step = Number(Deno.args[1]); ; step++) {
  await saveCheckpoint(Deno.args[0], {
    state: { version: 1, step, epoch: step, lr: 0, tracker: { buffers: {} }, rng: [1, 2, 3, 4], configHash: "x", interrupted: false, savedAt: "" },
    weights: { w: { shape: [4_000_000], data } },
    optimizer: { step, tensors: { "w.exp_avg": { shape: [4_000_000], data } } },
  }, 2);
  console.log("saved", step);
}
`,
    );
    const ckdir = join(dir, "ck");
    let start = 1;
    for (let round = 0; round < 3; round++) {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--config",
          new URL("../../deno.json", import.meta.url).pathname,
          script,
          ckdir,
          String(start),
        ],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const reader = child.stdout.getReader();
      // Wait for at least one completed save, then kill at an arbitrary point of the next.
      await reader.read();
      await new Promise((r) => setTimeout(r, 37 + round * 23));
      child.kill("SIGKILL");
      await child.status;
      reader.releaseLock();
      const last = await latestCheckpoint(ckdir);
      assert.ok(last, "a checkpoint survives");
      const c = await loadCheckpoint(last);
      assert.equal(c.weights.w.data.length, 4_000_000);
      assert.equal(c.weights.w.data[3_999_999], 1);
      start = c.state.step + 1;
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ppoGradients: micro-batches give the minibatch's loss and gradients", async () => {
  await useBackend("wasm");
  const p = fakeParts();
  const vars = p.encoder.trainableVariables();
  const prompts = ["a cat", "a dog", "a red circle", "a cat"];
  const cond = {
    prompt: p.encoder.encode(prompts),
    negative: p.encoder.encode(prompts.map(() => "")),
  };
  const traj = await p.sampler.sample(cond, { seed: 3 });
  const [b, , h, w, c] = traj.latents.shape;
  const at = (j: number) =>
    traj.latents.slice([0, j, 0, 0, 0], [b, 1, h, w, c]).reshape([b, h, w, c]);
  const input = {
    prompt: prompts,
    negative: prompts.map(() => ""),
    latent: at(1) as tf.Tensor4D,
    next: at(2) as tf.Tensor4D,
    oldLogProb: traj.logProbs.slice([0, 1], [b, 1]).reshape([b]).add(0.01) as tf.Tensor1D,
    advantages: tf.tensor1d([1, -0.5, 2, -1]),
    stepIndex: 1,
  };
  const before = tf.memory().numTensors;
  const whole = await ppoGradients(p.encoder, p.sampler, vars, input, {
    clipRange: 0.2,
    advClipMax: 5,
  });
  for (const m of [1, 3]) {
    const parts = await ppoGradients(p.encoder, p.sampler, vars, input, {
      clipRange: 0.2,
      advClipMax: 5,
      microBatchSize: m,
    });
    assert.ok(
      Math.abs(parts.loss - whole.loss) <= 1e-6 * Math.max(1, Math.abs(whole.loss)),
      `${m}`,
    );
    assert.ok(Math.abs(parts.approxKl - whole.approxKl) <= 1e-6 * Math.max(1, whole.approxKl));
    assert.equal(parts.clipFraction.toFixed(6), whole.clipFraction.toFixed(6));
    assert.deepEqual(
      parts.newLogProb.map((x) => x.toFixed(4)),
      whole.newLogProb.map((x) => x.toFixed(4)),
    );
    const g = Array.from(await parts.grads["lora.w"].data());
    const ref = Array.from(await whole.grads["lora.w"].data());
    const scale = Math.max(...ref.map(Math.abs));
    for (let i = 0; i < g.length; i++) {
      assert.ok(
        Math.abs(g[i] - ref[i]) <= 1e-5 * scale,
        `micro-batch ${m}: grad[${i}] ${g[i]} vs ${ref[i]}`,
      );
    }
    tf.dispose(Object.values(parts.grads));
  }
  tf.dispose(Object.values(whole.grads));
  assert.equal(tf.memory().numTensors, before, "no tensors leak");
  tf.dispose([cond.prompt, cond.negative, traj.latents, traj.logProbs, traj.images]);
  tf.dispose([input.latent, input.next, input.oldLogProb, input.advantages]);
  disposeParts(p);
});
