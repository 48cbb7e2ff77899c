// `conv2d` computes its input gradient with a forward convolution of the (zero-dilated) output
// gradient and the flipped kernel, because tfjs-wasm's Conv2DBackpropInput is a slow scalar
// loop. This checks it against tf.grad of plain tf.conv2d on the cpu backend (the reference) for
// odd and even sizes, kernels 1 and 3, strides 1 and 2 and a batch > 1, on cpu, on wasm and,
// where an adapter exists, on webgpu (whose 3×3 padding-1 convs, frozen or trainable, run
// texforce's implicit-GEMM kernels there).
import * as tf from "@tensorflow/tfjs";
import { conv2d } from "../../../adapters/nn/conv2d.ts";
import { useBackend } from "../../../core/backend.ts";
import { assertClose, availableBackends } from "../../_helpers.ts";

const BACKENDS: ("cpu" | "wasm" | "webgpu")[] = ["cpu", "wasm"];
if ((await availableBackends()).includes("webgpu")) BACKENDS.push("webgpu");
else console.log("conv2d_grad_test: webgpu steps skipped, no WebGPU adapter");

interface Case {
  h: number;
  w: number;
  k: number;
  stride: number;
  padding: number;
}

const cases: Case[] = [];
for (const [h, w] of [[8, 8], [7, 7], [6, 9], [5, 4]]) {
  for (const [k, padding] of [[1, 0], [3, 1], [3, 0]]) {
    for (const stride of [1, 2]) cases.push({ h, w, k, stride, padding });
  }
}

const [n, cin, cout] = [3, 4, 5];
const data = (len: number, f: (i: number) => number) => Array.from({ length: len }, (_, i) => f(i));

/** dL/dx and the output for L = Σ conv(x) ⊙ dy, with `f` the convolution. */
function gradOf(c: Case, f: (x: tf.Tensor4D, weight: tf.Tensor4D) => tf.Tensor4D) {
  return tf.tidy(() => {
    const x = tf.tensor4d(data(n * c.h * c.w * cin, (i) => Math.sin(i * 0.37)), [
      n,
      c.h,
      c.w,
      cin,
    ]);
    const weight = tf.tensor4d(data(c.k * c.k * cin * cout, (i) => Math.cos(i * 0.61)), [
      c.k,
      c.k,
      cin,
      cout,
    ]);
    const y = f(x, weight);
    const dy = tf.tensor(data(y.size, (i) => Math.sin(i * 1.3 + 0.2)), y.shape);
    const g = tf.grad((v: tf.Tensor) => f(v as tf.Tensor4D, weight).mul(dy).sum())(x);
    return [y, g];
  });
}

Deno.test("conv2d: input gradient matches tf.grad of tf.conv2d", async (t) => {
  await useBackend("cpu");
  const expected: number[][][] = [];
  for (const c of cases) {
    const pad = c.padding;
    const [y, g] = gradOf(
      c,
      (x, weight) =>
        tf.conv2d(
          x,
          weight,
          c.stride,
          pad === 0 ? "valid" : [[0, 0], [pad, pad], [pad, pad], [
            0,
            0,
          ]],
        ),
    );
    expected.push([Array.from(await y.data()), Array.from(await g.data())]);
    tf.dispose([y, g]);
  }
  for (const backend of BACKENDS) {
    await t.step(backend, async () => {
      await useBackend(backend);
      for (const [i, c] of cases.entries()) {
        const bias = tf.tensor1d(data(cout, (j) => j * 0.1));
        const [y, g] = gradOf(c, (x, weight) => conv2d(x, { ...c, weight, bias }).sub(bias));
        const what = `${backend} ${JSON.stringify(c)}`;
        assertClose(Array.from(await y.data()), expected[i][0], 1e-4, `${what} value`);
        assertClose(Array.from(await g.data()), expected[i][1], 1e-4, `${what} grad`);
        tf.dispose([y, g, bias]);
      }
    });
  }
});

/** dL/dW for L = Σ conv(x, W) ⊙ dy, with W a variable (a trainable convolution). */
function filterGradOf(c: Case, f: (x: tf.Tensor4D, weight: tf.Tensor4D) => tf.Tensor4D) {
  return tf.tidy(() => {
    const x = tf.tensor4d(data(n * c.h * c.w * cin, (i) => Math.sin(i * 0.37)), [
      n,
      c.h,
      c.w,
      cin,
    ]);
    const init = tf.tensor4d(data(c.k * c.k * cin * cout, (i) => Math.cos(i * 0.61)), [
      c.k,
      c.k,
      cin,
      cout,
    ]);
    const weight = tf.variable(init);
    const y = f(x, weight);
    const dy = tf.tensor(data(y.size, (i) => Math.sin(i * 1.3 + 0.2)), y.shape);
    const { grads } = tf.variableGrads(() => f(x, weight).mul(dy).sum() as tf.Scalar, [weight]);
    const [gx] = [tf.grad((v: tf.Tensor) => f(v as tf.Tensor4D, weight).mul(dy).sum())(x)];
    const g = grads[weight.name];
    weight.dispose();
    return [g, gx];
  });
}

Deno.test("conv2d: a variable weight gets the filter gradient of tf.conv2d", async (t) => {
  await useBackend("cpu");
  const expected: number[][][] = [];
  for (const c of cases) {
    const pad = c.padding;
    const [g, gx] = filterGradOf(
      c,
      (x, weight) =>
        tf.conv2d(
          x,
          weight,
          c.stride,
          pad === 0 ? "valid" : [[0, 0], [pad, pad], [pad, pad], [
            0,
            0,
          ]],
        ),
    );
    expected.push([Array.from(await g.data()), Array.from(await gx.data())]);
    tf.dispose([g, gx]);
  }
  for (const backend of BACKENDS) {
    await t.step(backend, async () => {
      await useBackend(backend);
      const before = tf.memory().numTensors;
      for (const [i, c] of cases.entries()) {
        const [g, gx] = filterGradOf(c, (x, weight) => conv2d(x, { ...c, weight }));
        const what = `${backend} ${JSON.stringify(c)}`;
        assertClose(Array.from(await g.data()), expected[i][0], 1e-3, `${what} filter grad`);
        assertClose(Array.from(await gx.data()), expected[i][1], 1e-4, `${what} input grad`);
        tf.dispose([g, gx]);
      }
      if (tf.memory().numTensors !== before) {
        throw new Error(`${backend}: ${tf.memory().numTensors - before} tensors leaked`);
      }
    });
  }
});
