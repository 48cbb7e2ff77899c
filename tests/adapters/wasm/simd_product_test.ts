// texforce's SIMD product of two computed tensors (adapters/wasm/simd_product.ts) against
// tfjs' matMul: every transpose combination, batches, widths that are not multiples of 8 (the
// padded last panel), degenerate sizes, gradients for both inputs, no tensors left behind, and
// the operands it refuses.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { simdProduct, simdProductFits } from "../../../adapters/wasm/simd_product.ts";
import { setWasmKernels } from "../../../adapters/wasm/kernel_options.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";
import { tensorRelativeError } from "../../_helpers.ts";

Deno.test("wasm SIMD product: equals tfjs' matMul with gradients, any shape", async (t) => {
  await useBackend("wasm", { wasmThreads: 1 });
  const gen = new SeededNoise(5);
  // [batch, m, k, n]: attention's 77 × 77 (padded panel), LoRA's thin factors, ones; aᵀ · b with
  // m ≫ n (154 × 16, 45 × 5 in batches, padded) takes the route through (bᵀ · a)ᵀ.
  const cases: [number[], number, number, number][] = [
    [[], 5, 7, 3],
    [[2, 3], 77, 64, 77],
    [[4], 1, 1, 1],
    [[2], 13, 9, 16],
    [[], 154, 96, 16],
    [[3], 45, 6, 5],
  ];
  for (const [batch, m, k, n] of cases) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        await t.step(`[${batch}] ${m}×${k}${ta ? "ᵀ" : ""} · ${k}×${n}${tb ? "ᵀ" : ""}`, () => {
          const start = tf.memory().numTensors;
          tf.tidy(() => {
            const a = gen.normal([...batch, ...(ta ? [k, m] : [m, k])]);
            const b = gen.normal([...batch, ...(tb ? [n, k] : [k, n])]);
            const dy = gen.normal([...batch, m, n]);
            const loss = (f: typeof simdProduct) => (x: tf.Tensor, y: tf.Tensor) =>
              tf.sum(tf.mul(f(x, y, ta, tb), dy));
            const stock = (x: tf.Tensor, y: tf.Tensor, p?: boolean, q?: boolean) =>
              tf.matMul(x, y, p, q);
            const e = tensorRelativeError(simdProduct(a, b, ta, tb), tf.matMul(a, b, ta, tb));
            const [ga, gb] = tf.grads(loss(simdProduct))([a, b]);
            const [ra, rb] = tf.grads(loss(stock))([a, b]);
            const errors = [e, tensorRelativeError(ga, ra), tensorRelativeError(gb, rb)];
            assert.ok(errors.every((v) => v < 1e-6), `forward, da, db: ${errors}`);
          });
          assert.equal(tf.memory().numTensors, start);
        });
      }
    }
  }

  await t.step("aᵀ · b is bitwise (aᵀ) · b, by either route", () => {
    tf.tidy(() => {
      for (const [m, k, n] of [[154, 96, 16], [45, 6, 5], [13, 9, 16]]) {
        const a = gen.normal([k, m]);
        const b = gen.normal([k, n]);
        const direct = simdProduct(tf.transpose(a), b);
        assert.deepEqual(simdProduct(a, b, true).dataSync(), direct.dataSync(), `${m}, ${k}, ${n}`);
      }
    });
  });

  await t.step("refused: other backends' operands, broadcast batches, mismatched sizes", () => {
    tf.tidy(() => {
      assert.equal(simdProductFits(tf.ones([2, 3, 4]), tf.ones([1, 4, 5])), false, "broadcast");
      assert.equal(simdProductFits(tf.ones([3, 4]), tf.ones([2, 4, 5])), false, "ranks differ");
      assert.throws(
        () => simdProduct(tf.ones([3, 4]), tf.ones([5, 6])),
        /inner sizes match \(got float32 \[3,4\] · float32 \[5,6\] on wasm\)/,
      );
      const before = setWasmKernels({ packedMatmul: false });
      assert.equal(simdProductFits(tf.ones([3, 4]), tf.ones([4, 5])), false, "switched off");
      setWasmKernels(before);
    });
  });
});
