// The wasm fused GroupNorm / LayerNorm (+ SiLU) kernels against the stock tfjs composition they
// replace, forward and gradients for x, γ and β, over shapes that stress the indexing (one
// position, one channel per group, [B, L, C], rows of a LayerNorm).
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import { groupNorm, groupNormThenSilu } from "../../../adapters/nn/group_norm.ts";
import { layerNorm } from "../../../adapters/nn/layer_norm.ts";
import { setWasmKernels, useWasmKernel } from "../../../adapters/wasm/kernel_options.ts";
import { fusedNorm } from "../../../adapters/wasm/fused_norm.ts";
import { tensorRelativeError } from "../../_helpers.ts";

type Norm = (x: tf.Tensor, g: tf.Tensor1D, b: tf.Tensor1D) => tf.Tensor;

/** Output and gradients of Σ norm(x) ⊙ dy for x, γ, β. */
function outputs(f: Norm, x: tf.Tensor, g: tf.Tensor1D, b: tf.Tensor1D, dy: tf.Tensor) {
  const y = f(x, g, b);
  const grads = tf.grads((xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) =>
    tf.sum(tf.mul(f(xx, gg as tf.Tensor1D, bb as tf.Tensor1D), dy))
  )([x, g, b]);
  return [y, ...grads];
}

Deno.test("wasm fused norm: equals the stock GroupNorm / LayerNorm, forward and gradients", async (t) => {
  await useBackend("wasm");
  const cases: { name: string; shape: number[]; groups: number; kind: "gn" | "gnsilu" | "ln" }[] = [
    { name: "GroupNorm NHWC", shape: [2, 5, 7, 12], groups: 4, kind: "gn" },
    { name: "GroupNorm + SiLU NHWC", shape: [3, 4, 4, 16], groups: 8, kind: "gnsilu" },
    { name: "GroupNorm + SiLU, one position", shape: [2, 1, 1, 8], groups: 2, kind: "gnsilu" },
    { name: "GroupNorm, one channel per group", shape: [1, 6, 5, 6], groups: 6, kind: "gn" },
    { name: "GroupNorm [B, L, C]", shape: [2, 10, 6], groups: 3, kind: "gn" },
    { name: "GroupNorm [B, L, C], channels in fours", shape: [2, 10, 8], groups: 2, kind: "gn" },
    // More rows than the SIMD loops sum in float32 at a time (64).
    { name: "GroupNorm + SiLU, 4900 positions", shape: [1, 70, 70, 8], groups: 4, kind: "gnsilu" },
    { name: "LayerNorm rows", shape: [4, 9], groups: 1, kind: "ln" },
    { name: "LayerNorm [B, L, D]", shape: [2, 3, 16], groups: 1, kind: "ln" },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const ch = c.shape[c.shape.length - 1];
      // A large offset: the one-pass variance must not cancel.
      const x = tf.randomNormal(c.shape, 30, 2, "float32", 1);
      const g = tf.randomNormal([ch], 1, 0.3, "float32", 2) as tf.Tensor1D;
      const b = tf.randomNormal([ch], 0, 0.3, "float32", 3) as tf.Tensor1D;
      const dy = tf.randomNormal(c.shape, 0, 1, "float32", 4);
      const f: Norm = (xx, gg, bb) => {
        const w = { weight: gg, bias: bb, groups: c.groups, eps: 1e-5 };
        return c.kind === "ln"
          ? layerNorm(xx, w)
          : c.kind === "gn"
          ? groupNorm(xx, w)
          : groupNormThenSilu(xx, w);
      };
      const before = setWasmKernels({ fusedNorm: false });
      const stock = outputs(f, x, g, b, dy);
      setWasmKernels({ fusedNorm: true });
      assert(useWasmKernel("fusedNorm"));
      const start = tf.memory().numTensors;
      const fused = outputs(f, x, g, b, dy);
      assert.deepStrictEqual(
        tf.memory().numTensors - start,
        fused.length,
        "only the results are left",
      );
      setWasmKernels(before);
      const names = ["y", "dx", "dγ", "dβ"];
      fused.forEach((v, i) => {
        assert.deepStrictEqual(v.shape, stock[i].shape);
        const e = tensorRelativeError(v, stock[i]);
        assert(e < 2e-5, `${names[i]}: relative error ${e}`);
      });
      tf.dispose([x, g, b, dy, ...stock, ...fused]);
    });
  }
  await t.step("the SIMD loops and the JS loops agree", () => {
    const x = tf.randomNormal([2, 9, 9, 16], -5, 3, "float32", 6);
    const w = {
      weight: tf.randomNormal([16], 1, 0.3, "float32", 7) as tf.Tensor1D,
      bias: tf.randomNormal([16], 0, 0.3, "float32", 8) as tf.Tensor1D,
      groups: 4,
      eps: 1e-6,
    };
    const dy = tf.randomNormal([2, 9, 9, 16], 0, 1, "float32", 9);
    const f: Norm = (xx, gg, bb) => fusedNorm(xx, { ...w, weight: gg, bias: bb }, { silu: true });
    const simd = outputs(f, x, w.weight, w.bias, dy);
    const before = setWasmKernels({ normSimd: false });
    const js = outputs(f, x, w.weight, w.bias, dy);
    setWasmKernels(before);
    simd.forEach((v, i) => {
      const e = tensorRelativeError(v, js[i]);
      assert(e < 1e-5, `output ${i}: relative error ${e}`);
    });
    tf.dispose([x, w.weight, w.bias, dy, ...simd, ...js]);
    // And LayerNorm rows.
    const xl = tf.randomNormal([5, 7, 32], 20, 3, "float32", 10);
    const wl = {
      weight: tf.randomNormal([32], 1, 0.3, "float32", 11) as tf.Tensor1D,
      bias: tf.randomNormal([32], 0, 0.3, "float32", 12) as tf.Tensor1D,
      groups: 1,
      eps: 1e-5,
    };
    const dyl = tf.randomNormal([5, 7, 32], 0, 1, "float32", 13);
    const fl: Norm = (xx, gg, bb) =>
      fusedNorm(xx, { ...wl, weight: gg, bias: bb }, { layer: true });
    const rows = outputs(fl, xl, wl.weight, wl.bias, dyl);
    setWasmKernels({ normSimd: false });
    const rowsJs = outputs(fl, xl, wl.weight, wl.bias, dyl);
    setWasmKernels(before);
    rows.forEach((v, i) => {
      const e = tensorRelativeError(v, rowsJs[i]);
      assert(e < 1e-5, `LayerNorm output ${i}: relative error ${e}`);
    });
    tf.dispose([xl, wl.weight, wl.bias, dyl, ...rows, ...rowsJs]);
  });
  await t.step("repeated calls do not grow the tensor count", () => {
    const x = tf.randomNormal([2, 4, 4, 8], 0, 1, "float32", 5);
    const w = {
      weight: tf.ones([8]) as tf.Tensor1D,
      bias: tf.zeros([8]) as tf.Tensor1D,
      groups: 2,
      eps: 1e-5,
    };
    const step = () =>
      tf.tidy(() => tf.grad((xx: tf.Tensor) => tf.sum(fusedNorm(xx, w, { silu: true })))(x))
        .dispose();
    step();
    const n = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) step();
    assert.deepStrictEqual(tf.memory().numTensors, n);
    tf.dispose([x, w.weight, w.bias]);
  });
  await t.step("bad input and unknown switches are refused with what was expected", () => {
    const w = {
      weight: tf.ones([6]) as tf.Tensor1D,
      bias: tf.zeros([6]) as tf.Tensor1D,
      groups: 4,
      eps: 1e-5,
    };
    assert.throws(() => fusedNorm(tf.ones([1, 2, 2, 6]), w), /6 channels.*4 groups/);
    assert.throws(
      () => setWasmKernels({ fused: true } as never),
      /unknown switch 'fused'.*fusedNorm/,
    );
    assert.throws(() => setWasmKernels({ fusedNorm: 1 } as never), /'fusedNorm' must be a boolean/);
  });
});
