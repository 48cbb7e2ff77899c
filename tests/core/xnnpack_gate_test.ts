// The gate on XNNPACK's thread pool (core/_xnnpack_gate.ts): the pool's count is found through
// the exported `get_threads_count` (in a synthetic module and in the installed tfjs binary), a
// module of another shape is refused, small operations run on the calling thread and large ones
// on the pool, the count is restored after each, a hold keeps every operation on the calling
// thread until released, and the gate changes no bit.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import wabtInit from "wabt";
import {
  holdCallingThread,
  useBackend,
  wasmThreadsInUse,
  wasmThreadsToShare,
} from "../../core/backend.ts";
import {
  MIN_THREADED_MACS,
  poolCountSite,
  setXnnpackGate,
  xnnpackGateStats,
} from "../../core/_xnnpack_gate.ts";
import { THREADED_SIMD_WASM } from "../../core/_xnnpack_spin.ts";
import { parseUNetConfig, UNet2DConditionModel } from "../../adapters/unet/unet_2d_condition.ts";
import { RandomWeightReader } from "../../adapters/unet/random_weight_reader.ts";
import { SeededNoise } from "../../core/seeded_noise.ts";
import { TINY_UNET } from "../../bench/_unet_bench.ts";

const distDir = new URL(".", import.meta.resolve("@tensorflow/tfjs-backend-wasm")).pathname;

// tfjs 4.22's shape of the two functions, with an imported function ahead of them (so the
// function index differs from the code body's) and `extra` spliced into the outer one.
async function synthetic(extra = ""): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const wat = `(module
    (import "env" "f" (func))
    (memory 1)
    (func $count (param i32) (result i32)
      local.get 0 i32.eqz if i32.const 1 return end local.get 0 i32.load offset=132)
    (func $get (result i32) (local i32)
      i32.const 23564 i32.load local.tee 0 i32.eqz if i32.const -1 return end
      ${extra} local.get 0 call $count)
    (export "get_threads_count" (func $get)))`;
  const parsed = wabt.parseWat("synthetic.wat", wat);
  try {
    return parsed.toBinary({}).buffer;
  } finally {
    parsed.destroy();
  }
}

const poolThreads = (): number =>
  (tf.backend() as unknown as { wasm: { _get_threads_count(): number } }).wasm._get_threads_count();

Deno.test("XNNPACK pool gate: the site", async (t) => {
  await t.step("a synthetic module: the global's address and the field's offset", async () => {
    assert.deepEqual(poolCountSite(await synthetic()), { pointerAddress: 23564, countOffset: 132 });
  });
  await t.step("another shape, or no export: null (no gate)", async () => {
    assert.equal(poolCountSite(await synthetic("nop")), null);
    assert.equal(poolCountSite(new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0])), null);
    assert.equal(poolCountSite(new Uint8Array([1, 2, 3])), null);
  });
  await t.step("the installed tfjs binary has it", async () => {
    const site = poolCountSite(await Deno.readFile(distDir + THREADED_SIMD_WASM));
    assert.ok(site, "get_threads_count has the expected shape in tfjs-backend-wasm 4.22");
  });
});

Deno.test("XNNPACK pool gate: small operations on one thread, no bit changed", async (t) => {
  await useBackend("wasm", { wasmThreads: 2 });
  try {
    await t.step("attached to the two-thread pool", () => {
      assert.equal(xnnpackGateStats().attached, true);
      assert.equal(poolThreads(), 2);
    });

    await t.step("a small convolution runs alone, a large one on the pool", () => {
      const conv = (side: number, c: number) =>
        tf.tidy(() => {
          const x = tf.ones([1, side, side, c]);
          const f = tf.ones([3, 3, c, c]);
          return tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 1, "same").dataSync();
        });
      let before = xnnpackGateStats();
      conv(8, 8); // 8 · 8 · 9 · 8 · 8 = 37 K multiply-adds
      let after = xnnpackGateStats();
      assert.ok(after.sequential > before.sequential, "the small convolution ran alone");
      assert.equal(poolThreads(), 2, "and the pool's count came back");
      assert.ok(64 * 64 * 9 * 64 * 64 >= MIN_THREADED_MACS);
      before = after;
      conv(64, 64);
      after = xnnpackGateStats();
      assert.ok(after.threaded > before.threaded, "the large convolution used the pool");
    });

    await t.step("held on the calling thread: a large convolution too, until released", () => {
      const big = () =>
        tf.tidy(() =>
          tf.conv2d(
            tf.ones([1, 64, 64, 64]) as tf.Tensor4D,
            tf.ones([3, 3, 64, 64]) as tf.Tensor4D,
            1,
            "same",
          )
            .dataSync()
        );
      const outer = holdCallingThread();
      const inner = holdCallingThread();
      assert.equal(poolThreads(), 1);
      assert.equal(wasmThreadsToShare(), 1, "texforce's product pool keeps to this thread too");
      assert.equal(wasmThreadsInUse(), 2, "the backend's own thread count is unchanged");
      const before = xnnpackGateStats();
      big();
      assert.equal(xnnpackGateStats().threaded, before.threaded, "not on the pool");
      inner();
      inner();
      assert.equal(poolThreads(), 1, "a release counts once; the outer hold still holds");
      outer();
      assert.equal(poolThreads(), 2);
      assert.equal(wasmThreadsToShare(), 2);
      big();
      assert.ok(xnnpackGateStats().threaded > before.threaded, "the pool again");
    });

    await t.step(
      "the tiny UNet's output and input gradient: the same bits on and off",
      async () => {
        const config = parseUNetConfig(TINY_UNET, "<tiny config>");
        const unet = await UNet2DConditionModel.fromReader(config, new RandomWeightReader(1));
        const gen = new SeededNoise(7);
        const x = gen.normal([2, 16, 16, config.inChannels]) as tf.Tensor4D;
        const states = gen.normal([2, 77, config.crossAttentionDim[0]]) as tf.Tensor3D;
        const before = tf.memory().numTensors;
        const run = (): Float32Array[] => {
          const eps = unet.forward(x, [999, 20], states);
          const g = tf.grad((e: tf.Tensor) =>
            unet.forward(x, [999, 20], e as tf.Tensor3D).square().sum()
          )(
            states,
          );
          const out = [eps.dataSync() as Float32Array, g.dataSync() as Float32Array];
          tf.dispose([eps, g]);
          return out;
        };
        const seen = xnnpackGateStats().sequential;
        const on = run();
        assert.ok(xnnpackGateStats().sequential > seen, "the gate took part");
        setXnnpackGate(false);
        const off = run();
        setXnnpackGate(true);
        for (let i = 0; i < on.length; i++) {
          let diff = 0;
          for (let j = 0; j < on[i].length; j++) if (on[i][j] !== off[i][j]) diff++;
          assert.equal(diff, 0, `output ${i}: ${diff} of ${on[i].length} values differ`);
        }
        assert.equal(tf.memory().numTensors, before, "no tensor leaks");
        tf.dispose([x, states]);
        unet.dispose();
      },
    );
  } finally {
    setXnnpackGate(true);
    await useBackend("wasm");
  }
});
