// Kernel-ready copies of frozen weights (adapters/nn/weight_copies.ts, frozen_copies.ts): a loaded
// UNet or VAE decoder makes its packed linears and flipped convolution filters once, so its
// forward + backward pass runs no packing or flipping kernels and leaves no tensors behind, and
// disposing it releases them all; an unregistered weight gets its copies per call and keeps none.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { UNet2DConditionModel } from "../../../adapters/unet/unet_2d_condition.ts";
import { VaeDecoder } from "../../../adapters/vae/vae_decoder.ts";
import { linear } from "../../../adapters/nn/linear.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";
import { TINY_SD } from "../../_helpers.ts";

Deno.test("weight copies: made at load, used by every call, released with the model", async (t) => {
  await useBackend("wasm", { wasmThreads: 1 });
  const gen = new SeededNoise(2);
  const empty = tf.memory().numTensors;
  const unet = await UNet2DConditionModel.load(join(TINY_SD, "unet"));
  const loaded = tf.memory().numTensors;
  const side = unet.config.sampleSize;
  const x = gen.normal([2, side, side, unet.config.inChannels]) as tf.Tensor4D;
  const states = gen.normal([2, 7, unet.config.crossAttentionDim[0]]) as tf.Tensor3D;

  await t.step("forward + backward runs no packing or filter flipping", async () => {
    const names = new Set<string>();
    const prof = await tf.profile(() => {
      tf.grad((e: tf.Tensor) => unet.forward(x, [10, 500], e as tf.Tensor3D).square().sum())(
        states,
      ).dispose();
    });
    for (const k of prof.kernels) names.add(k.name);
    assert.ok(names.has("TexforceWasmPackedMatMul"), "the packed product ran");
    for (const made of ["TexforceWasmPack", "Reverse"]) {
      assert.ok(!names.has(made), `${made} ran: copies were remade per call`);
    }
    assert.equal(tf.memory().numTensors, loaded + 2, "only the inputs are left");
  });

  await t.step("an unregistered weight gets copies per call and keeps none", () => {
    const w = { weight: gen.normal([16, 8]) as tf.Tensor2D };
    const input = gen.normal([3, 16]);
    const before = tf.memory().numTensors;
    linear(input, w).dispose();
    assert.equal(tf.memory().numTensors, before, "nothing is left");
    tf.dispose([w.weight, input]);
  });

  tf.dispose([x, states]);
  unet.dispose();
  assert.equal(tf.memory().numTensors, empty, "dispose releases the weights and their copies");
});

Deno.test("weight copies: the VAE decoder keeps its own and releases them", async () => {
  await useBackend("wasm", { wasmThreads: 1 });
  const empty = tf.memory().numTensors;
  const vae = await VaeDecoder.load(join(TINY_SD, "vae"));
  const z = new SeededNoise(4).normal([1, 8, 8, vae.config.latentChannels]) as tf.Tensor4D;
  const names = new Set<string>();
  const prof = await tf.profile(() => {
    tf.grad((x: tf.Tensor) => vae.decode(x as tf.Tensor4D).square().sum())(z).dispose();
  });
  for (const k of prof.kernels) names.add(k.name);
  for (const made of ["TexforceWasmPack", "Reverse"]) {
    assert.ok(!names.has(made), `${made} ran: copies were remade per call`);
  }
  z.dispose();
  vae.dispose();
  assert.equal(tf.memory().numTensors, empty, "dispose releases the weights and their copies");
});
