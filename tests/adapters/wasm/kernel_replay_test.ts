// Kernel replay (adapters/wasm/kernel_replay.ts): a recorded region's output and gradient are
// bitwise those of tfjs' own run for new inputs of the same shapes; replays leak no tensor and
// no backend data; regions that read values back are refused; a replay whose weights are gone
// says it is no longer usable; the UNet's shares replay with the model's own bits.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { KernelReplay } from "../../../adapters/wasm/kernel_replay.ts";
import { parseUNetConfig, UNet2DConditionModel } from "../../../adapters/unet/unet_2d_condition.ts";
import { RandomWeightReader } from "../../../adapters/unet/random_weight_reader.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";
import { TINY_UNET } from "../../../bench/_unet_bench.ts";

function sameBits(a: tf.Tensor, b: tf.Tensor, what: string): void {
  assert.deepEqual(a.shape, b.shape, `${what}: shape`);
  const x = a.dataSync(), y = b.dataSync();
  let n = 0;
  for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) n++;
  assert.equal(n, 0, `${what}: ${n} of ${x.length} values differ`);
}

const dataIds = () => (tf.backend() as unknown as { numDataIds(): number }).numDataIds();

Deno.test("kernel replay", async (t) => {
  await useBackend("wasm", { wasmThreads: 1 });
  const gen = new SeededNoise(3);
  const w = gen.normal([8, 6]) as tf.Tensor2D;
  const bias = gen.normal([6]);
  // Kernels of several kinds: a product, a view (reshape), a concat of an array, a scalar
  // written from JavaScript (a constant), a reduction, and a gradient summed from two uses.
  const region = ([x, s]: tf.Tensor[]): tf.Tensor =>
    tf.tidy(() => {
      const h = tf.relu(tf.add(tf.matMul(x as tf.Tensor2D, w), bias));
      const hs = tf.mul(h, s.reshape([4, 6]));
      const both = tf.concat([hs, tf.mul(s.reshape([4, 6]), 0.5)], 1);
      return tf.sum(tf.square(both), 1);
    });
  const inputsOf = (seed: number) => {
    const g = new SeededNoise(seed);
    return [g.normal([4, 8]), g.normal([2, 12])];
  };

  await t.step("a forward: tfjs' own bits, nothing left behind", () => {
    const [x0, s0] = inputsOf(1);
    const r = KernelReplay.recordForward([x0, s0], region);
    assert.ok(r instanceof KernelReplay, `recorded (${r})`);
    assert.ok(r.kernelCalls.forward > 5);
    for (const seed of [2, 3, 4]) {
      const [x, s] = inputsOf(seed);
      const want = region([x, s]);
      const tensors = tf.memory().numTensors, data = dataIds();
      const { output, saved } = r.forward([x, s]);
      assert.equal(saved.length, 0);
      sameBits(output, want, `seed ${seed}`);
      output.dispose();
      assert.equal(tf.memory().numTensors, tensors, "tensors");
      assert.equal(dataIds(), data, "backend data");
      tf.dispose([x, s, want]);
    }
    const data = dataIds();
    r.dispose();
    assert.ok(dataIds() < data, "the constants go with it");
    tf.dispose([x0, s0]);
  });

  await t.step("forward + backward: the gradient into the last input, bit for bit", () => {
    const [x0, s0] = inputsOf(1);
    const dy0 = tf.onesLike(region([x0, s0]));
    const r = KernelReplay.recordGradient([x0, s0], region, dy0);
    assert.ok(r instanceof KernelReplay, `recorded (${r})`);
    assert.ok(r.savedCount > 0 && r.kernelCalls.backward > 5);
    for (const seed of [5, 6]) {
      const [x, s] = inputsOf(seed);
      const dy = new SeededNoise(seed + 10).normal([4]);
      const want = tf.grad((v: tf.Tensor) => region([x, v]))(s, dy);
      const tensors = tf.memory().numTensors, data = dataIds();
      const { output, saved } = r.forward([x, s]);
      sameBits(output, region([x, s]), `seed ${seed}: output`);
      const g = r.backward(dy, saved);
      sameBits(g, want, `seed ${seed}: gradient`);
      tf.dispose([output, g, ...saved]);
      assert.equal(tf.memory().numTensors, tensors + 1, "tensors (the region's own output above)");
      assert.equal(dataIds(), data + 1, "backend data");
      tf.dispose([x, s, dy, want]);
    }
    r.dispose();
    tf.dispose([x0, s0, dy0]);
  });

  await t.step("refused: a value read back inside; unusable once a weight is gone", () => {
    const x = tf.ones([4, 8]);
    const reads = KernelReplay.recordForward([x], ([v]) => tf.mul(v, v.max().dataSync()[0]));
    assert.equal(reads, "a value was read back inside the region");
    const w2 = tf.ones([8, 2]);
    const r = KernelReplay.recordForward([x], ([v]) => tf.matMul(v as tf.Tensor2D, w2));
    assert.ok(r instanceof KernelReplay);
    assert.ok(r.usable());
    w2.dispose();
    assert.equal(r.usable(), false);
    r.dispose();
    x.dispose();
  });

  await t.step("the UNet's shares: the model's own bits from the third call on", async () => {
    const config = parseUNetConfig(TINY_UNET, "<tiny config>");
    const unet = await UNet2DConditionModel.fromReader(config, new RandomWeightReader(2));
    try {
      const g = new SeededNoise(9);
      const x = g.normal([2, 16, 16, config.inChannels]) as tf.Tensor4D;
      const states = g.normal([2, 77, config.crossAttentionDim[0]]) as tf.Tensor3D;
      const loss = (f: typeof unet.forward) => (e: tf.Tensor) =>
        f(x, [999, 10], e as tf.Tensor3D).square().sum();
      const plain = tf.grad(loss((a, b, c) => unet.forward(a, b, c)))(states);
      const plainOut = unet.forward(x, [999, 10], states);
      for (let call = 0; call < 4; call++) {
        const tensors = tf.memory().numTensors;
        const grad = tf.grad(loss((a, b, c) => unet.forwardShare(a, b as number[], c)))(states);
        sameBits(grad, plain, `call ${call}: gradient`);
        const out = unet.forwardShare(x, [999, 10], states);
        sameBits(out, plainOut, `call ${call}: output`);
        tf.dispose([grad, out]);
        assert.equal(tf.memory().numTensors, tensors, `call ${call}: tensors`);
      }
      // From the third call on, tfjs' engine sees a share as one custom op, not its kernels.
      const profile = await tf.profile(() => {
        tf.dispose(tf.grad(loss((a, b, c) => unet.forwardShare(a, b as number[], c)))(states));
      });
      assert.ok(profile.kernels.length < 20, `${profile.kernels.length} kernels through tfjs`);
      // Switched off: through the engine, kernel by kernel, the same bits; a bad value is named.
      Deno.env.set("TEXFORCE_KERNEL_REPLAY", "off");
      try {
        const off = await tf.profile(() => {
          const grad = tf.grad(loss((a, b, c) => unet.forwardShare(a, b as number[], c)))(states);
          sameBits(grad, plain, "switched off: gradient");
          grad.dispose();
        });
        assert.ok(off.kernels.length > 100, `${off.kernels.length} kernels through tfjs`);
        Deno.env.set("TEXFORCE_KERNEL_REPLAY", "yes");
        assert.throws(
          () => unet.forwardShare(x, [999, 10], states),
          /TEXFORCE_KERNEL_REPLAY must be on, off or verbose \(got 'yes'\)/,
        );
        await assert.rejects(() => unet.startDefaultSampleWorkers(), /TEXFORCE_KERNEL_REPLAY/);
      } finally {
        Deno.env.delete("TEXFORCE_KERNEL_REPLAY");
      }
      tf.dispose([plain, plainOut, x, states]);
    } finally {
      unet.dispose();
    }
  });
});
