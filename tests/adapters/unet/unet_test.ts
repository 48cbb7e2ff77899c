import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { useBackend } from "../../../core/backend.ts";
import {
  encodeSafetensors,
  SafetensorsFile,
  type WritableTensor,
} from "../../../core/io/safetensors.ts";
import {
  loadUNetLora,
  parseUNetConfig,
  UNet2DConditionModel,
} from "../../../adapters/unet/unet_2d_condition.ts";
import { WeightReader } from "../../../adapters/nn/weight_reader.ts";
import { RandomWeightReader } from "../../../adapters/unet/random_weight_reader.ts";
import { setWasmKernels } from "../../../adapters/wasm/kernel_options.ts";
import { mergeUNetLora } from "../../../adapters/unet/unet_lora.ts";
import type { Tensor } from "../../../core/tensor_types.ts";
import {
  assertClose,
  availableBackends,
  checkDirectionalDerivative,
  fixtureJson,
  golden,
  nchwToNhwc,
  relativeError,
  TINY_SD,
} from "../../_helpers.ts";

// Lavapipe's WebGPU reorders sums (tiled matmuls/convs) and its exp/erf differ by a few ulp;
// through ~40 layers that stays below 1e-3 relative.
const TOL: Record<string, number> = { cpu: 1e-4, wasm: 1e-4, webgpu: 1e-3 };
const UNET_DIR = join(TINY_SD, "unet");

/** The fixture's raw `unet/config.json`. */
const rawConfig = () => fixtureJson("sd-tiny", "tiny-sd", "unet", "config.json");

async function inputs() {
  const g = await golden("sd-tiny");
  const ehs = g.get("unet.in.encoder_hidden_states")!;
  return {
    sample: nchwToNhwc(g.get("unet.in.sample")!),
    timesteps: Array.from(g.get("unet.in.timesteps")!.data),
    states: tf.tensor3d(ehs.data as Float32Array, ehs.shape as [number, number, number]),
    want: g.get("unet.noise_pred")!.data,
    wantShape: g.get("unet.noise_pred")!.shape,
  };
}

/** A per-block config value: diffusers broadcasts a scalar to every block. */
function perBlock(raw: Record<string, unknown>, field: string, n: number, def: unknown): number[] {
  const v = raw[field] ?? def;
  return Array.isArray(v) ? v as number[] : Array(n).fill(v);
}

/**
 * What diffusers' `UNet2DConditionModel.__init__` builds from a raw config, per attention block
 * (module prefix → heads and transformer blocks): `num_attention_heads or attention_head_dim`
 * (the `attention_head_dim` naming quirk: it holds head counts), down block i → heads[i], the mid
 * block → heads[-1], up block i → reversed(heads)[i]; `layers_per_block` resnets (and
 * attentions) per down block, one more per up block.
 */
function diffusersAttentionLayout(
  raw: Record<string, unknown>,
): Map<string, { heads: number; attentions: number; transformerBlocks: number }> {
  const boc = raw.block_out_channels as number[];
  const n = boc.length;
  const heads = perBlock(raw, "num_attention_heads", n, raw.attention_head_dim ?? 8);
  const layers = perBlock(raw, "layers_per_block", n, 2);
  const tl = perBlock(raw, "transformer_layers_per_block", n, 1);
  const rev = <T>(xs: T[]) => [...xs].reverse();
  const out = new Map<string, { heads: number; attentions: number; transformerBlocks: number }>();
  (raw.down_block_types as string[]).forEach((t, i) => {
    if (t.startsWith("CrossAttn")) {
      out.set(`down_blocks.${i}`, {
        heads: heads[i],
        attentions: layers[i],
        transformerBlocks: tl[i],
      });
    }
  });
  if (raw.mid_block_type !== null) {
    out.set("mid_block", { heads: heads[n - 1], attentions: 1, transformerBlocks: tl[n - 1] });
  }
  (raw.up_block_types as string[]).forEach((t, i) => {
    if (t.startsWith("CrossAttn")) {
      out.set(`up_blocks.${i}`, {
        heads: rev(heads)[i],
        attentions: rev(layers)[i] + 1,
        transformerBlocks: rev(tl)[i],
      });
    }
  });
  return out;
}

Deno.test("unet: forward matches diffusers", async (t) => {
  for (const backend of await availableBackends()) {
    await t.step(backend, async () => {
      await useBackend(backend as "cpu");
      const unet = await UNet2DConditionModel.load(TINY_SD);
      assert.deepEqual(unet.unusedWeights, [], "every checkpoint weight is used");
      const { sample, timesteps, states, want, wantShape } = await inputs();
      const t0 = performance.now();
      const y = unet.forward(sample, timesteps, states);
      const [b, c, h, w] = wantShape;
      assert.deepEqual(y.shape, [b, h, w, c], "output shape of the golden noise_pred (NHWC)");
      const got = await y.transpose([0, 3, 1, 2]).data();
      const ms = performance.now() - t0;
      const err = assertClose(got, want, TOL[backend], `unet ${backend}`);
      console.log(`${backend}: max rel err ${err.toExponential(2)} (${ms.toFixed(0)} ms)`);
      // Query slicing changes the order of work, not the result.
      unet.attentionSlice = 100;
      const sliced = await unet.forward(sample, timesteps, states).transpose([0, 3, 1, 2]).data();
      assertClose(sliced, got, 1e-5, "sliced attention");
      tf.dispose([sample, states, y]);
      unet.dispose();
    });
  }
});

Deno.test("unet: blocks and attentions are those the fixture's config.json describes", async () => {
  await useBackend("wasm");
  const raw = await rawConfig();
  const unet = await UNet2DConditionModel.load(UNET_DIR);
  const want = diffusersAttentionLayout(raw);
  // Every attention-holding block has attentions.{0..k-1}, each with its transformer blocks.
  const got = new Map<string, Set<string>>();
  for (const name of unet.linearLayerNames()) {
    const m = name.match(/^(.*?)\.attentions\.(\d+)\.transformer_blocks\.(\d+)\.attn1\.to_q$/);
    if (m) got.set(m[1], (got.get(m[1]) ?? new Set()).add(`${m[2]}.${m[3]}`));
  }
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), "blocks with attention");
  for (const [block, { attentions, transformerBlocks }] of want) {
    assert.equal(got.get(block)!.size, attentions * transformerBlocks, block);
  }
  const c = unet.config;
  const n = (raw.block_out_channels as number[]).length;
  assert.deepEqual(c.blockOutChannels, raw.block_out_channels);
  assert.deepEqual(c.downBlockTypes, raw.down_block_types);
  assert.deepEqual(c.upBlockTypes, raw.up_block_types);
  assert.deepEqual(c.layersPerBlock, perBlock(raw, "layers_per_block", n, 2));
  assert.deepEqual(c.crossAttentionDim, perBlock(raw, "cross_attention_dim", n, 1280));
  assert.deepEqual(
    c.numAttentionHeads,
    perBlock(raw, "num_attention_heads", n, raw.attention_head_dim ?? 8),
  );
  assert.deepEqual([c.inChannels, c.outChannels], [raw.in_channels, raw.out_channels]);
  assert.equal(c.sampleSize, raw.sample_size);
  unet.dispose();
});

/**
 * A reader that zeroes every attention's query projection outside the block `keep`. With q = 0
 * the scores are all 0 and the attention returns the mean of the values whatever the head count,
 * so the output of such a model depends on heads only through the attention of `keep`.
 */
class QueriesOnlyIn extends WeightReader {
  #inner: WeightReader;
  #keep: string;
  constructor(inner: WeightReader, keep: string) {
    super(inner.source, inner.prefix, inner.used);
    this.#inner = inner;
    this.#keep = keep;
  }
  override child(sub: string): WeightReader {
    return new QueriesOnlyIn(this.#inner.child(sub), this.#keep);
  }
  override has(key: string): boolean {
    return this.#inner.has(key);
  }
  override async tensor(key: string, shape?: number[]): Promise<Tensor> {
    const t = await this.#inner.tensor(key, shape);
    const full = this.prefix + key;
    if (!/\.attn[12]\.to_q\.weight$/.test(full) || full.startsWith(`${this.#keep}.`)) return t;
    const z = tf.zerosLike(t);
    t.dispose();
    return z;
  }
}

/** Distinct head counts, one per block, that divide every block's channels (smallest first). */
function distinctHeads(channels: number[]): number[] {
  const gcd = (a: number, b: number): number => b ? gcd(b, a % b) : a;
  const g = channels.reduce(gcd);
  const divisors = Array.from({ length: g }, (_, i) => i + 1).filter((d) => g % d === 0);
  if (divisors.length < channels.length) {
    throw new Error(`channels ${channels} have too few common divisors for distinct head counts`);
  }
  return divisors.slice(0, channels.length);
}

Deno.test("unet: each down/mid/up block attends with its own head count", async () => {
  await useBackend("wasm");
  // The fixture's architecture with a different head count per block, so that taking the down
  // path's counts for the up path (or the first block's for the mid block) changes the model.
  const raw = await rawConfig();
  const heads = distinctHeads(raw.block_out_channels as number[]);
  const config = { ...raw, num_attention_heads: null, attention_head_dim: heads };
  const layout = diffusersAttentionLayout(config);
  const reversedMatters = [...layout.keys()].some((k) =>
    k.startsWith("up_blocks.") && layout.get(k)!.heads !== heads[Number(k.split(".")[1])]
  );
  assert.ok(reversedMatters, `heads ${heads}: some up block must differ from its down twin`);
  const side = raw.sample_size as number;
  const x = tf.randomNormal([1, side, side, raw.in_channels as number], 0, 1, "float32", 7);
  const crossDim = perBlock(raw, "cross_attention_dim", heads.length, 1280)[0];
  const ctx = tf.randomNormal([1, 5, crossDim], 0, 1, "float32", 8) as tf.Tensor3D;
  const run = async (cfg: Record<string, unknown>, keep: string) => {
    const unet = await UNet2DConditionModel.fromReader(
      parseUNetConfig(cfg),
      new QueriesOnlyIn(new RandomWeightReader(3), keep),
    );
    const y = unet.forward(x as tf.Tensor4D, 500, ctx);
    const data = await y.data();
    y.dispose();
    unet.dispose();
    return data;
  };
  const uniform = (h: number) => ({ ...config, attention_head_dim: h });
  const report: string[] = [];
  for (const [block, { heads: h }] of layout) {
    // The block's attention is the only one that sees head counts: the model must equal one in
    // which every block has this block's count, and differ from one with another count.
    const got = await run(config, block);
    const same = await run(uniform(h), block);
    const other = heads.find((k) => k !== h)!;
    const diff = await run(uniform(other), block);
    // Right counts compute the same thing (error 0 up to summation order, bound 1e-5); a wrong
    // count must move the output at least ten times that bound, or the check would prove nothing.
    const err = assertClose(got, same, 1e-5, `${block} with ${h} heads`);
    const moved = relativeError(diff, same);
    assert.ok(moved > 1e-4, `${block}: ${other} heads instead of ${h} must change the output`);
    report.push(
      `${block}: ${h} heads (err ${err.toExponential(1)}; ${other} heads: ${
        moved.toExponential(1)
      })`,
    );
  }
  console.log(`heads per block ${JSON.stringify(heads)}: ${report.join("; ")}`);
  tf.dispose([x, ctx]);
});

Deno.test("unet: gradient into the encoder states, no leaks", async () => {
  await useBackend("wasm");
  const unet = await UNet2DConditionModel.load(UNET_DIR);
  const { sample, timesteps, states } = await inputs();
  const before = tf.memory().numTensors;
  for (let i = 0; i < 2; i++) unet.forward(sample, timesteps, states).dispose();
  assert.equal(tf.memory().numTensors, before, "forward leaves no tensors");
  const grad = tf.grad((s: tf.Tensor) =>
    unet.forward(sample, timesteps, s as tf.Tensor3D).square().mean()
  )(states);
  const [abs, finite] = await Promise.all([
    grad.abs().sum().data(),
    tf.all(tf.isFinite(grad)).data(),
  ]);
  assert.ok(finite[0] === 1 && abs[0] > 0, `gradient finite and non-zero (|g|₁ = ${abs[0]})`);
  // Central differences along the gradient, with steps relative to the states' scale, agree.
  const f = (s: tf.Tensor) =>
    tf.tidy(() => unet.forward(sample, timesteps, s as tf.Tensor3D).square().mean().dataSync()[0]);
  const fd = checkDirectionalDerivative(f, states, grad, "d/d states");
  console.log(
    `d/d states along the gradient ${fd.analytic.toExponential(3)}: finite-difference errors ${
      fd.errors.map((e) => e.toExponential(1)).join(", ")
    }`,
  );
  // Sliced attention recomputes its probabilities in the backward pass: same gradient, and
  // gradients into the sample too (the self-attention path).
  const loss = (s: tf.Tensor, x: tf.Tensor) =>
    unet.forward(x as tf.Tensor4D, timesteps, s as tf.Tensor3D).square().mean();
  const [gs0, gx0] = tf.grads(loss)([states, sample]);
  unet.attentionSlice = 100;
  const [gs1, gx1] = tf.grads(loss)([states, sample]);
  assertClose(await gs1.data(), await gs0.data(), 1e-5, "sliced attention: d/d states");
  assertClose(await gx1.data(), await gx0.data(), 1e-5, "sliced attention: d/d sample");
  assertClose(await gs1.data(), await grad.data(), 1e-5, "sliced vs first gradient");
  const n0 = tf.memory().numTensors;
  tf.grad((s: tf.Tensor) => loss(s, sample))(states).dispose();
  assert.equal(tf.memory().numTensors, n0, "the sliced backward pass leaves no tensors");
  tf.dispose([gs0, gx0, gs1, gx1]);
  unet.dispose();
});

Deno.test("unet: the fused wasm blocks change no bit of the output or the gradients", async (t) => {
  // The fused feed-forward, attention and ResNet parts (adapters/wasm/fused_*_block.ts) run
  // the same kernels in the same order as the ops one by one, and pass the gradients of inputs
  // used twice on separately, so that tfjs sums them in its own order: bitwise, at any thread count.
  const switches = { fusedFeedForward: true, fusedAttentionBlock: true, fusedResnetBlock: true };
  const fusedKernels = [
    "TexforceWasmFeedForward",
    "TexforceWasmAttentionBlock",
    "TexforceWasmResnetBlock",
  ];
  for (const threads of [1, 2]) {
    await t.step(`${threads} thread(s)`, async () => {
      await useBackend("wasm", { wasmThreads: threads });
      const unet = await UNet2DConditionModel.load(UNET_DIR);
      const { sample, timesteps, states } = await inputs();
      const loss = (s: tf.Tensor, x: tf.Tensor) =>
        unet.forward(x as tf.Tensor4D, timesteps, s as tf.Tensor3D).square().mean();
      const run = async (on: boolean) => {
        const before = setWasmKernels(Object.fromEntries(
          Object.keys(switches).map((k) => [k, on]),
        ));
        const profile = await tf.profile(() => unet.forward(sample, timesteps, states).dispose());
        const n0 = tf.memory().numTensors;
        const y = unet.forward(sample, timesteps, states);
        const [gs, gx] = tf.grads(loss)([states, sample]);
        const out = [await y.data(), await gs.data(), await gx.data()];
        tf.dispose([y, gs, gx]);
        assert.equal(tf.memory().numTensors, n0, `switches ${on}: no tensors left behind`);
        setWasmKernels(before);
        return { out, kernels: new Set(profile.kernelNames) };
      };
      const fused = await run(true);
      const stock = await run(false);
      for (const k of fusedKernels) {
        assert.ok(fused.kernels.has(k), `${k} runs`);
        assert.ok(!stock.kernels.has(k), `${k} off`);
      }
      ["output", "d/d states", "d/d sample"].forEach((what, i) =>
        assert.deepEqual(fused.out[i], stock.out[i], `${what}: bitwise the same`)
      );
      tf.dispose([sample, states]);
      unet.dispose();
    });
  }
});

Deno.test("unet: block recomputation gives the same gradients, no leaks", async () => {
  await useBackend("wasm");
  const unet = await UNet2DConditionModel.load(UNET_DIR);
  const { sample, timesteps, states } = await inputs();
  const loss = (s: tf.Tensor, x: tf.Tensor) =>
    unet.forward(x as tf.Tensor4D, timesteps, s as tf.Tensor3D).square().mean();
  const [gs0, gx0] = tf.grads(loss)([states, sample]);
  unet.recomputeBlocks = true;
  const y0 = unet.forward(sample, timesteps, states);
  const n0 = tf.memory().numTensors;
  const [gs1, gx1] = tf.grads(loss)([states, sample]);
  assertClose(await gs1.data(), await gs0.data(), 1e-6, "recomputed blocks: d/d states");
  assertClose(await gx1.data(), await gx0.data(), 1e-6, "recomputed blocks: d/d sample");
  tf.dispose([gs1, gx1]);
  assert.equal(tf.memory().numTensors, n0, "the recomputing backward pass leaves no tensors");
  const y1 = unet.forward(sample, timesteps, states);
  assertClose(await y1.data(), await y0.data(), 0, "forward unchanged");
  tf.dispose([gs0, gx0, y0, y1]);
  unet.dispose();
});

Deno.test("unet: config resolution and unsupported values", () => {
  const sd1 = parseUNetConfig({ attention_head_dim: 8, cross_attention_dim: 768 }, "c.json");
  assert.deepEqual(sd1.numAttentionHeads, [8, 8, 8, 8]);
  assert.deepEqual(sd1.blockOutChannels, [320, 640, 1280, 1280]);
  assert.equal(sd1.timeEmbedDim, 1280);
  // SD 2.x: attention_head_dim is a list that diffusers reads as the heads per block.
  const sd2 = parseUNetConfig({
    attention_head_dim: [5, 10, 20, 20],
    use_linear_projection: true,
    cross_attention_dim: 1024,
  });
  assert.deepEqual(sd2.numAttentionHeads, [5, 10, 20, 20]);
  assert.equal(sd2.useLinearProjection, true);
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ addition_embed_type: "text_time" }, /x\/config\.json: field 'addition_embed_type'/],
    [{ resnet_time_scale_shift: "scale_shift" }, /field 'resnet_time_scale_shift'/],
    [{ down_block_types: ["A", "B", "C", "D"] }, /field 'down_block_types\[0\]' = "A"/],
    [{ attention_head_dim: [8, 8] }, /field 'attention_head_dim'/],
    [{ only_cross_attention: true }, /field 'only_cross_attention'/],
    [{ class_embed_type: "timestep" }, /field 'class_embed_type'/],
    [{ conv_in_kernel: 4 }, /field 'conv_in_kernel'/],
  ];
  for (const [raw, re] of bad) assert.throws(() => parseUNetConfig(raw, "x/config.json"), re);
});

Deno.test("unet: SD 2.x-style config with linear projections builds and runs", async () => {
  await useBackend("wasm");
  const cfg = parseUNetConfig({
    block_out_channels: [32, 64],
    down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
    attention_head_dim: [2, 4],
    use_linear_projection: true,
    cross_attention_dim: 24,
    norm_num_groups: 8,
    layers_per_block: 1,
    sample_size: 8,
  });
  const unet = await UNet2DConditionModel.fromReader(cfg, new RandomWeightReader(1));
  const y = unet.forward(tf.ones([1, 8, 8, 4]), 500, tf.ones([1, 5, 24]));
  assert.deepEqual(y.shape, [1, 8, 8, 4]);
  assert.ok((await tf.all(tf.isFinite(y)).data())[0] === 1);
  assert.ok(unet.linearLayerNames().includes("down_blocks.0.attentions.0.proj_in"));
  unet.dispose();
});

/** Shape of every weight of the fixture's UNet checkpoint, from its header. */
async function weightShapes(): Promise<Map<string, number[]>> {
  const f = await SafetensorsFile.open(join(UNET_DIR, "diffusion_pytorch_model.safetensors"));
  const out = new Map(f.keys().map((k) => [k, f.info(k).shape]));
  f.close();
  return out;
}

async function tempUNet(edit: (tensors: Record<string, WritableTensor>) => void): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "unet_test_" });
  const src = await SafetensorsFile.open(join(UNET_DIR, "diffusion_pytorch_model.safetensors"));
  const tensors: Record<string, WritableTensor> = {};
  for (const k of src.keys()) {
    const h = await src.read(k);
    tensors[k] = { dtype: "F32", shape: h.shape, data: h.data };
  }
  src.close();
  edit(tensors);
  await Deno.writeFile(
    join(dir, "diffusion_pytorch_model.safetensors"),
    encodeSafetensors(tensors),
  );
  await Deno.copyFile(join(UNET_DIR, "config.json"), join(dir, "config.json"));
  return dir;
}

Deno.test("unet: missing and misshapen weights name file and key", async () => {
  await useBackend("wasm");
  // The last cross-attention key projection of the checkpoint, whatever its architecture.
  const shapes = await weightShapes();
  const key = [...shapes.keys()].filter((k) => k.endsWith("attn2.to_k.weight")).at(-1)!;
  const [o, i] = shapes.get(key)!;
  const missing = await tempUNet((t) => delete t[key]);
  await assert.rejects(
    () => UNet2DConditionModel.load(missing),
    (e: Error) => e.message.includes(missing) && e.message.includes(`missing weight '${key}'`),
  );
  const wrong = await tempUNet((t) => {
    t[key] = { dtype: "F32", shape: [o, i - 1], data: new Float32Array(o * (i - 1)) };
  });
  await assert.rejects(
    () => UNet2DConditionModel.load(wrong),
    (e: Error) =>
      e.message.includes(`'${key}' has shape [${o},${i - 1}], the config expects [${o},${i}]`),
  );
  await Deno.remove(missing, { recursive: true });
  await Deno.remove(wrong, { recursive: true });
});

// A synthetic rank-2 LoRA on three layers of the fixture's UNet (a down self-attention query, a
// mid cross-attention key, an up attention output), written in each supported layout.
const LORA_R = 2;

/** The LoRA's target modules with their [out, in], read from the checkpoint's header. */
async function loraTargets(): Promise<Record<string, [number, number]>> {
  const shapes = await weightShapes();
  const keys = [...shapes.keys()];
  const pick = (part: string, suffix: string) =>
    keys.find((k) => k.startsWith(part) && k.endsWith(suffix)) ??
      keys.find((k) => k.endsWith(suffix))!;
  const chosen = [
    pick("down_blocks.", "attn1.to_q.weight"),
    pick("mid_block.", "attn2.to_k.weight"),
    pick("up_blocks.", "attn1.to_out.0.weight"),
  ];
  assert.equal(new Set(chosen).size, 3, `three distinct LoRA targets: ${chosen}`);
  return Object.fromEntries(
    chosen.map((k) => [k.replace(/\.weight$/, ""), shapes.get(k) as [number, number]]),
  );
}

function loraTensors(
  layout: "peft" | "diffusers" | "processor" | "kohya",
  targets: Record<string, [number, number]>,
): Record<string, WritableTensor> {
  const out: Record<string, WritableTensor> = {};
  let seed = 1;
  const rnd = (n: number) =>
    Float32Array.from({ length: n }, () => Math.sin(seed++ * 12.9898) * 0.1);
  for (const [module, [o, i]] of Object.entries(targets)) {
    const down = { dtype: "F32" as const, shape: [LORA_R, i], data: rnd(LORA_R * i) };
    const up = { dtype: "F32" as const, shape: [o, LORA_R], data: rnd(o * LORA_R) };
    if (layout === "peft") {
      out[`unet.${module}.lora_A.weight`] = down;
      out[`unet.${module}.lora_B.weight`] = up;
    } else if (layout === "diffusers") {
      out[`unet.${module}.lora.down.weight`] = down;
      out[`unet.${module}.lora.up.weight`] = up;
    } else if (layout === "processor") {
      const m = module.replace(
        /\.(to_[qkv]|to_out\.0)$/,
        (_, p: string) => `.processor.${p === "to_out.0" ? "to_out" : p}_lora`,
      );
      out[`${m}.down.weight`] = down;
      out[`${m}.up.weight`] = up;
    } else {
      const k = `lora_unet_${module.replaceAll(".", "_")}`;
      out[`${k}.lora_down.weight`] = down;
      out[`${k}.lora_up.weight`] = up;
      // alpha = rank/2 halves the update; the test scales kohya by 2 to compensate.
      out[`${k}.alpha`] = { dtype: "F32", shape: [], data: [LORA_R / 2] };
    }
  }
  out["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight"] = {
    dtype: "F32",
    shape: [1, 4],
    data: [0, 0, 0, 0],
  };
  return out;
}

Deno.test("unet: LoRA in four layouts merges identically and unmerges", async () => {
  await useBackend("wasm");
  const unet = await UNet2DConditionModel.load(TINY_SD);
  const { sample, timesteps, states } = await inputs();
  const targets = await loraTargets();
  const base = await unet.forward(sample, timesteps, states).data();
  const dir = await Deno.makeTempDir({ prefix: "unet_lora_" });
  let ref: Float32Array | null = null;
  for (const layout of ["peft", "diffusers", "processor", "kohya"] as const) {
    const file = join(dir, `${layout}.safetensors`);
    await Deno.writeFile(file, encodeSafetensors(loraTensors(layout, targets)));
    const lora = await loadUNetLora(file);
    assert.equal(lora.pairs.size, Object.keys(targets).length, layout);
    assert.equal(lora.skipped.length, 1, "text-encoder keys are skipped");
    const scale = layout === "kohya" ? 1.5 : 0.75;
    const before = tf.memory().numTensors;
    assert.equal(unet.mergeLora(lora, scale), Object.keys(targets).length);
    assert.equal(tf.memory().numTensors, before, "merging replaces tensors without leaking");
    const merged = await unet.forward(sample, timesteps, states).data();
    if (!ref) {
      ref = merged as Float32Array;
      assert.ok(
        Math.abs(merged[0] - base[0]) + Math.abs(merged[100] - base[100]) > 1e-5,
        "LoRA changes the output",
      );
    } else {
      assertClose(merged, ref, 1e-5, `${layout} layout`);
    }
    unet.mergeLora(lora, -scale);
    assertClose(
      await unet.forward(sample, timesteps, states).data(),
      base,
      1e-5,
      `${layout} unmerge`,
    );
  }
  // The merged update of a layer is W + s·(B·A)ᵀ in the [in, out] layout.
  const peft = await loadUNetLora(join(dir, "peft.safetensors"));
  const registry = new Map(
    Object.entries(targets).map(([m, [o, i]]) => [m, { weight: tf.zeros([i, o]) as tf.Tensor2D }]),
  );
  mergeUNetLora(registry, peft, 0.5);
  const [q, [qOut, qIn]] = Object.entries(targets)[0];
  const pair = peft.pairs.get(q)!;
  const want = tf.matMul(
    tf.tensor2d(pair.up!.data as Float32Array, [qOut, LORA_R]),
    tf.tensor2d(pair.down!.data as Float32Array, [LORA_R, qIn]),
  ).transpose().mul(0.5);
  assertClose(await registry.get(q)!.weight.data(), await want.data(), 1e-6, "W + s·(BA)ᵀ");
  // A PEFT folder with adapter_config.json: alpha/r = 2 doubles the update of scale 0.375.
  const peftDir = join(dir, "peft_folder");
  await Deno.mkdir(peftDir);
  await Deno.copyFile(join(dir, "peft.safetensors"), join(peftDir, "adapter_model.safetensors"));
  await Deno.writeTextFile(
    join(peftDir, "adapter_config.json"),
    JSON.stringify({ r: LORA_R, lora_alpha: 2 * LORA_R }),
  );
  const folderLora = await loadUNetLora(peftDir);
  unet.mergeLora(folderLora, 0.375);
  assertClose(
    await unet.forward(sample, timesteps, states).data(),
    ref!,
    1e-5,
    "PEFT folder alpha",
  );
  unet.mergeLora(folderLora, -0.375);
  // A LoRA for a layer this UNet lacks (a block past its last) is an error naming the file and
  // the module.
  const absent = `down_blocks.${unet.config.blockOutChannels.length}.attentions.0.proj_in`;
  const badFile = join(dir, "bad.safetensors");
  await Deno.writeFile(
    badFile,
    encodeSafetensors({
      [`unet.${absent}.lora_A.weight`]: { dtype: "F32", shape: [1, 8], data: new Float32Array(8) },
      [`unet.${absent}.lora_B.weight`]: { dtype: "F32", shape: [8, 1], data: new Float32Array(8) },
    }),
  );
  const bad = await loadUNetLora(badFile);
  assert.throws(
    () => unet.mergeLora(bad),
    (e: Error) => e.message.includes(`bad.safetensors: LoRA targets '${absent}'`),
  );
  unet.dispose();
  await Deno.remove(dir, { recursive: true });
});
