// The `f16` kernel option (f16 operand tiles, f32 accumulation, in the tiled matmul and the
// implicit-GEMM conv): its WGSL compiles and matches the stock ops within f16 rounding where the
// device has `shader-f16` (Mesa's lavapipe does), and without the feature it falls back to f32
// with a one-line notice. Skipped with a printed reason where no WebGPU adapter exists.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { useBackend } from "../../../core/backend.ts";
import { prepareWebgpuEnvironment } from "../../../core/backend.ts";
import { requestShaderF16, useF16 } from "../../../adapters/webgpu/f16.ts";
import { hoistEnableDirectives } from "../../../adapters/webgpu/f16.ts";
import { setWebgpuKernels, webgpuKernelDefaults } from "../../../adapters/webgpu/kernel_options.ts";
import { tiledMatMul } from "../../../adapters/webgpu/tiled_matmul.ts";
import { conv3x3 } from "../../../adapters/webgpu/implicit_gemm_conv.ts";
import { gemmProgram } from "../../../adapters/webgpu/_tiled_gemm.ts";
import { noGpuErrors, seededTensor, strictRelativeError } from "../../_helpers.ts";

// Before the webgpu backend starts (and before any other adapter request of this file).
prepareWebgpuEnvironment();
const hasGpu = Boolean(
  await (globalThis.navigator as { gpu?: GPU }).gpu?.requestAdapter().catch(() => null),
);
const offered = hasGpu && await requestShaderF16();
if (!hasGpu) console.log("webgpu_f16_test: skipped, no WebGPU adapter (mesa-vulkan-drivers)");
else if (!offered) {
  console.log("webgpu_f16_test: f16 parity skipped, the adapter has no 'shader-f16'");
}

// Operands in [-1, 1) rounded to f16 (relative step 2^-11 ≈ 4.9e-4) before f32 products and
// sums: measured 2.8e-4 of max |reference| on lavapipe; the bound leaves ~18× headroom.
const TOL_F16 = 5e-3;

async function err(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  return strictRelativeError(await a.data(), await b.data());
}

Deno.test("webgpu f16: enable directives move to the top of a module", () => {
  const code = "struct U { a : f32, };\nenable f16;\nfn main() {}";
  const out = hoistEnableDirectives(code);
  assert.ok(out.startsWith("enable f16;"), out);
  assert.equal(out.match(/enable f16;/g)?.length, 1);
  assert.equal(hoistEnableDirectives("fn main() {}"), "fn main() {}");
  const g = gemmProgram({
    key: "t",
    batch: 1,
    m: 4,
    n: 4,
    a: { read: "return 0.0;", contiguousK: true },
    b: { read: "return 0.0;", contiguousK: true },
    bias: false,
    tile: 64,
    f16: true,
  });
  const src = g.getUserCode();
  assert.match(src, /enable f16;/);
  assert.match(src, /array<vec4<f16>, 256>/);
  assert.match(g.shaderKey, /_f16$/);
});

Deno.test("webgpu f16: without shader-f16 the option falls back to f32 with one notice", () => {
  const warn = console.warn;
  const lines: string[] = [];
  console.warn = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    const before = setWebgpuKernels({ f16: false });
    assert.equal(useF16({ device: { features: new Set(["shader-f16"]) } }), false, "off");
    setWebgpuKernels({ f16: true });
    assert.equal(useF16({ device: { features: new Set(["shader-f16"]) } }), true);
    assert.equal(useF16({ device: { features: new Set<string>() } }), false);
    assert.equal(useF16({ device: { features: new Set<string>() } }), false);
    setWebgpuKernels(before);
  } finally {
    console.warn = warn;
  }
  assert.equal(lines.length, 1, "one notice, once");
  assert.match(lines[0], /no 'shader-f16'.*f32/);
});

Deno.test({
  name: "webgpu f16: tiled matmul and 3×3 conv match the stock ops within f16 rounding",
  ignore: !offered,
  fn: async (t) => {
    await useBackend("webgpu");
    const device = (tf.backend() as unknown as { device: GPUDevice }).device;
    assert.ok(device.features.has("shader-f16"), "requestShaderF16 gave the device the feature");
    for (const tile of [64, 128] as const) {
      await t.step(
        `matmul 67×45×130 and its gradients, tile ${tile}`,
        () =>
          noGpuErrors(async () => {
            const a = seededTensor([67, 45], 1);
            const b = seededTensor([45, 130], 2);
            const w = seededTensor([67, 130], 3);
            const n0 = tf.memory().numTensors;
            setWebgpuKernels({ gemmTile: tile, f16: false });
            const f32 = tiledMatMul(a, b);
            setWebgpuKernels({ f16: true });
            const want = tf.matMul(a, b);
            const got = tiledMatMul(a, b);
            const e = await err(got, want);
            assert.ok(e <= TOL_F16, `forward error ${e}`);
            // Really rounded: further from the reference than the f32 kernel.
            assert.ok(e > 10 * await err(f32, want), `f16 path not taken (${e})`);
            type Mul = (x: tf.Tensor, y: tf.Tensor) => tf.Tensor;
            const loss = (f: Mul) => (x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(f(x, y), w));
            const gw = tf.grads(loss((x, y) => tf.matMul(x, y)))([a, b]);
            const gg = tf.grads(loss((x, y) => tiledMatMul(x, y)))([a, b]);
            for (let i = 0; i < 2; i++) {
              const eg = await err(gg[i], gw[i]);
              assert.ok(eg <= TOL_F16, `grad ${i} error ${eg}`);
            }
            console.log(`  matmul f16 tile ${tile}: forward error ${e.toExponential(2)}`);
            tf.dispose([f32, want, got, ...gw, ...gg]);
            assert.equal(tf.memory().numTensors, n0, "no tensor left behind");
            tf.dispose([a, b, w]);
          }),
      );
      await t.step(
        `conv 1×9×7×20 → 13 + bias stride 2, x/W/b gradients, tile ${tile}`,
        () =>
          noGpuErrors(async () => {
            setWebgpuKernels({ gemmTile: tile, f16: true });
            const x = seededTensor([1, 9, 7, 20], 4) as tf.Tensor4D;
            const wt = seededTensor([3, 3, 20, 13], 5) as tf.Tensor4D;
            const bias = seededTensor([13], 6) as tf.Tensor1D;
            const dy = seededTensor([1, 5, 4, 13], 7);
            const n0 = tf.memory().numTensors;
            const pad: [[0, 0], [1, 1], [1, 1], [0, 0]] = [[0, 0], [1, 1], [1, 1], [0, 0]];
            const stock = (v: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
              tf.add(tf.conv2d(v as tf.Tensor4D, ww as tf.Tensor4D, 2, pad), bb);
            const mine = (v: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
              conv3x3(v as tf.Tensor4D, ww as tf.Tensor4D, bb as tf.Tensor1D, {
                stride: 2,
                weightGrad: true,
              });
            const loss = (f: typeof stock) => (v: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
              tf.sum(tf.mul(f(v, ww, bb), dy));
            const want = tf.tidy(() => stock(x, wt, bias));
            const got = mine(x, wt, bias);
            const e = await err(got, want);
            assert.ok(e <= TOL_F16, `forward error ${e}`);
            const gw = tf.grads(loss(stock))([x, wt, bias]);
            const gg = tf.grads(loss(mine))([x, wt, bias]);
            for (const [i, name] of ["dX", "dW", "db"].entries()) {
              const eg = await err(gg[i], gw[i]);
              assert.ok(eg <= TOL_F16, `${name} error ${eg}`);
            }
            console.log(`  conv f16 tile ${tile}: forward error ${e.toExponential(2)}`);
            tf.dispose([want, got, ...gw, ...gg]);
            assert.equal(tf.memory().numTensors, n0, "no tensor left behind");
            tf.dispose([x, wt, bias, dy]);
          }),
      );
    }
    setWebgpuKernels({ f16: false, gemmTile: webgpuKernelDefaults.gemmTile });
  },
});
