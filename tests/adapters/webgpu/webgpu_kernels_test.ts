// Parity of texforce's own WebGPU kernels with the stock tfjs ops they replace, forward and
// gradient, on odd shapes (not multiples of the tiles, batch 1, one head, Lk ≠ Lq, head widths
// 40 as in SD and 8). Runs on any WebGPU adapter (CI: Mesa's lavapipe); skipped with a printed
// reason where none exists.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { useBackend } from "../../../core/backend.ts";
import { multiHeadAttention } from "../../../adapters/nn/attention.ts";
import { flashAttention } from "../../../adapters/webgpu/flash_attention.ts";
import { setWebgpuKernels, webgpuKernelDefaults } from "../../../adapters/webgpu/kernel_options.ts";
import { tiledConstLinear, tiledMatMul } from "../../../adapters/webgpu/tiled_matmul.ts";
import { groupNormSilu } from "../../../adapters/webgpu/group_norm_silu.ts";
import { conv3x3 } from "../../../adapters/webgpu/implicit_gemm_conv.ts";
import { groupNorm } from "../../../adapters/nn/group_norm.ts";
import { silu } from "../../../adapters/unet/_activations.ts";
import { UNet2DConditionModel } from "../../../adapters/unet/unet_2d_condition.ts";
import {
  availableBackends,
  fixture,
  noGpuErrors,
  seededTensor,
  strictRelativeError,
} from "../../_helpers.ts";

const hasWebgpu = (await availableBackends()).includes("webgpu");
if (!hasWebgpu) {
  console.log(
    "webgpu_kernels_test: skipped, no WebGPU adapter (install mesa-vulkan-drivers) or " +
      "TEXFORCE_BACKENDS leaves webgpu out",
  );
}

// Tolerances, as max |a − b| / max |b| over the whole tensor. Both sides compute in f32; the
// kernels sum in another order (tiles, online softmax rescaling), so errors are a few ulp per
// accumulated term: at most 1.4e-6 measured on lavapipe (2026-12-01: attention 8.3e-7, matmul
// 3.1e-7, GroupNorm 2.1e-7, conv dX 1.1e-6, conv db 2.5e-7, conv dW 0: it sums the pixels in
// the order tfjs' Conv2DBackpropFilter does); the bounds leave 15–100× headroom. The test
// "worst errors" prints them.
const TOL = { forward: 2e-5, grad: 1e-4 };

/**
 * max |a − b| / max |b|; where the reference is all but zero (e.g. dQ with a single key, whose
 * softmax has no gradient) the absolute error instead.
 */
async function relErr(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const [x, y] = [await a.data(), await b.data()];
  let scale = 0;
  for (const v of y) scale = Math.max(scale, Math.abs(v));
  if (scale < 1e-6) {
    let e = 0;
    for (let i = 0; i < x.length; i++) e = Math.max(e, Math.abs(x[i] - y[i]));
    return e;
  }
  return strictRelativeError(x, y);
}

/** Worst errors seen per check, printed at the end (the report quotes them). */
const worst = new Map<string, number>();
function note(what: string, err: number): void {
  worst.set(what, Math.max(worst.get(what) ?? 0, err));
}

interface AttnCase {
  b: number;
  lq: number;
  lk: number;
  heads: number;
  d: number;
  causal?: boolean;
  scale?: number;
}

const ATTN_CASES: AttnCase[] = [
  { b: 2, lq: 70, lk: 77, heads: 8, d: 40 }, // cross-attention, SD head width, odd lengths
  { b: 1, lq: 130, lk: 130, heads: 1, d: 40 }, // self-attention, one head, > 2 tiles of 64
  { b: 2, lq: 33, lk: 5, heads: 3, d: 8 }, // few keys, small head
  { b: 1, lq: 1, lk: 1, heads: 2, d: 8 }, // one token
  { b: 1, lq: 17, lk: 17, heads: 2, d: 6, causal: true }, // causal (CLIP), scalar loads (6 % 4)
  { b: 2, lq: 77, lk: 77, heads: 4, d: 16, causal: true, scale: 0.3 },
];

Deno.test({
  name: "webgpu kernels: flash attention matches multiHeadAttention, forward and gradients",
  ignore: !hasWebgpu,
  fn: async (t) => {
    await useBackend("webgpu");
    for (const c of ATTN_CASES) {
      await t.step(
        `B${c.b} Lq${c.lq} Lk${c.lk} h${c.heads} d${c.d}${c.causal ? " causal" : ""}`,
        () =>
          noGpuErrors(async () => {
            const hd = c.heads * c.d;
            const q = seededTensor([c.b, c.lq, hd], 1);
            const k = seededTensor([c.b, c.lk, hd], 2);
            const v = seededTensor([c.b, c.lk, hd], 3);
            const w = seededTensor([c.b, c.lq, hd], 4);
            const mask = c.causal
              ? tf.tidy(() =>
                tf.linalg.bandPart(tf.ones([c.lq, c.lk]), -1, 0).sub(1).mul(1e9)
                  .reshape([1, 1, c.lq, c.lk])
              )
              : undefined;
            const stock = (a: tf.Tensor, b: tf.Tensor, cc: tf.Tensor) =>
              multiHeadAttention(a, b, cc, c.heads, mask, c.scale);
            const flash = (a: tf.Tensor, b: tf.Tensor, cc: tf.Tensor) =>
              flashAttention(a, b, cc, { heads: c.heads, causal: c.causal, scale: c.scale });
            const before = tf.memory().numTensors;
            for (let rep = 0; rep < 2; rep++) {
              tf.tidy(() => flash(q, k, v)).dispose();
            }
            const want = tf.tidy(() => stock(q, k, v));
            const got = tf.tidy(() => flash(q, k, v));
            const ef = await relErr(got, want);
            note("attention forward", ef);
            assert.ok(ef <= TOL.forward, `forward error ${ef}`);
            const loss = (f: typeof stock) => (a: tf.Tensor, b: tf.Tensor, cc: tf.Tensor) =>
              tf.sum(tf.mul(f(a, b, cc), w));
            const gw = tf.grads(loss(stock))([q, k, v]);
            const gg = tf.grads(loss(flash))([q, k, v]);
            for (const [i, name] of ["dq", "dk", "dv"].entries()) {
              const e = await relErr(gg[i], gw[i]);
              note(`attention ${name}`, e);
              assert.ok(e <= TOL.grad, `${name} error ${e}`);
            }
            tf.dispose([want, got, ...gw, ...gg]);
            // The kernels leave no tensors behind (forward alone and through tf.grads).
            tf.dispose(tf.grads(loss(flash))([q, k, v]));
            assert.equal(tf.memory().numTensors, before, "no tensor left behind");
            tf.dispose([q, k, v, w, mask ?? []].flat());
          }),
      );
    }
  },
});

const MATMUL_SHAPES: [number, number, number, number][] = [
  // [batch (0 = 2-D), M, K, N]: not multiples of the 64 × 64 × 16 tiles, single rows/columns.
  [0, 67, 45, 130],
  [0, 1, 77, 5],
  [0, 129, 16, 1],
  [3, 33, 70, 65],
  [1, 64, 64, 64],
];

Deno.test({
  name: "webgpu kernels: tiled matmul matches tf.matMul, all transposes, forward and gradients",
  ignore: !hasWebgpu,
  fn: async (t) => {
    await useBackend("webgpu");
    for (const [batch, m, k, n] of MATMUL_SHAPES) {
      for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
        // Both GEMM tiles (64: 4 × 4 per thread, 128: 8 × 8), alternating to bound the time.
        const tile = (m + k + n + Number(ta) + 2 * Number(tb)) % 2 ? 128 : 64;
        setWebgpuKernels({ gemmTile: tile });
        await t.step(
          `${batch || "2-D"} ${m}×${k}×${n} ${ta ? "Aᵀ" : "A"}·${tb ? "Bᵀ" : "B"} tile ${tile}`,
          () =>
            noGpuErrors(async () => {
              const lead = batch ? [batch] : [];
              const a = seededTensor([...lead, ...(ta ? [k, m] : [m, k])], 5);
              const b = seededTensor([...lead, ...(tb ? [n, k] : [k, n])], 6);
              const w = seededTensor([...lead, m, n], 7);
              const before = tf.memory().numTensors;
              const want = tf.matMul(a, b, ta, tb);
              const got = tiledMatMul(a, b, ta, tb);
              assert.deepEqual(got.shape, want.shape);
              const ef = await relErr(got, want);
              note("matmul forward", ef);
              assert.ok(ef <= TOL.forward, `forward error ${ef}`);
              const loss =
                (f: (x: tf.Tensor, y: tf.Tensor) => tf.Tensor) => (x: tf.Tensor, y: tf.Tensor) =>
                  tf.sum(tf.mul(f(x, y), w));
              const gw = tf.grads(loss((x, y) => tf.matMul(x, y, ta, tb)))([a, b]);
              const gg = tf.grads(loss((x, y) => tiledMatMul(x, y, ta, tb)))([a, b]);
              for (const [i, name] of ["dA", "dB"].entries()) {
                assert.deepEqual(gg[i].shape, gw[i].shape);
                const e = await relErr(gg[i], gw[i]);
                note(`matmul ${name}`, e);
                assert.ok(e <= TOL.grad, `${name} error ${e}`);
              }
              tf.dispose([want, got, ...gw, ...gg]);
              assert.equal(tf.memory().numTensors, before, "no tensor left behind");
              tf.dispose([a, b, w]);
            }),
        );
      }
    }
    setWebgpuKernels({ gemmTile: webgpuKernelDefaults.gemmTile });
    await t.step(
      "frozen linear with bias: forward and input gradient",
      () =>
        noGpuErrors(async () => {
          const x = seededTensor([45, 70], 8);
          const wt = seededTensor([70, 33], 9) as tf.Tensor2D;
          const bias = seededTensor([33], 10) as tf.Tensor1D;
          const dy = seededTensor([45, 33], 11);
          const before = tf.memory().numTensors;
          const f = tiledConstLinear(wt, bias);
          const want = tf.tidy(() => tf.add(tf.matMul(x, wt), bias));
          const got = f(x as tf.Tensor2D);
          note("linear forward", await relErr(got, want));
          assert.ok(await relErr(got, want) <= TOL.forward);
          const gw = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(tf.add(tf.matMul(v, wt), bias), dy)))(
            x,
          );
          const gg = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(f(v as tf.Tensor2D), dy)))(x);
          note("linear dX", await relErr(gg, gw));
          assert.ok(await relErr(gg, gw) <= TOL.grad);
          tf.dispose([want, got, gw, gg]);
          assert.equal(tf.memory().numTensors, before, "no tensor left behind");
          tf.dispose([x, wt, bias, dy]);
        }),
    );
  },
});

const NORM_CASES: { shape: number[]; groups: number; silu: boolean }[] = [
  { shape: [2, 5, 7, 64], groups: 32, silu: true }, // two channels per group, 35 pixels
  { shape: [1, 9, 9, 40], groups: 8, silu: true }, // five per group, batch 1
  { shape: [2, 77, 96], groups: 32, silu: false }, // [B, L, C] as in Transformer2D's norm
  { shape: [1, 33, 33, 320], groups: 32, silu: true }, // more elements than a workgroup's pass
  { shape: [2, 1, 1, 32], groups: 32, silu: true }, // one element per group (variance 0)
];

Deno.test({
  name: "webgpu kernels: fused GroupNorm + SiLU matches the stock ops, forward and gradients",
  ignore: !hasWebgpu,
  fn: async (t) => {
    await useBackend("webgpu");
    for (const c of NORM_CASES) {
      await t.step(
        `${c.shape.join("×")} groups ${c.groups}${c.silu ? " + SiLU" : ""}`,
        () =>
          noGpuErrors(async () => {
            const ch = c.shape[c.shape.length - 1];
            const x = tf.tidy(() => seededTensor(c.shape, 12).mul(3).add(0.5));
            const gamma = tf.tidy(() => seededTensor([ch], 13).add(1));
            const beta = seededTensor([ch], 14);
            const dy = seededTensor(c.shape, 15);
            const before = tf.memory().numTensors;
            const weights = (g: tf.Tensor, bb: tf.Tensor) => ({
              weight: g as tf.Tensor1D,
              bias: bb as tf.Tensor1D,
              groups: c.groups,
              eps: 1e-5,
            });
            const stock = (v: tf.Tensor, g: tf.Tensor, bb: tf.Tensor) => {
              const y = groupNorm(v, weights(g, bb));
              return c.silu ? silu(y) : y;
            };
            const fused = (v: tf.Tensor, g: tf.Tensor, bb: tf.Tensor) =>
              groupNormSilu(v, weights(g, bb), c.silu);
            const want = tf.tidy(() => stock(x, gamma, beta));
            const got = tf.tidy(() => fused(x, gamma, beta));
            const ef = await relErr(got, want);
            note("groupnorm forward", ef);
            assert.ok(ef <= TOL.forward, `forward error ${ef}`);
            const loss = (f: typeof stock) => (v: tf.Tensor, g: tf.Tensor, bb: tf.Tensor) =>
              tf.sum(tf.mul(f(v, g, bb), dy));
            const gw = tf.grads(loss(stock))([x, gamma, beta]);
            const gg = tf.grads(loss(fused))([x, gamma, beta]);
            for (const [i, name] of ["dx", "dγ", "dβ"].entries()) {
              const e = await relErr(gg[i], gw[i]);
              note(`groupnorm ${name}`, e);
              assert.ok(e <= TOL.grad, `${name} error ${e}`);
            }
            tf.dispose([want, got, ...gw, ...gg]);
            assert.equal(tf.memory().numTensors, before, "no tensor left behind");
            tf.dispose([x, gamma, beta, dy]);
          }),
      );
    }
  },
});

const CONV_CASES: [number, number, number, number, number, boolean, 1 | 2][] = [
  // [batch, height, width, in, out, bias, stride]
  [1, 5, 7, 3, 4, false, 1], // fewer channels than a tile slice
  [2, 9, 9, 40, 24, true, 1],
  [1, 17, 13, 64, 70, true, 1], // > one 64-row tile of pixels and of output channels
  [2, 1, 1, 8, 5, true, 1], // every tap but the centre is padding
  [1, 9, 9, 40, 24, true, 2], // odd size: output 5 × 5, the last row and column see padding
  [2, 8, 6, 5, 3, false, 2], // even size (the UNet's downsamplers): output 4 × 3
  [1, 17, 10, 70, 33, true, 2], // more taps · channels (630) than a 128-row tile
];

Deno.test({
  name: "webgpu kernels: implicit-GEMM 3×3 conv matches tf.conv2d, forward and x, W, b gradients",
  ignore: !hasWebgpu,
  fn: async (t) => {
    await useBackend("webgpu");
    for (const c of CONV_CASES.flatMap((cc) => [64, 128].map((tile) => ({ cc, tile })))) {
      const [b, h, w, cin, cout, hasBias, stride] = c.cc;
      setWebgpuKernels({ gemmTile: c.tile as 64 | 128 });
      await t.step(
        `${b}×${h}×${w}×${cin} → ${cout}${hasBias ? " + bias" : ""} stride ${stride} ` +
          `tile ${c.tile}`,
        () =>
          noGpuErrors(async () => {
            const x = seededTensor([b, h, w, cin], 18) as tf.Tensor4D;
            const wt = seededTensor([3, 3, cin, cout], 19) as tf.Tensor4D;
            const bias = hasBias ? seededTensor([cout], 20) as tf.Tensor1D : undefined;
            const [oh, ow] = [Math.floor((h - 1) / stride) + 1, Math.floor((w - 1) / stride) + 1];
            const dy = seededTensor([b, oh, ow, cout], 21);
            const before = tf.memory().numTensors;
            // PyTorch's padding=1 on every side (tfjs' "same" would pad 0 before for stride 2).
            const pad: [[0, 0], [1, 1], [1, 1], [0, 0]] = [[0, 0], [1, 1], [1, 1], [0, 0]];
            const stock = (v: tf.Tensor, ww: tf.Tensor, bb?: tf.Tensor) => {
              const y = tf.conv2d(v as tf.Tensor4D, ww as tf.Tensor4D, stride, pad);
              return bb ? tf.add(y, bb) : y;
            };
            const mine = (v: tf.Tensor, ww: tf.Tensor, bb?: tf.Tensor, weightGrad = true) =>
              conv3x3(v as tf.Tensor4D, ww as tf.Tensor4D, bb as tf.Tensor1D | undefined, {
                stride,
                weightGrad,
              });
            const want = tf.tidy(() => stock(x, wt, bias));
            for (const weightGrad of [false, true]) {
              const got = mine(x, wt, bias, weightGrad);
              assert.deepEqual(got.shape, want.shape);
              const ef = await relErr(got, want);
              note("conv forward", ef);
              assert.ok(ef <= TOL.forward, `forward error ${ef}`);
              got.dispose();
            }
            const loss = (f: typeof stock) => (...vs: tf.Tensor[]) =>
              tf.sum(tf.mul(f(vs[0], vs[1], vs[2]), dy));
            const args = bias ? [x, wt, bias] : [x, wt];
            const gw = tf.grads(loss(stock))(args);
            const gg = tf.grads(loss(mine))(args);
            for (const [i, name] of ["dX", "dW", "db"].slice(0, args.length).entries()) {
              assert.deepEqual(gg[i].shape, gw[i].shape);
              const e = await relErr(gg[i], gw[i]);
              note(`conv ${name}`, e);
              assert.ok(e <= TOL.grad, `${name} error ${e}`);
            }
            // Frozen weight (the UNet's case): the input gradient alone.
            const gx = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(mine(v, wt, bias, false), dy)))(x);
            const ex = await relErr(gx, gw[0]);
            note("conv dX (frozen W)", ex);
            assert.ok(ex <= TOL.grad, `frozen dX error ${ex}`);
            tf.dispose([want, gx, ...gw, ...gg]);
            assert.equal(tf.memory().numTensors, before, "no tensor left behind");
            tf.dispose([x, wt, dy, bias ?? []].flat());
          }),
      );
    }
  },
});

Deno.test({
  name: "webgpu kernels: tiny UNet forward and gradients equal with the kernels on and off",
  ignore: !hasWebgpu,
  fn: async () => {
    await useBackend("webgpu");
    setWebgpuKernels({ gemmTile: webgpuKernelDefaults.gemmTile });
    await noGpuErrors(async () => {
      const unet = await UNet2DConditionModel.load(fixture("sd-tiny", "tiny-sd", "unet"));
      const c = unet.config;
      const sample = seededTensor([2, 8, 8, c.inChannels], 16) as tf.Tensor4D;
      const states = seededTensor([2, 7, c.crossAttentionDim[0]], 17) as tf.Tensor3D;
      const loss = (s: tf.Tensor, x: tf.Tensor) =>
        unet.forward(x as tf.Tensor4D, [999, 10], s as tf.Tensor3D).square().mean();
      const run = async () => {
        const y = unet.forward(sample, [999, 10], states);
        const [gs, gx] = tf.grads(loss)([states, sample]);
        const out = [await y.data(), await gs.data(), await gx.data()];
        tf.dispose([y, gs, gx]);
        return out;
      };
      const before = setWebgpuKernels({
        flashAttention: false,
        tiledMatmul: false,
        groupNormSilu: false,
        implicitGemmConv: false,
      });
      const stock = await run();
      setWebgpuKernels(before);
      const n0 = tf.memory().numTensors;
      const mine = await run();
      assert.equal(tf.memory().numTensors, n0, "no tensor left behind");
      // Through ~40 layers, as tests/adapters/unet/unet_test.ts allows webgpu against diffusers.
      for (const [i, what] of ["forward", "d/d states", "d/d sample"].entries()) {
        const e = strictRelativeError(mine[i], stock[i]);
        note(`tiny UNet ${what}`, e);
        assert.ok(e <= 1e-4, `tiny UNet ${what}: error ${e}`);
      }
      tf.dispose([sample, states]);
      unet.dispose();
    });
  },
});

Deno.test({
  name: "webgpu kernels: worst errors",
  ignore: !hasWebgpu,
  fn: () => {
    setWebgpuKernels({});
    for (const [k, v] of worst) console.log(`  ${k}: ${v.toExponential(2)}`);
  },
});
