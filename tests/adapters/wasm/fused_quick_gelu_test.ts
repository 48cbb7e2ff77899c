// texforce's quick GELU on wasm (adapters/wasm/fused_quick_gelu.ts) against tfjs' composition
// `x · σ(1.702 x)` (the fusedQuickGelu switch off): the same values bit for bit (the forward is
// tfjs' own ops), the gradient to float rounding (one SIMD pass from the saved σ), tails far out
// in both directions, refusals, no tensors left behind.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { fusedQuickGelu, fusedQuickGeluFits } from "../../../adapters/wasm/fused_quick_gelu.ts";
import { setWasmKernels } from "../../../adapters/wasm/kernel_options.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";
import { tensorRelativeError } from "../../_helpers.ts";

const stock = (x: tf.Tensor) => tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));

Deno.test("wasm fused quick GELU: tfjs' values, its gradient to rounding", async (t) => {
  await useBackend("wasm", { wasmThreads: 1 });
  const gen = new SeededNoise(9);
  await t.step("values and gradients", () => {
    const start = tf.memory().numTensors;
    tf.tidy(() => {
      // Spread to ±20: σ saturates at both ends.
      const x = gen.normal([6, 40]).mul(7);
      const dy = gen.normal([6, 40]);
      const loss = (f: (x: tf.Tensor) => tf.Tensor) => (z: tf.Tensor) => tf.sum(tf.mul(f(z), dy));
      assert.ok(fusedQuickGeluFits(x));
      assert.deepEqual(fusedQuickGelu(x).dataSync(), stock(x).dataSync(), "values bitwise");
      const e = tensorRelativeError(tf.grad(loss(fusedQuickGelu))(x), tf.grad(loss(stock))(x));
      assert.ok(e < 1e-6, `gradient: ${e}`);
    });
    assert.equal(tf.memory().numTensors, start);
  });

  await t.step("refused: sizes not in fours, the switches off", () => {
    tf.tidy(() => {
      assert.equal(fusedQuickGeluFits(tf.ones([3, 5])), false);
      assert.throws(() => fusedQuickGelu(tf.ones([3, 5])), /multiple of 4 values.*\[3,5\]/);
      for (const off of [{ fusedQuickGelu: false }, { normSimd: false }]) {
        const before = setWasmKernels(off);
        assert.equal(fusedQuickGeluFits(tf.ones([2, 4])), false, JSON.stringify(off));
        setWasmKernels(before);
      }
    });
  });
});
