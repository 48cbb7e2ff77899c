// texforce's fused attention core (adapters/wasm/fused_attention.ts) against tfjs' composition
// (the fusedAttention switch off): values and gradients for q, k and v, with and without a mask,
// one head and several, key lengths that are not multiples of 4 or 8, no tensors left behind,
// the inputs it refuses, and the same bits whether its (sample, head) pairs run on one thread
// or are shared over two.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { fusedAttention, fusedAttentionFits } from "../../../adapters/wasm/fused_attention.ts";
import { setWasmKernels } from "../../../adapters/wasm/kernel_options.ts";
import { sharedJobs } from "../../../adapters/wasm/_gemm_threads.ts";
import { gemmHelpersJoined } from "./_gemm_helpers_joined.ts";
import { multiHeadAttention } from "../../../adapters/nn/attention.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";
import { tensorRelativeError } from "../../_helpers.ts";

/** [batch, Lq, Lk, D, Dv, heads, causal]. */
type AttentionShape = [number, number, number, number, number, number, boolean];

/** Random q, k, v and output gradient of a shape, and its value and gradients (in a tidy). */
function attentionCase(gen: SeededNoise, [b, lq, lk, d, dv, heads, masked]: AttentionShape): {
  q: tf.Tensor;
  k: tf.Tensor;
  v: tf.Tensor;
  run: () => tf.Tensor[];
} {
  const q = gen.normal([b, lq, d]);
  const k = gen.normal([b, lk, d]);
  const v = gen.normal([b, lk, dv]);
  const dy = gen.normal([b, lq, dv]);
  const mask = masked
    ? tf.linalg.bandPart(tf.ones([lq, lk]), -1, 0).sub(1).mul(1e9).reshape([1, 1, lq, lk])
    : undefined;
  const loss = (x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) =>
    tf.sum(tf.mul(multiHeadAttention(x, y, z, heads, mask), dy));
  return {
    q,
    k,
    v,
    run: () => [multiHeadAttention(q, k, v, heads, mask), ...tf.grads(loss)([q, k, v])],
  };
}

Deno.test("wasm fused attention: equals tfjs' composition with gradients", async (t) => {
  await useBackend("wasm", { wasmThreads: 1 });
  const gen = new SeededNoise(11);
  // [batch, Lq, Lk, D, Dv, heads, masked]: the UNet's self- and cross-attention shapes (small),
  // CLIP's causal self-attention, one head.
  const cases: AttentionShape[] = [
    [2, 16, 16, 8, 8, 2, false],
    [2, 16, 7, 8, 8, 2, false],
    [1, 5, 5, 12, 12, 3, true],
    [3, 4, 9, 4, 4, 1, false],
    // Heads of 16 and 8 columns (written in place) over a key length that pads its panels.
    [2, 12, 13, 32, 32, 2, false],
    [2, 12, 13, 32, 32, 4, true],
  ];
  for (const [b, lq, lk, d, dv, heads, masked] of cases) {
    await t.step(
      `[${b}, ${lq}, ${d}] over ${lk} keys, ${heads} heads${masked ? ", causal" : ""}`,
      () => {
        const start = tf.memory().numTensors;
        tf.tidy(() => {
          const c = attentionCase(gen, [b, lq, lk, d, dv, heads, masked]);
          assert.ok(fusedAttentionFits(c.q, c.k, c.v, heads));
          const fused = c.run();
          const before = setWasmKernels({ fusedAttention: false });
          const stock = c.run();
          setWasmKernels(before);
          const errors = fused.map((f, i) => tensorRelativeError(f, stock[i]));
          assert.ok(errors.every((e) => e < 1e-5), `value, dq, dk, dv: ${errors}`);
        });
        assert.equal(tf.memory().numTensors, start);
      },
    );
  }

  await t.step("the SIMD query scale and mask add change no bit; other masks broadcast", () => {
    tf.tidy(() => {
      // b = Lq, so a per-sample key mask [B, 1, 1, Lk] has as many values as one [Lq, Lk] matrix.
      const [b, lq, lk, d, heads] = [3, 3, 5, 8, 2];
      const q = gen.normal([b, lq, d]);
      const k = gen.normal([b, lk, d]);
      const v = gen.normal([b, lk, d]);
      const dy = gen.normal([b, lq, d]);
      const matrix = gen.normal([lq, lk]);
      const masks = [matrix.reshape([1, 1, lq, lk]), matrix, gen.normal([b, 1, 1, lk])];
      for (const [i, mask] of masks.entries()) {
        const run = () => {
          const loss = (x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) =>
            tf.sum(tf.mul(multiHeadAttention(x, y, z, heads, mask), dy));
          return [multiHeadAttention(q, k, v, heads, mask), ...tf.grads(loss)([q, k, v])];
        };
        const simd = run();
        let before = setWasmKernels({ normSimd: false });
        const js = run();
        setWasmKernels(before);
        simd.forEach((x, j) => assert.deepEqual(x.dataSync(), js[j].dataSync(), `mask ${i}, ${j}`));
        before = setWasmKernels({ fusedAttention: false });
        const stock = run();
        setWasmKernels(before);
        const errors = simd.map((f, j) => tensorRelativeError(f, stock[j]));
        assert.ok(errors.every((e) => e < 1e-5), `mask ${i}: value, dq, dk, dv: ${errors}`);
      }
    });
  });

  await t.step("refused: mismatched shapes, heads that do not divide D, switched off", () => {
    tf.tidy(() => {
      const q = tf.ones([1, 4, 8]);
      assert.equal(fusedAttentionFits(q, tf.ones([1, 4, 6]), tf.ones([1, 4, 8]), 2), false);
      assert.equal(fusedAttentionFits(q, q, tf.ones([1, 5, 8]), 2), false, "k and v lengths");
      assert.equal(fusedAttentionFits(q, q, q, 3), false, "3 heads of 8");
      assert.throws(() => fusedAttention(q, q, q, 3, 1), /with 3 heads dividing D and Dv/);
      const before = setWasmKernels({ fusedAttention: false });
      assert.equal(fusedAttentionFits(q, q, q, 2), false, "switched off");
      setWasmKernels(before);
    });
  });
});

Deno.test("wasm fused attention: (sample, head) pairs shared over threads, same bits", async (t) => {
  // [batch, Lq, Lk, D, heads, masked]: the UNet's level-0 self-attention at batch 2, CLIP's
  // causal self-attention, a cross-attention over 77 keys (padded panels); each phase has
  // 256 K multiply-adds or more, so each is shared.
  const cases: [number, number, number, number, number, boolean][] = [
    [2, 256, 256, 32, 2, false],
    [3, 77, 77, 128, 4, true],
    [4, 256, 77, 32, 2, false],
  ];
  /** Values and gradients of every case, and how many phases the pool took. */
  async function run(threads: number): Promise<{ values: Float32Array[]; shared: number }> {
    await useBackend("wasm", { wasmThreads: threads });
    const gen = new SeededNoise(5);
    const start = tf.memory().numTensors;
    const warm = gen.normal([2, 256, 32]);
    tf.dispose(fusedAttention(warm, warm, warm, 2, 0.25));
    warm.dispose();
    // The pool's workers start on its first job and take work once they report ready.
    if (threads > 1) assert.equal(await gemmHelpersJoined(), threads - 1, "the workers joined");
    const before = sharedJobs().headPhases;
    const values: Float32Array[] = [];
    for (const [b, lq, lk, d, heads, masked] of cases) {
      const outs = tf.tidy(() => attentionCase(gen, [b, lq, lk, d, d, heads, masked]).run());
      for (const o of outs) values.push(o.dataSync() as Float32Array);
      tf.dispose(outs);
    }
    assert.equal(tf.memory().numTensors, start, "no tensors left behind");
    return { values, shared: sharedJobs().headPhases - before };
  }
  let two: Float32Array[] = [];
  await t.step("two threads: every phase of every case is shared", async () => {
    const r = await run(2);
    // Per case: the scores and the output forward (twice: the value, then under the
    // gradient), the backward once.
    assert.equal(r.shared, 5 * cases.length);
    two = r.values;
  });
  await t.step("one thread gives the same bits", async () => {
    const r = await run(1);
    assert.equal(r.shared, 0);
    r.values.forEach((v, i) => assert.deepEqual(v, two[i], `output ${i}`));
  });
  await useBackend("wasm");
});
