// texforce's fused transformer-block and ResNet parts on wasm (adapters/wasm/fused_*.ts), beyond
// the UNet's and the VAE's bitwise checks (tests/adapters/unet, tests/adapters/vae): the time
// projection's gradient, which the models never ask for; only frozen, registered weights are
// taken; misfit shapes are refused naming them; no tensors left behind.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import {
  loadResnetBlock,
  resnetBlock,
  type ResnetBlockWeights,
} from "../../../adapters/unet/resnet_block.ts";
import { RandomWeightReader } from "../../../adapters/unet/random_weight_reader.ts";
import { keepFrozenCopies, releaseFrozenCopies } from "../../../adapters/nn/frozen_copies.ts";
import { sameConvOf } from "../../../adapters/nn/conv2d.ts";
import { keepLinearCopies, packedLinearOf } from "../../../adapters/nn/linear.ts";
import { releaseWeightCopies } from "../../../adapters/nn/weight_copies.ts";
import { setWasmKernels } from "../../../adapters/wasm/kernel_options.ts";
import { packWeight } from "../../../adapters/wasm/packed_matmul.ts";
import {
  fusedResnetBlock,
  fusedResnetBlockFits,
  type FusedResnetBlockParts,
} from "../../../adapters/wasm/fused_resnet_block.ts";
import {
  fusedFeedForward,
  fusedFeedForwardFits,
  type FusedFeedForwardParts,
} from "../../../adapters/wasm/fused_feed_forward.ts";
import {
  fusedAttentionBlock,
  fusedAttentionBlockFits,
  type FusedAttentionBlockParts,
} from "../../../adapters/wasm/fused_attention_block.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";
import { tensorRelativeError } from "../../_helpers.ts";
import type { Tensor1D, Tensor2D, Tensor4D } from "../../../core/tensor_types.ts";

// A ResNet block's output and its gradients into x and the time embedding (dataSync'd), with the
// fused block on and off, for a weighted-sum loss along dy.
function fusedAndStock(
  w: ResnetBlockWeights,
  x: Tensor4D,
  temb: Tensor2D,
  dy: tf.Tensor,
): [Float32Array[], Float32Array[]] {
  const loss = (a: tf.Tensor, b: tf.Tensor) =>
    tf.sum(tf.mul(resnetBlock(w, a as Tensor4D, b as Tensor2D), dy));
  const run = (on: boolean) =>
    tf.tidy(() => {
      const before = setWasmKernels({ fusedResnetBlock: on });
      const out = [resnetBlock(w, x, temb), ...tf.grads(loss)([x, temb])];
      setWasmKernels(before);
      return out.map((o) => o.dataSync() as Float32Array);
    });
  return [run(true), run(false)];
}

const shape = {
  inChannels: 8,
  outChannels: 16,
  tembChannels: 12,
  groups: 4,
  eps: 1e-5,
  outputScaleFactor: 1,
};

Deno.test("wasm fused blocks: gradients, frozen weights only, refusals", async (t) => {
  await useBackend("wasm", { wasmThreads: 1 });
  const gen = new SeededNoise(11);
  const w = await loadResnetBlock(new RandomWeightReader(5), shape);
  keepFrozenCopies(w);
  const start = tf.memory().numTensors;

  await t.step("ResNet: d/d x bitwise, d/d time embedding as tfjs' composition", () => {
    tf.tidy(() => {
      const x = gen.normal([2, 4, 4, 8]) as Tensor4D;
      const temb = gen.normal([2, 12]) as Tensor2D;
      const dy = gen.normal([2, 4, 4, 16]);
      const [fused, stock] = fusedAndStock(w, x, temb, dy);
      assert.deepEqual(fused[0], stock[0], "output bitwise");
      assert.deepEqual(fused[1], stock[1], "d/d x bitwise");
      // Σ over positions in float64 here, tfjs' Sum in float32: equal to rounding.
      const e = tensorRelativeError(tf.tensor(fused[2]), tf.tensor(stock[2]));
      assert.ok(e < 1e-6, `d/d temb: ${e}`);
      assert.notDeepEqual(Array.from(fused[2]), Array(24).fill(0), "d/d temb is not zero");
    });
  });

  await t.step(
    "ResNet projecting the time embedding in its kernel: same bits, one node",
    async () => {
      // Width 16: the time projection packs both ways, so the fused block takes the embedding.
      const n0 = tf.memory().numTensors;
      const wp = await loadResnetBlock(new RandomWeightReader(6), { ...shape, tembChannels: 16 });
      keepFrozenCopies(wp);
      assert.ok(packedLinearOf(wp.timeEmbProj!), "the projection is packed");
      const [x, temb, dy] = tf.tidy(() => [
        gen.normal([2, 4, 4, 8]) as Tensor4D,
        gen.normal([2, 16]) as Tensor2D,
        gen.normal([2, 4, 4, 16]),
      ]);
      const [fused, stock] = fusedAndStock(wp, x, temb, dy);
      assert.deepEqual(fused[0], stock[0], "output bitwise");
      assert.deepEqual(fused[1], stock[1], "d/d x bitwise");
      // Σ over positions in float64 here, tfjs' Sum in float32, then the same product.
      const e = tf.tidy(() => tensorRelativeError(tf.tensor(fused[2]), tf.tensor(stock[2])));
      assert.ok(e < 1e-6, `d/d temb: ${e}`);
      const profile = await tf.profile(() => resnetBlock(wp, x, temb));
      const names = profile.kernels.map((k) => k.name);
      assert.ok(names.includes("TexforceWasmResnetBlock"), names.join(", "));
      assert.ok(!names.includes("TexforceWasmPackedMatMul"), `no projection node: ${names}`);
      tf.dispose(profile.result as tf.Tensor);
      // Without the packed product the projection stays outside (tfjs' own product), so the
      // fused block still matches the ops bit for bit.
      const before = setWasmKernels({ packedMatmul: false });
      const [unpacked, unpackedStock] = fusedAndStock(wp, x, temb, dy);
      setWasmKernels(before);
      assert.deepEqual(unpacked[0], unpackedStock[0], "packedMatmul off: output bitwise");
      assert.deepEqual(unpacked[1], unpackedStock[1], "packedMatmul off: d/d x bitwise");
      tf.dispose([x, temb, dy]);
      releaseFrozenCopies(wp);
      // tf.dispose walks nested objects: every weight of the block.
      tf.dispose(wp as unknown as tf.TensorContainer);
      assert.equal(tf.memory().numTensors, n0, "no tensors left behind");
    },
  );

  await t.step("only frozen, registered weights are taken", () => {
    tf.tidy(() => {
      assert.ok(sameConvOf(w.conv1), "registered conv");
      const trainable = tf.variable(w.conv1.weight);
      assert.equal(sameConvOf({ ...w.conv1, weight: trainable }), null, "trainable conv");
      trainable.dispose();
      assert.equal(
        sameConvOf({ ...w.conv1, weight: w.conv1.weight.clone() }),
        null,
        "unregistered",
      );
      assert.equal(sameConvOf({ ...w.conv1, stride: 2 }), null, "stride 2");
      const linear = { weight: gen.normal([16, 8]) as Tensor2D };
      assert.equal(packedLinearOf(linear), null, "unregistered linear");
      keepLinearCopies(linear);
      assert.ok(packedLinearOf(linear), "registered linear");
      releaseWeightCopies([linear.weight]);
      // The time projection's wᵀ (width 12) is no multiple of 8: no packed input gradient.
      assert.equal(
        packedLinearOf(w.timeEmbProj!),
        null,
        "a width the packed product does not take",
      );
    });
  });

  await t.step("misfit shapes and switches are refused, naming the shapes", () => {
    tf.tidy(() => {
      const c1 = sameConvOf(w.conv1)!;
      const c2 = sameConvOf(w.conv2)!;
      const norm = (n: typeof w.norm1) => ({
        gamma: n.weight,
        beta: n.bias,
        groups: n.groups,
        eps: n.eps,
      });
      const parts: FusedResnetBlockParts = {
        norm1: norm(w.norm1),
        conv1: c1,
        norm2: norm(w.norm2),
        conv2: c2,
        shortcut: sameConvOf(w.convShortcut!)!,
      };
      const x = tf.ones([2, 4, 4, 8]) as Tensor4D;
      assert.ok(fusedResnetBlockFits(x, parts));
      assert.equal(fusedResnetBlockFits(x, { ...parts, shortcut: undefined }), false, "8 ≠ 16");
      const wide = tf.ones([2, 4, 4, 12]) as Tensor4D;
      assert.throws(
        () => fusedResnetBlock(wide, parts),
        /x \[2,4,4,12\], conv₁ \[3,3,8,16\], conv₂ \[3,3,16,16\]/,
      );
      const before = setWasmKernels({ fusedResnetBlock: false });
      assert.equal(fusedResnetBlockFits(x, parts), false, "switched off");
      setWasmKernels(before);

      const packed = (k: number, n: number) => {
        const m = gen.normal([k, n]) as Tensor2D;
        return { w: packWeight(m), wT: packWeight(m, true) };
      };
      const [w1, w2] = [packed(8, 32), packed(16, 8)];
      const ff: FusedFeedForwardParts = {
        gamma: tf.ones([8]) as Tensor1D,
        beta: tf.zeros([8]) as Tensor1D,
        eps: 1e-5,
        ffIn: { ...w1, bias: tf.zeros([32]) as Tensor1D },
        ffOut: { ...w2, bias: tf.zeros([8]) as Tensor1D },
      };
      assert.ok(fusedFeedForwardFits(tf.ones([2, 5, 8]), ff));
      assert.throws(
        () => fusedFeedForward(tf.ones([2, 5, 16]), ff),
        /float32 \[2,5,16\], W₁ \[8, 32\], W₂ \[16, 8\]/,
      );
      const [q, k, v, o] = [packed(8, 8), packed(24, 8), packed(24, 8), packed(8, 8)];
      const attn: FusedAttentionBlockParts = {
        gamma: tf.ones([8]) as Tensor1D,
        beta: tf.zeros([8]) as Tensor1D,
        eps: 1e-5,
        q,
        k,
        v,
        out: o,
        heads: 2,
      };
      const h = tf.ones([2, 5, 8]);
      assert.ok(fusedAttentionBlockFits(h, attn, tf.ones([2, 7, 24])), "cross");
      assert.equal(fusedAttentionBlockFits(h, attn), false, "keys of width 24 need a context");
      assert.throws(
        () => fusedAttentionBlock(h, attn, tf.ones([2, 7, 16])),
        /h \[2,5,8\], context \[2,7,16\], W_q \[8, 8\], W_k \[24, 8\]/,
      );
      for (const p of [w1, w2, q, k, v, o]) [p.w, p.wT].forEach((x) => x.dispose());
    });
  });

  assert.equal(tf.memory().numTensors, start, "no tensors left behind");
  releaseFrozenCopies(w);
  tf.dispose(w as unknown as tf.TensorContainer);
});
