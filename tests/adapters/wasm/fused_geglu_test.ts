// texforce's fused GEGLU (adapters/wasm/fused_geglu.ts) against tfjs' composition (split, exact
// erf GELU, multiply; the fusedGeglu switch off): the SIMD loops (halves in fours) and the JS
// loops (normSimd off, or halves that are not fours), values and gradients, gates far in both
// tails, no tensors left behind.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { fusedGeglu, fusedGegluFits } from "../../../adapters/wasm/fused_geglu.ts";
import { setWasmKernels } from "../../../adapters/wasm/kernel_options.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";
import { tensorRelativeError } from "../../_helpers.ts";

function stockGeglu(x: tf.Tensor): tf.Tensor {
  const [value, gate] = tf.split(x, 2, -1);
  const gelu = tf.mul(tf.mul(gate, 0.5), tf.add(tf.erf(tf.mul(gate, Math.SQRT1_2)), 1));
  return tf.mul(value, gelu);
}

Deno.test("wasm fused GEGLU: equals tfjs' composition with gradients", async (t) => {
  await useBackend("wasm", { wasmThreads: 1 });
  const gen = new SeededNoise(3);
  for (
    const [shape, simd] of [[[2, 16, 64], true], [[2, 16, 64], false], [[3, 10], false]] as const
  ) {
    await t.step(`[${shape}], ${simd ? "SIMD" : "JS"} loops`, () => {
      const start = tf.memory().numTensors;
      const before = setWasmKernels({ normSimd: simd });
      tf.tidy(() => {
        // Gates spread to ±6 reach erf's clamped tails and the density's underflow.
        const x = gen.normal([...shape]).mul(3);
        const dy = gen.normal([...shape.slice(0, -1), shape[shape.length - 1] / 2]);
        const loss = (f: (x: tf.Tensor) => tf.Tensor) => (z: tf.Tensor) => tf.sum(tf.mul(f(z), dy));
        assert.ok(fusedGegluFits(x));
        const errors = [
          tensorRelativeError(fusedGeglu(x), stockGeglu(x)),
          tensorRelativeError(tf.grad(loss(fusedGeglu))(x), tf.grad(loss(stockGeglu))(x)),
        ];
        assert.ok(errors.every((e) => e < 2e-6), `value, gradient: ${errors}`);
      });
      setWasmKernels(before);
      assert.equal(tf.memory().numTensors, start);
    });
  }

  await t.step("the SIMD and JS loops agree to float rounding", () => {
    tf.tidy(() => {
      const x = gen.normal([4, 32]).mul(2);
      const dy = gen.normal([4, 16]);
      const run = () => [
        fusedGeglu(x),
        tf.grad((z: tf.Tensor) => tf.sum(tf.mul(fusedGeglu(z), dy)))(x),
      ];
      const simd = run();
      const before = setWasmKernels({ normSimd: false });
      const js = run();
      setWasmKernels(before);
      const errors = simd.map((s, i) => tensorRelativeError(s, js[i]));
      assert.ok(errors.every((e) => e < 1e-6), `value, gradient: ${errors}`);
    });
  });

  await t.step("refused: an odd last axis, switched off", () => {
    tf.tidy(() => {
      assert.equal(fusedGegluFits(tf.ones([2, 5])), false);
      assert.throws(() => fusedGeglu(tf.ones([2, 5])), /even last axis.*\[2,5\]/);
      const before = setWasmKernels({ fusedGeglu: false });
      assert.equal(fusedGegluFits(tf.ones([2, 4])), false, "switched off");
      setWasmKernels(before);
    });
  });
});
