// UNet sample workers (adapters/unet/_sample_workers.ts): outputs and gradients into the encoder
// states are bitwise those of the model's own call, for even and uneven splits; a forward under
// a tape whose gradient never comes does not block the next call; no tensor leaks; stopping
// returns the calls to the calling thread. The shares' kernel calls are replayed from their
// third call of a shape on (UNet2DConditionModel.forwardShare), with the same bits.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend, wasmThreadsToShare } from "../../../core/backend.ts";
import { parseUNetConfig, UNet2DConditionModel } from "../../../adapters/unet/unet_2d_condition.ts";
import { RandomWeightReader } from "../../../adapters/unet/random_weight_reader.ts";
import { SampleWorkers } from "../../../adapters/unet/_sample_workers.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";
import { TINY_UNET } from "../../../bench/_unet_bench.ts";

function differing(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

Deno.test("UNet sample workers", async (t) => {
  await useBackend("wasm", { wasmThreads: 2 });
  const config = parseUNetConfig(TINY_UNET, "<tiny config>");
  const unet = await UNet2DConditionModel.fromReader(config, new RandomWeightReader(1));
  try {
    const gen = new SeededNoise(7);
    const x = gen.normal([3, 16, 16, config.inChannels]) as tf.Tensor4D;
    const states = gen.normal([3, 77, config.crossAttentionDim[0]]) as tf.Tensor3D;
    const ts = [999, 500, 20];
    const run = (b: number): Float32Array[] =>
      tf.tidy(() => {
        const xb = x.slice(0, b), sb = states.slice(0, b);
        const eps = unet.forward(xb, ts.slice(0, b), sb);
        const g = tf.grad((e: tf.Tensor) =>
          unet.forward(xb, ts.slice(0, b), e as tf.Tensor3D).square().sum()
        )(sb);
        return [eps.dataSync() as Float32Array, g.dataSync() as Float32Array];
      });
    const plain = [run(2), run(3)];

    await t.step(
      "a worker starts (with a cold type-check cache this takes a while)",
      async () => {
        assert.equal(await unet.startSampleWorkers(1), 1);
        assert.equal(unet.sampleWorkers, 1);
      },
    );

    const sameBits = () => {
      const before = tf.memory().numTensors;
      for (const [i, b] of [2, 3].entries()) {
        const shared = run(b);
        assert.equal(differing(shared[0], plain[i][0]), 0, `batch ${b}: output`);
        assert.equal(differing(shared[1], plain[i][1]), 0, `batch ${b}: gradient`);
      }
      assert.equal(tf.memory().numTensors, before, "no tensor leaks");
      assert.equal(wasmThreadsToShare(), 2, "the calling thread's kernels are free again");
    };
    // Four rounds: a shape's first share runs through tfjs' engine, the second is recorded
    // (adapters/wasm/kernel_replay.ts), the later ones replay it, on both threads.
    await t.step("this thread and one worker, batches of 2 and 3: the model's own bits", () => {
      for (let round = 0; round < 4; round++) sameBits();
    });

    await t.step("this thread and two workers: the same", async () => {
      assert.equal(await unet.startSampleWorkers(2), 2);
      sameBits();
    });

    await t.step("a forward under a tape whose gradient never comes does not block", () => {
      // The gradient is taken with respect to x, which the UNet's custom op does not see: its
      // own gradient is never asked for, and its workers wait until the next call frees them.
      const xs = x.slice(0, 2), sb = states.slice(0, 2);
      tf.grad((a: tf.Tensor) => tf.add(a, unet.forward(xs, [999, 500], sb).mean()).sum())(xs)
        .dispose();
      const again = run(2);
      assert.equal(differing(again[1], plain[0][1]), 0, "the next gradient is right");
      assert.equal(wasmThreadsToShare(), 2);
      tf.dispose([xs, sb]);
    });

    await t.step("TEXFORCE_SAMPLE_WORKERS: a bad value is named; off and N are taken", async () => {
      const was = Deno.env.get("TEXFORCE_SAMPLE_WORKERS");
      try {
        Deno.env.set("TEXFORCE_SAMPLE_WORKERS", "two");
        await assert.rejects(
          () => unet.startDefaultSampleWorkers(),
          /TEXFORCE_SAMPLE_WORKERS must be off or a whole number of workers \(got 'two'\)/,
        );
        Deno.env.set("TEXFORCE_SAMPLE_WORKERS", "off");
        assert.equal(await unet.startDefaultSampleWorkers(), 0);
        assert.equal(unet.sampleWorkers, 0, "off stops the running ones");
        Deno.env.set("TEXFORCE_SAMPLE_WORKERS", "1");
        assert.equal(await unet.startDefaultSampleWorkers(), 1);
        Deno.env.delete("TEXFORCE_SAMPLE_WORKERS");
        assert.equal(await unet.startDefaultSampleWorkers(), 1, "unset: one per thread but this");
      } finally {
        if (was === undefined) Deno.env.delete("TEXFORCE_SAMPLE_WORKERS");
        else Deno.env.set("TEXFORCE_SAMPLE_WORKERS", was);
      }
    });

    await t.step("stopping: later calls run on this thread, the same bits", () => {
      unet.stopSampleWorkers();
      assert.equal(unet.sampleWorkers, 0);
      assert.equal(differing(run(2)[1], plain[0][1]), 0);
    });
    await t.step(
      "this thread's share failing leaves the worker free for the next call",
      async () => {
        const workers = await SampleWorkers.start(unet.snapshot(), 1);
        try {
          const xs = x.slice(0, 2), sb = states.slice(0, 2);
          const fails = () => {
            throw new Error("this thread's share failed");
          };
          assert.throws(
            () =>
              tf.grad((e: tf.Tensor) =>
                workers.forward(xs, [999, 500], e as tf.Tensor3D, 0, fails).sum()
              )(sb),
            /this thread's share failed/,
          );
          const g = tf.grad((e: tf.Tensor) =>
            workers.forward(
              xs,
              [999, 500],
              e as tf.Tensor3D,
              0,
              (a, ts, s) => unet.forward(a, ts, s),
            )
              .square().sum()
          )(sb);
          assert.equal(differing(g.dataSync() as Float32Array, plain[0][1]), 0);
          tf.dispose([xs, sb, g]);
        } finally {
          workers.dispose();
        }
      },
    );
    tf.dispose([x, states]);
  } finally {
    unet.dispose();
    await useBackend("wasm");
  }
});
