// CLIP's activations against their definitions (transformers' ACT2FN), at points where they differ
// from each other: a gelu computed as quick_gelu, or the reverse, fails here.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { clipActivate } from "../../../adapters/clip/_clip_tower.ts";

// Φ(x), the standard normal CDF, at the probe points (to 16 digits).
const PHI: Record<number, number> = {
  [-2]: 0.022750131948179195,
  [-0.5]: 0.3085375387259869,
  [0.5]: 0.6914624612740131,
  [1]: 0.8413447460685429,
  [2]: 0.9772498680518208,
};
const XS = Object.keys(PHI).map(Number).sort((a, b) => a - b);

const DEFINITIONS: Record<string, (x: number) => number> = {
  gelu: (x) => x * PHI[x],
  quick_gelu: (x) => x / (1 + Math.exp(-1.702 * x)),
  gelu_new: (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
  gelu_pytorch_tanh: (x) =>
    0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
  relu: (x) => Math.max(0, x),
};

Deno.test("clipActivate computes each activation as transformers defines it", async (t) => {
  await useBackend("cpu");
  for (const [act, f] of Object.entries(DEFINITIONS)) {
    await t.step(act, async () => {
      const y = tf.tidy(() => clipActivate(tf.tensor1d(XS), act as "gelu"));
      const got = await y.data();
      y.dispose();
      for (const [i, x] of XS.entries()) {
        const want = f(x);
        // Relative to the value itself (tfjs's erf is an approximation good to ~3e-6 relative
        // here); the activations differ from each other by more than 1e-3 relative.
        assert.ok(
          Math.abs(got[i] - want) <= 1e-5 * Math.max(Math.abs(want), 1e-3),
          `${act}(${x}) = ${got[i]}, expected ${want}`,
        );
      }
    });
  }
  await t.step("the definitions really differ at the probe points", () => {
    for (const x of XS) {
      assert.ok(Math.abs(DEFINITIONS.gelu(x) - DEFINITIONS.quick_gelu(x)) > 1e-4, `at ${x}`);
    }
  });
});
