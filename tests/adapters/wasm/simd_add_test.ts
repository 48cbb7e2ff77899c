// The SIMD same-shape Add (adapters/wasm/simd_add.ts): bitwise tfjs' own sums for float32
// tensors of one shape (lengths with and without a multiple of 4), and everything else (a
// broadcast, int32, the normSimd switch off) left to the kernel registered before it.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { installSimdAdd } from "../../../adapters/wasm/simd_add.ts";
import { setWasmKernels } from "../../../adapters/wasm/kernel_options.ts";
import { SeededNoise } from "../../../core/seeded_noise.ts";

/** How many Add calls reached a kernel other than the SIMD one. */
function countingStock(): { calls: () => number; restore: () => void } {
  const k = tf.getKernel("Add", "wasm")!;
  let n = 0;
  tf.unregisterKernel("Add", "wasm");
  tf.registerKernel({
    ...k,
    kernelFunc: ((args: Parameters<tf.KernelFunc>[0]) => {
      n++;
      return k.kernelFunc(args);
    }) as tf.KernelFunc,
  });
  return {
    calls: () => n,
    restore: () => {
      tf.unregisterKernel("Add", "wasm");
      tf.registerKernel(k);
    },
  };
}

Deno.test("wasm SIMD same-shape Add", async (t) => {
  await useBackend("wasm", { wasmThreads: 1 });
  const gen = new SeededNoise(5);
  // Reference sums from tfjs' own kernel, taken before the SIMD one is installed.
  const cases = [[2, 16, 16, 32], [3, 7], [1001], [0, 4]];
  const inputs = cases.map((s) => [gen.normal(s), gen.normal(s)]);
  const stock = inputs.map(([a, b]) => tf.add(a, b));
  const counter = countingStock();
  installSimdAdd();

  await t.step("float32, one shape: the SIMD loop, bit for bit", () => {
    const before = counter.calls();
    for (const [i, [a, b]] of inputs.entries()) {
      const y = tf.add(a, b);
      assert.deepEqual(y.shape, stock[i].shape);
      assert.deepEqual(y.dataSync(), stock[i].dataSync(), `shape [${cases[i]}]`);
      y.dispose();
    }
    assert.equal(counter.calls(), before, "no call reached the stock kernel");
  });

  await t.step("a broadcast, int32, normSimd off: the kernel before it", () => {
    const before = counter.calls();
    tf.tidy(() => {
      const a = gen.normal([2, 3]);
      assert.deepEqual(tf.add(a, tf.ones([3])).shape, [2, 3]);
      assert.deepEqual([
        ...tf.add(tf.tensor1d([1, 2], "int32"), tf.tensor1d([3, 4], "int32")).dataSync(),
      ], [4, 6]);
      const off = setWasmKernels({ normSimd: false });
      const [x, y] = inputs[0];
      assert.deepEqual(tf.add(x, y).dataSync(), stock[0].dataSync());
      setWasmKernels(off);
    });
    assert.equal(counter.calls() - before, 3);
  });

  counter.restore();
  tf.dispose([...inputs.flat(), ...stock]);
});
