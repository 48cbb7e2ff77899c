// activation_simd.wat's σ (adapters/wasm/_activation_simd.ts) against tfjs' Sigmoid kernel,
// arguments far in both tails.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { activationSimdFor } from "../../../adapters/wasm/_activation_simd.ts";
import { heapOffset, type WasmHeapBackend } from "../../../adapters/wasm/_wasm_heap.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";
import { tensorRelativeError } from "../../_helpers.ts";

Deno.test("wasm activation SIMD loops: σ equals tfjs' kernel", async (t) => {
  await useBackend("wasm", { wasmThreads: 1 });
  const backend = tf.backend() as unknown as WasmHeapBackend;
  const simd = activationSimdFor(backend);
  assert.ok(simd, "the module instantiates on the backend's heap");
  const gen = new SeededNoise(8);

  await t.step("σ over ±40", () => {
    tf.tidy(() => {
      const x = gen.normal([64, 16]).mul(15).clipByValue(-40, 40);
      const out = tf.zerosLike(x);
      simd.sigmoid(heapOffset(backend, x), heapOffset(backend, out), 4 * x.size);
      const e = tensorRelativeError(out, tf.sigmoid(x));
      assert.ok(e < 1e-6, `relative error ${e}`);
    });
  });
});
