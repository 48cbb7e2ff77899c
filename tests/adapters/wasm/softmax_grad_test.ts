// The attention backward's softmax gradient in wasm (`softmax_grad`, adapters/wasm/
// gemm_simd_wat.ts): bitwise the float64 JavaScript formula it replaced, for rows whose length
// is and is not a multiple of four, with dp's rows padded wider than p's.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { gemmSimdFor } from "../../../adapters/wasm/_gemm_threads.ts";
import { heapOffset, type WasmHeapBackend } from "../../../adapters/wasm/_wasm_heap.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";

// The JavaScript it replaced: ds = scale · p ⊙ (dp − rowsum(dp ⊙ p)), in float64.
function reference(
  p: Float32Array,
  dp: Float32Array,
  rows: number,
  n: number,
  ldp: number,
  scale: number,
): Float32Array {
  const ds = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    for (let j = 0; j < n; j++) dot += dp[r * ldp + j] * p[r * n + j];
    for (let j = 0; j < n; j++) ds[r * n + j] = scale * p[r * n + j] * (dp[r * ldp + j] - dot);
  }
  return ds;
}

Deno.test("wasm softmax gradient: bitwise the float64 formula", async (t) => {
  await useBackend("wasm", { wasmThreads: 1 });
  const backend = tf.backend() as unknown as WasmHeapBackend;
  const g = gemmSimdFor(backend, "softmax gradient test");
  const gen = new SeededNoise(11);
  for (const [rows, n, ldp] of [[1, 1, 8], [3, 4, 8], [5, 77, 80], [16, 256, 256], [2, 7, 7]]) {
    await t.step(`${rows} rows of ${n} (dp's rows ${ldp} apart)`, () => {
      const p = tf.tidy(() => tf.softmax(gen.normal([rows, n]), -1));
      const dp = gen.normal([rows, ldp]);
      const ds = tf.zeros([rows, n]);
      const scale = 1 / Math.sqrt(n);
      const off = (x: tf.Tensor) => heapOffset(backend, x as unknown as tf.TensorInfo);
      g.softmax_grad(off(p), off(dp), off(ds), rows, n, ldp, scale);
      const want = reference(
        p.dataSync() as Float32Array,
        dp.dataSync() as Float32Array,
        rows,
        n,
        ldp,
        scale,
      );
      const got = ds.dataSync() as Float32Array;
      assert.ok(got.some((v) => v !== 0) || n === 1, "nothing was written");
      assert.deepEqual(
        new Uint32Array(got.buffer, got.byteOffset, got.length),
        new Uint32Array(want.buffer),
      );
      tf.dispose([p, dp, ds]);
    });
  }
});
