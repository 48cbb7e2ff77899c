// texforce's packed SIMD matrix product (adapters/wasm/packed_matmul.ts) against tfjs' own
// matMul: every tile height (the 6-row tiles and the 1–5-row tails), bias in the kernel, the
// transposed packing used for input gradients, constLinear's forward and gradient through it,
// the split over worker threads (bitwise the same as one thread), and refusals.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { constLinear } from "../../../adapters/nn/_fast_matmul.ts";
import {
  packedMatMul,
  packedMatMulFits,
  packWeight,
} from "../../../adapters/wasm/packed_matmul.ts";
import { setWasmKernels } from "../../../adapters/wasm/kernel_options.ts";
import { gemmHelpersJoined } from "./_gemm_helpers_joined.ts";
import { sharedJobs } from "../../../adapters/wasm/_gemm_threads.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";
import { tensorRelativeError } from "../../_helpers.ts";

Deno.test("wasm packed matMul: equals tfjs' matMul, splits over threads bitwise", async (t) => {
  await useBackend("wasm", { wasmThreads: 1 });
  const gen = new SeededNoise(3);
  // [m, k, n]: every row remainder mod 6, every k remainder mod 4 (the unrolled k loop and its
  // rest; k < 4 has no unrolled block), k = 1, one panel, many panels.
  const shapes = [
    [1, 1, 8],
    [2, 5, 16],
    [3, 2, 8],
    [7, 6, 16],
    [8, 11, 8],
    [3, 9, 8],
    [4, 16, 24],
    [5, 3, 8],
    [6, 8, 8],
    [13, 40, 32],
    [
      154,
      96,
      200,
    ],
  ];

  await t.step("x of rank 3 and 4: leading axes are rows", () => {
    tf.tidy(() => {
      const w = gen.normal([12, 16]) as tf.Tensor2D;
      const bias = gen.normal([16]) as tf.Tensor1D;
      const packed = packWeight(w);
      for (const lead of [[2, 5], [2, 3, 4]]) {
        const x = gen.normal([...lead, 12]);
        const y = packedMatMul(x, packed, bias);
        assert.deepEqual(y.shape, [...lead, 16]);
        const want = tf.add(tf.matMul(x.reshape([-1, 12]), w), bias).reshape([...lead, 16]);
        assert.ok(tensorRelativeError(y, want) < 1e-6, `[${lead}, 12]`);
      }
      packed.dispose();
    });
  });

  await t.step("x · w and x · w + bias for every tile height", () => {
    for (const [m, k, n] of shapes) {
      tf.tidy(() => {
        const x = gen.normal([m, k]) as tf.Tensor2D;
        const w = gen.normal([k, n]) as tf.Tensor2D;
        const b = gen.normal([n]) as tf.Tensor1D;
        const p = packWeight(w);
        const e1 = tensorRelativeError(packedMatMul(x, p), tf.matMul(x, w));
        const e2 = tensorRelativeError(packedMatMul(x, p, b), tf.add(tf.matMul(x, w), b));
        assert.ok(e1 < 1e-6 && e2 < 1e-6, `[${m}, ${k}] · [${k}, ${n}]: ${e1}, ${e2}`);
      });
    }
  });

  await t.step("transposed packing gives dy · wᵀ", () => {
    for (const [m, k, n] of [[7, 8, 5], [12, 24, 16], [1, 16, 3]]) {
      tf.tidy(() => {
        const dy = gen.normal([m, n]) as tf.Tensor2D;
        const w = gen.normal([k, n]) as tf.Tensor2D;
        const e = tensorRelativeError(
          packedMatMul(dy, packWeight(w, true)),
          tf.matMul(dy, w, false, true),
        );
        assert.ok(e < 1e-6, `[${m}, ${n}] · [${k}, ${n}]ᵀ: ${e}`);
      });
    }
  });

  await t.step("constLinear through it: forward and input gradient, cached copies released", () => {
    const w = gen.normal([48, 64]) as tf.Tensor2D;
    const b = gen.normal([64]) as tf.Tensor1D;
    const x = gen.normal([10, 48]) as tf.Tensor2D;
    const dy = gen.normal([10, 64]) as tf.Tensor2D;
    const start = tf.memory().numTensors;
    const run = (cache: boolean) => {
      const f = constLinear(w, b, { cacheWeights: cache });
      const out = tf.tidy(() => {
        const y = f(x);
        const dx = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(f(xx as tf.Tensor2D), dy)))(x);
        return [tf.keep(y), tf.keep(dx)];
      });
      f.dispose();
      return out;
    };
    const [y, dx] = run(true);
    const [y2, dx2] = run(false);
    const refY = tf.tidy(() => tf.add(tf.matMul(x, w), b));
    const refDx = tf.matMul(dy, w, false, true);
    assert.ok(tensorRelativeError(y, refY) < 1e-6 && tensorRelativeError(dx, refDx) < 1e-6);
    assert.deepEqual([...y.dataSync()], [...y2.dataSync()], "cached and per-call copies agree");
    assert.deepEqual([...dx.dataSync()], [...dx2.dataSync()]);
    tf.dispose([y, dx, y2, dx2, refY, refDx]);
    assert.equal(tf.memory().numTensors, start, "no copies left behind");
    tf.dispose([w, b, x, dy]);
  });

  await t.step("the switch and the widths decide; bad input is refused", () => {
    assert.equal(packedMatMulFits(16), true);
    assert.equal(packedMatMulFits(12), false, "columns come in panels of 8");
    const before = setWasmKernels({ packedMatmul: false });
    assert.equal(packedMatMulFits(16), false);
    setWasmKernels(before);
    tf.tidy(() => {
      assert.throws(() => packWeight(tf.ones([4, 12]) as tf.Tensor2D), /multiple of 8 columns/);
      const p = packWeight(tf.ones([4, 8]) as tf.Tensor2D);
      assert.throws(
        () => packedMatMul(tf.ones([2, 5]) as tf.Tensor2D, p),
        /x \[2,5\] does not fit a packed \[4, 8\] weight/,
      );
    });
  });

  await t.step("two threads give bitwise the results of one", async () => {
    // Big enough to be split (≥ 256 K multiply-adds), rows not a multiple of 6.
    const [m, k, n] = [154, 256, 768];
    const xs = gen.normal([m, k]).dataSync().slice();
    const ws = gen.normal([k, n]).dataSync().slice();
    const bs = gen.normal([n]).dataSync().slice();
    const product = (): Float32Array =>
      tf.tidy(() => {
        const w = tf.tensor2d(ws, [k, n]);
        return packedMatMul(tf.tensor2d(xs, [m, k]), packWeight(w), tf.tensor1d(bs)).dataSync()
          .slice() as Float32Array;
      });
    const one = product();
    await useBackend("wasm", { wasmThreads: 2 });
    // The workers start on the first split product and join once ready.
    product();
    const helpers = await gemmHelpersJoined();
    const before = sharedJobs().products;
    const two = product();
    const shared = sharedJobs().products - before;
    await useBackend("wasm", { wasmThreads: 1 });
    assert.equal(helpers, 1, "the worker joined");
    assert.equal(shared, 1, "the product went through the pool");
    assert.deepEqual([...two], [...one]);
  });
});
