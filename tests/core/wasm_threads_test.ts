import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend, wasmThreadCount } from "../../core/backend.ts";
import { type ClipTextConfig, ClipTextModel } from "../../adapters/clip/clip_text_model.ts";
import { LoraAdapter, LoraStack } from "../../adapters/lora/lora.ts";
import { parseUNetConfig, UNet2DConditionModel } from "../../adapters/unet/unet_2d_condition.ts";
import { RandomWeightReader } from "../../adapters/unet/random_weight_reader.ts";
import { SeededNoise } from "../../core/seeded_noise.ts";
import { RandomClipWeights } from "../../bench/clip.ts";
import { TINY_UNET } from "../../bench/_unet_bench.ts";

/** XNNPACK's pool size as the wasm module reports it. */
function poolThreads(): number {
  const b = tf.backend() as unknown as { wasm: { tfjs: { getThreadsCount(): number } } };
  return b.wasm.tfjs.getThreadsCount();
}

const SMALL_TEXT: ClipTextConfig = {
  vocabSize: 1000,
  hiddenSize: 64,
  intermediateSize: 256,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  maxPositionEmbeddings: 77,
  hiddenAct: "quick_gelu",
  layerNormEps: 1e-5,
  eosTokenId: 999,
};

/** CLIP text forward and LoRA gradients, and the tiny UNet's forward and input gradient. */
async function workload(): Promise<Float32Array[]> {
  const before = tf.memory().numTensors;
  const model = await ClipTextModel.fromSource(new RandomClipWeights(SMALL_TEXT), SMALL_TEXT);
  const lora = new LoraStack();
  lora.add(LoraAdapter.create("default", model.linearShapes(), { rank: 4, alpha: 4, seed: 3 }));
  for (const m of lora.get("default").modules.values()) {
    tf.tidy(() => m.b.assign(tf.randomNormal(m.b.shape, 0, 0.01, "float32", 1)));
  }
  const ids = tf.tensor2d(
    Array.from({ length: 2 * 77 }, (_, i) => (i * 7919) % 1000),
    [2, 77],
    "int32",
  );
  const vars = [...lora.trainableVariables().values()];
  const hidden = model.forward(ids, { lora }).lastHiddenState;
  const { value, grads } = tf.variableGrads(
    () => tf.mean(tf.square(model.forward(ids, { lora }).lastHiddenState)) as tf.Scalar,
    vars,
  );
  const out = [await hidden.data() as Float32Array, await value.data() as Float32Array];
  for (const g of Object.values(grads)) out.push(await g.data() as Float32Array);
  tf.dispose([hidden, value, ids, ...Object.values(grads)]);
  lora.dispose();
  model.dispose();

  const config = parseUNetConfig(TINY_UNET, "<tiny config>");
  const unet = await UNet2DConditionModel.fromReader(config, new RandomWeightReader(1));
  const gen = new SeededNoise(7);
  const x = gen.normal([2, 8, 8, config.inChannels]) as tf.Tensor4D;
  const states = gen.normal([2, 77, config.crossAttentionDim[0]]) as tf.Tensor3D;
  const eps = unet.forward(x, [999, 20], states);
  const g = tf.grad((e: tf.Tensor) => unet.forward(x, [999, 20], e as tf.Tensor3D).square().mean())(
    states,
  );
  out.push(await eps.data() as Float32Array, await g.data() as Float32Array);
  tf.dispose([x, states, eps, g]);
  unet.dispose();
  assert.equal(tf.memory().numTensors, before, "the workload leaks no tensors");
  return out;
}

function assertBitwise(a: Float32Array[], b: Float32Array[], what: string): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    assert.equal(a[i].length, b[i].length);
    let diff = 0;
    for (let j = 0; j < a[i].length; j++) if (a[i][j] !== b[i][j]) diff++;
    assert.equal(diff, 0, `${what}: output ${i} differs in ${diff} of ${a[i].length} values`);
  }
}

Deno.test("wasm threads: the pool starts, and results do not depend on its size", async (t) => {
  let two: Float32Array[] = [];
  await t.step("two threads start", async () => {
    const info = await useBackend("wasm", { wasmThreads: 2 });
    assert.equal(info.device, "WebAssembly (SIMD, 2 threads)");
    assert.equal(poolThreads(), 2);
    two = await workload();
  });
  await t.step("same seed, same pool: the same bits", async () => {
    assertBitwise(await workload(), two, "2 threads twice");
  });
  await t.step("one thread (the single-threaded build) gives the same bits", async () => {
    const info = await useBackend("wasm", { wasmThreads: 1 });
    assert.equal(info.device, "WebAssembly (SIMD, single thread)");
    assertBitwise(await workload(), two, "1 vs 2 threads");
  });
  await t.step("three threads (an odd split of the work) give the same bits", async () => {
    const info = await useBackend("wasm", { wasmThreads: 3 });
    assert.equal(info.device, "WebAssembly (SIMD, 3 threads)");
    assert.equal(poolThreads(), 3);
    assertBitwise(await workload(), two, "3 vs 2 threads");
  });
  await useBackend("wasm");
});

Deno.test("wasm threads: the count follows the option, then TEXFORCE_WASM_THREADS", () => {
  const saved = Deno.env.get("TEXFORCE_WASM_THREADS");
  try {
    assert.equal(wasmThreadCount({ wasmThreads: 2 }), 2);
    assert.equal(wasmThreadCount({ wasmThreads: 64 }), 8, "tfjs-backend-wasm caps at 8");
    assert.equal(wasmThreadCount({ wasmThreads: 0 }), 1);
    Deno.env.set("TEXFORCE_WASM_THREADS", "3");
    assert.equal(wasmThreadCount(), 3);
    assert.equal(wasmThreadCount({ wasmThreads: 1 }), 1, "the option wins");
    Deno.env.set("TEXFORCE_WASM_THREADS", "two");
    assert.throws(() => wasmThreadCount(), /TEXFORCE_WASM_THREADS must be a whole number/);
    Deno.env.delete("TEXFORCE_WASM_THREADS");
    const n = wasmThreadCount();
    // The pool started above is running: the default is its size (decided once per process).
    assert.ok(n >= 1 && n <= 8, `default ${n}`);
  } finally {
    if (saved === undefined) Deno.env.delete("TEXFORCE_WASM_THREADS");
    else Deno.env.set("TEXFORCE_WASM_THREADS", saved);
  }
});

Deno.test("wasm threads: the load-aware default is decided once per process", async () => {
  const saved = Deno.env.get("TEXFORCE_WASM_THREADS");
  try {
    Deno.env.delete("TEXFORCE_WASM_THREADS");
    const info = await useBackend("wasm");
    const running = Number(/(\d+) threads/.exec(info.device)?.[1] ?? 1);
    // Whatever the load does now, a later default call keeps the running pool (no restart).
    assert.equal(wasmThreadCount(), running, info.device);
    const again = await useBackend("wasm");
    assert.equal(again.device, info.device);
  } finally {
    if (saved === undefined) Deno.env.delete("TEXFORCE_WASM_THREADS");
    else Deno.env.set("TEXFORCE_WASM_THREADS", saved);
  }
});
