import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { currentBackend, useBackend } from "../../core/backend.ts";
import { availableBackends, relativeError } from "../_helpers.ts";

// A small conv + matmul + softmax graph whose result must agree across backends.
// Async read: tfjs-webgpu's dataSync needs a 2D canvas, which Deno does not have.
async function probe(): Promise<Float32Array> {
  const out = tf.tidy(() => {
    const x = tf.tensor4d(Array.from({ length: 2 * 8 * 8 * 3 }, (_, i) => Math.sin(i)), [
      2,
      8,
      8,
      3,
    ]);
    const w = tf.tensor4d(Array.from({ length: 3 * 3 * 3 * 4 }, (_, i) => Math.cos(i) / 5), [
      3,
      3,
      3,
      4,
    ]);
    const y = tf.conv2d(x, w, 1, "same").reshape([2, -1]);
    const m = tf.matMul(y, y, false, true);
    return tf.softmax(m.div(100)).concat(tf.moments(y, 1).variance.reshape([2, 1]), 1);
  });
  const data = (await out.data()) as Float32Array;
  out.dispose();
  return data;
}

Deno.test("backends: the same ops agree on cpu, wasm and webgpu", async (t) => {
  const backends = await availableBackends();
  if (!backends.includes("webgpu")) {
    console.log("webgpu: no adapter (install mesa-vulkan-drivers, run with --unstable-webgpu)");
  }
  await useBackend("cpu");
  const reference = await probe();
  for (const name of backends) {
    await t.step(name, async () => {
      const info = await useBackend(name as "cpu" | "wasm" | "webgpu");
      assert.equal(info.name, name);
      assert.equal(currentBackend().name, name);
      assert.ok(info.device.length > 0);
      const before = tf.memory().numTensors;
      const out = await probe();
      assert.equal(tf.memory().numTensors, before, "probe leaks no tensors");
      // webgpu computes in float32 with a different summation order (lavapipe): looser bound.
      const tol = name === "webgpu" ? 1e-4 : 1e-6;
      const err = relativeError(out, reference);
      assert.ok(err <= tol, `${name} differs from cpu by ${err}`);
    });
  }
  await useBackend("wasm");
});

Deno.test("backends: auto picks a working backend; unknown and tensorflow fail clearly", async (t) => {
  await t.step("auto", async () => {
    const info = await useBackend("auto");
    assert.ok(["webgpu", "wasm", "cpu"].includes(info.name));
  });
  await t.step("unknown name", async () => {
    await assert.rejects(
      () => useBackend("metal" as unknown as "cpu"),
      /unknown backend 'metal': expected one of/,
    );
  });
  await t.step("tensorflow without tfjs-node", async () => {
    await assert.rejects(
      () => useBackend("tensorflow"),
      /backend 'tensorflow' needs @tensorflow\/tfjs-node/,
    );
  });
  await useBackend("wasm");
});

Deno.test("backends: a global gradient norm over many tensors is right on every backend", async () => {
  // tfjs-webgpu 4.22's AddN sums only its first four inputs; globalNorm must not depend on it.
  const { globalNorm } = await import("../../core/gradients.ts");
  for (const name of await availableBackends()) {
    await useBackend(name as "cpu" | "wasm" | "webgpu");
    const grads = new Map(Array.from({ length: 9 }, (_, i) => [`g${i}`, tf.fill([2], i + 1)]));
    const expected = Math.sqrt(
      2 * Array.from({ length: 9 }, (_, i) => (i + 1) ** 2).reduce((a, b) => a + b),
    );
    const norm = await globalNorm(grads);
    assert.ok(Math.abs(norm - expected) < 1e-4 * expected, `${name}: ${norm} vs ${expected}`);
    for (const g of grads.values()) g.dispose();
  }
  await useBackend("wasm");
});
