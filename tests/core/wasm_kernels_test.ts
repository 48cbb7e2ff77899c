// The wasm backend's kernel replacements installed by useBackend (core/_wasm_kernels.ts) that
// model-level parity tests do not pin down on their own.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../core/backend.ts";
import { matMul2d } from "../../adapters/nn/_fast_matmul.ts";

Deno.test("wasm kernels: Identity shares data, and a clone outlives its source", async (t) => {
  await useBackend("wasm");
  await t.step("clone, dispose the source, read the clone", () => {
    const bytes = tf.memory().numBytes;
    const a = tf.tensor1d([1, 2, 3]);
    const b = tf.clone(a);
    a.dispose();
    assert.deepStrictEqual(Array.from(b.dataSync()), [1, 2, 3]);
    b.dispose();
    assert.deepStrictEqual(tf.memory().numBytes, bytes);
  });
  await t.step("a variable's saved input keeps its old value after assign", () => {
    const v = tf.variable(tf.tensor1d([1, 2]));
    // The gradient of v² saves v (a clone); assigning v afterwards must not change it.
    const g = tf.grad((x: tf.Tensor) => tf.sum(tf.square(x)))(v);
    v.assign(tf.tensor1d([10, 20]));
    assert.deepStrictEqual(Array.from(g.dataSync()), [2, 4]);
    tf.dispose([v, g]);
  });
});

Deno.test("wasm kernels: matMul2d's gradients in either form equal the stock ones", async (t) => {
  await useBackend("wasm");
  // Few rows against a big matrix (the transposed-product form) and many rows against a small
  // one (the direct form, LoRA-like).
  // And a thin left side (the weight gradient's transposed form).
  for (const [m, k, n] of [[3, 40, 50], [64, 8, 4], [5, 16, 300], [30, 4, 64]]) {
    await t.step(`[${m}, ${k}] · [${k}, ${n}]`, () => {
      const a = tf.randomNormal([m, k], 0, 1, "float32", 1) as tf.Tensor2D;
      const b = tf.randomNormal([k, n], 0, 1, "float32", 2) as tf.Tensor2D;
      const dy = tf.randomNormal([m, n], 0, 1, "float32", 3);
      const loss = (f: (x: tf.Tensor2D, y: tf.Tensor2D) => tf.Tensor) =>
        tf.grads((x: tf.Tensor, y: tf.Tensor) =>
          tf.sum(tf.mul(f(x as tf.Tensor2D, y as tf.Tensor2D), dy))
        )(
          [a, b],
        );
      const ours = loss(matMul2d);
      // The reference: tfjs' own transposed products.
      const ref = tf.tidy(() => [tf.matMul(dy, b, false, true), tf.matMul(a, dy, true, false)]);
      ours.forEach((g, i) => {
        const e = tf.tidy(() => tf.max(tf.abs(tf.sub(g, ref[i]))).dataSync()[0]);
        assert(e < 1e-4, `gradient ${i}: max error ${e}`);
      });
      tf.dispose([a, b, dy, ...ours, ...ref]);
    });
  }
});
