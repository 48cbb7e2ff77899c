import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { useBackend } from "../core/backend.ts";
import { encodeSafetensors, SafetensorsFile, type WritableTensor } from "../core/io/safetensors.ts";
import {
  loadUNetLora,
  parseUNetConfig,
  UNet2DConditionModel,
} from "../adapters/unet_2d_condition.ts";
import { RandomWeightReader } from "../adapters/unet/random_weight_reader.ts";
import { mergeUNetLora } from "../adapters/unet/unet_lora.ts";
import { assertClose, availableBackends, golden, nchwToNhwc, TINY_SD } from "./_helpers.ts";

// Lavapipe's WebGPU reorders sums (tiled matmuls/convs) and its exp/erf differ by a few ulp;
// through ~40 layers that stays below 1e-3 relative.
const TOL: Record<string, number> = { cpu: 1e-4, wasm: 1e-4, webgpu: 1e-3 };
const UNET_DIR = join(TINY_SD, "unet");

async function inputs() {
  const g = await golden("sd-tiny");
  const ehs = g.get("unet.in.encoder_hidden_states")!;
  return {
    sample: nchwToNhwc(g.get("unet.in.sample")!),
    timesteps: Array.from(g.get("unet.in.timesteps")!.data),
    states: tf.tensor3d(ehs.data as Float32Array, ehs.shape as [number, number, number]),
    want: g.get("unet.noise_pred")!.data,
  };
}

Deno.test("unet: forward matches diffusers", async (t) => {
  for (const backend of await availableBackends()) {
    await t.step(backend, async () => {
      await useBackend(backend as "cpu");
      const unet = await UNet2DConditionModel.load(TINY_SD);
      assert.deepEqual(unet.unusedWeights, [], "every checkpoint weight is used");
      const { sample, timesteps, states, want } = await inputs();
      const t0 = performance.now();
      const y = unet.forward(sample, timesteps, states);
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
  // A finite difference along the gradient agrees with it.
  const h = 1e-2;
  const dir = tf.div(grad, tf.norm(grad));
  const f = (s: tf.Tensor3D) => unet.forward(sample, timesteps, s).square().mean().dataSync()[0];
  const fd = (f(tf.add(states, tf.mul(dir, h)) as tf.Tensor3D) -
    f(tf.sub(states, tf.mul(dir, h)) as tf.Tensor3D)) / (2 * h);
  const analytic = tf.sum(tf.mul(grad, dir)).dataSync()[0];
  assert.ok(Math.abs(fd - analytic) <= 2e-2 * Math.abs(analytic), `fd ${fd} vs ${analytic}`);
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
  const key = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
  const missing = await tempUNet((t) => delete t[key]);
  await assert.rejects(
    () => UNet2DConditionModel.load(missing),
    (e: Error) => e.message.includes(missing) && e.message.includes(`missing weight '${key}'`),
  );
  const wrong = await tempUNet((t) => {
    t[key] = { dtype: "F32", shape: [64, 31], data: new Float32Array(64 * 31) };
  });
  await assert.rejects(
    () => UNet2DConditionModel.load(wrong),
    /has shape \[64,31\], the config expects \[64,32\]/,
  );
  await Deno.remove(missing, { recursive: true });
  await Deno.remove(wrong, { recursive: true });
});

// A synthetic rank-2 LoRA on two layers of the tiny UNet, written in each supported layout.
const LORA_R = 2;
const TARGETS = {
  "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": [32, 32],
  "mid_block.attentions.0.transformer_blocks.0.attn2.to_k": [64, 32],
  "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0": [64, 64],
} as Record<string, [number, number]>;

function loraTensors(
  layout: "peft" | "diffusers" | "processor" | "kohya",
): Record<string, WritableTensor> {
  const out: Record<string, WritableTensor> = {};
  let seed = 1;
  const rnd = (n: number) =>
    Float32Array.from({ length: n }, () => Math.sin(seed++ * 12.9898) * 0.1);
  for (const [module, [o, i]] of Object.entries(TARGETS)) {
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
  const base = await unet.forward(sample, timesteps, states).data();
  const dir = await Deno.makeTempDir({ prefix: "unet_lora_" });
  let ref: Float32Array | null = null;
  for (const layout of ["peft", "diffusers", "processor", "kohya"] as const) {
    const file = join(dir, `${layout}.safetensors`);
    await Deno.writeFile(file, encodeSafetensors(loraTensors(layout)));
    const lora = await loadUNetLora(file);
    assert.equal(lora.pairs.size, 3, layout);
    assert.equal(lora.skipped.length, 1, "text-encoder keys are skipped");
    const scale = layout === "kohya" ? 1.5 : 0.75;
    const before = tf.memory().numTensors;
    assert.equal(unet.mergeLora(lora, scale), 3);
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
    Object.entries(TARGETS).map(([m, [o, i]]) => [m, { weight: tf.zeros([i, o]) as tf.Tensor2D }]),
  );
  mergeUNetLora(registry, peft, 0.5);
  const q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
  const pair = peft.pairs.get(q)!;
  const want = tf.matMul(
    tf.tensor2d(pair.up!.data as Float32Array, [32, LORA_R]),
    tf.tensor2d(pair.down!.data as Float32Array, [LORA_R, 32]),
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
  // A LoRA for a layer this UNet lacks is an error naming the file and module.
  const badFile = join(dir, "bad.safetensors");
  await Deno.writeFile(
    badFile,
    encodeSafetensors({
      "unet.down_blocks.9.attentions.0.proj_in.lora_A.weight": {
        dtype: "F32",
        shape: [1, 32],
        data: new Float32Array(32),
      },
      "unet.down_blocks.9.attentions.0.proj_in.lora_B.weight": {
        dtype: "F32",
        shape: [32, 1],
        data: new Float32Array(32),
      },
    }),
  );
  const bad = await loadUNetLora(badFile);
  assert.throws(
    () => unet.mergeLora(bad),
    /bad\.safetensors: LoRA targets 'down_blocks\.9\.attentions\.0\.proj_in'/,
  );
  unet.dispose();
  await Deno.remove(dir, { recursive: true });
});
