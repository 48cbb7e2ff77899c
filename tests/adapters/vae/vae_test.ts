import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { useBackend } from "../../../core/backend.ts";
import {
  encodeSafetensors,
  SafetensorsFile,
  type WritableTensor,
} from "../../../core/io/safetensors.ts";
import { parseVaeConfig, VaeDecoder } from "../../../adapters/vae/vae_decoder.ts";
import { setWasmKernels } from "../../../adapters/wasm/kernel_options.ts";
import {
  assertClose,
  availableBackends,
  checkDirectionalDerivative,
  fixtureJson,
  golden,
  nchwToNhwc,
  TINY_SD,
} from "../../_helpers.ts";

// Lavapipe's WebGPU: see unet_test.ts.
const TOL: Record<string, number> = { cpu: 1e-4, wasm: 1e-4, webgpu: 1e-3 };
const VAE_DIR = join(TINY_SD, "vae");

/** The fixture's raw `vae/config.json`. */
const rawConfig = () => fixtureJson("sd-tiny", "tiny-sd", "vae", "config.json");

/** A random latent [1, side, side, latent_channels] for the fixture's VAE. */
async function randomLatent(side: number, seed: number): Promise<tf.Tensor4D> {
  const c = (await rawConfig()).latent_channels as number;
  return tf.randomNormal([1, side, side, c], 0, 1, "float32", seed);
}

Deno.test("vae: decoder matches diffusers", async (t) => {
  const g = await golden("sd-tiny");
  const cfg = await rawConfig();
  const latent = g.get("vae.in.latents")!;
  const decoded = g.get("vae.decoded")!;
  // NCHW shapes of the golden pair: one 2× upsampler per level but the last.
  const factor = 2 ** ((cfg.block_out_channels as number[]).length - 1);
  assert.deepEqual(
    [decoded.shape[0], decoded.shape[2], decoded.shape[3]],
    [latent.shape[0], latent.shape[2] * factor, latent.shape[3] * factor],
    "golden shapes agree with vae/config.json's block_out_channels",
  );
  assert.equal(latent.shape[1], cfg.latent_channels);
  assert.equal(decoded.shape[1], cfg.out_channels);
  for (const backend of await availableBackends()) {
    await t.step(backend, async () => {
      await useBackend(backend as "cpu");
      const vae = await VaeDecoder.load(TINY_SD);
      assert.equal(vae.upscale, factor);
      const z = nchwToNhwc(latent);
      const raw = vae.decodeRaw(z);
      const [b, c, h, w] = decoded.shape;
      assert.deepEqual(raw.shape, [b, h, w, c]);
      const want = g.get("vae.decoded")!.data;
      const err = assertClose(
        await raw.transpose([0, 3, 1, 2]).data(),
        want,
        TOL[backend],
        `vae ${backend}`,
      );
      console.log(`${backend}: max rel err ${err.toExponential(2)}`);
      // decode = clamp(raw / 2 + 0.5, 0, 1), the pipeline's image.
      const img = vae.decode(z);
      const expect = tf.clipByValue(tf.add(tf.mul(raw, 0.5), 0.5), 0, 1);
      assertClose(await img.data(), await expect.data(), 1e-6, "decode");
      tf.dispose([z, raw, img, expect]);
      vae.dispose();
    });
  }
});

Deno.test("vae: differentiable, no leaks", async () => {
  await useBackend("wasm");
  const vae = await VaeDecoder.load(VAE_DIR);
  const z = await randomLatent(8, 1);
  const before = tf.memory().numTensors;
  vae.decode(z).dispose();
  assert.equal(tf.memory().numTensors, before);
  const loss = (x: tf.Tensor) => vae.decodeRaw(x as tf.Tensor4D).square().mean();
  const g = tf.grad(loss)(z);
  const s = tf.tidy(() => g.abs().sum().dataSync()[0]);
  assert.ok(Number.isFinite(s) && s > 0);
  const fd = checkDirectionalDerivative(
    (x) => tf.tidy(() => loss(x).dataSync()[0]),
    z,
    g,
    "d/d latents",
  );
  console.log(
    `d/d latents along the gradient ${fd.analytic.toExponential(3)}: finite-difference errors ${
      fd.errors.map((e) => e.toExponential(1)).join(", ")
    }`,
  );
  tf.dispose([g]);
  assert.equal(tf.memory().numTensors, before, "the gradient and its checks leave no tensors");
  z.dispose();
  vae.dispose();
});

Deno.test("vae: the fused wasm ResNet blocks change no bit of the image or the gradient", async () => {
  await useBackend("wasm");
  const vae = await VaeDecoder.load(VAE_DIR);
  const z = await randomLatent(8, 1);
  const run = async (on: boolean) => {
    const before = setWasmKernels({ fusedResnetBlock: on });
    const profile = await tf.profile(() => vae.decodeRaw(z).dispose());
    const n0 = tf.memory().numTensors;
    const y = vae.decodeRaw(z);
    const g = tf.grad((x: tf.Tensor) => vae.decodeRaw(x as tf.Tensor4D).square().mean())(z);
    const out = [await y.data(), await g.data()];
    tf.dispose([y, g]);
    assert.equal(tf.memory().numTensors, n0, `fused ${on}: no tensors left behind`);
    setWasmKernels(before);
    return { out, fused: profile.kernelNames.includes("TexforceWasmResnetBlock") };
  };
  const fused = await run(true);
  const stock = await run(false);
  assert.ok(fused.fused && !stock.fused, "the fused block runs only when switched on");
  assert.deepEqual(fused.out[0], stock.out[0], "image: bitwise the same");
  assert.deepEqual(fused.out[1], stock.out[1], "d/d latents: bitwise the same");
  z.dispose();
  vae.dispose();
});

Deno.test("vae: latents are divided by the config's scaling_factor (and shifted)", async () => {
  await useBackend("wasm");
  const raw = await rawConfig();
  const vae = await VaeDecoder.load(VAE_DIR);
  assert.equal(vae.config.scalingFactor, raw.scaling_factor ?? 0.18215);
  assert.equal(vae.config.shiftFactor, raw.shift_factor ?? 0);
  assert.equal(vae.config.latentChannels, raw.latent_channels);
  // The same weights with the scaling factor doubled and a shift: decoding k·(z − shift)
  // must give what decoding z gives with the original config.
  const dir = await Deno.makeTempDir({ prefix: "vae_scale_" });
  const k = 2;
  const shift = 0.25;
  const sf = vae.config.scalingFactor;
  await Deno.writeTextFile(
    join(dir, "config.json"),
    JSON.stringify({ ...raw, scaling_factor: sf * k, shift_factor: shift }),
  );
  await Deno.symlink(
    join(VAE_DIR, "diffusion_pytorch_model.safetensors"),
    join(dir, "diffusion_pytorch_model.safetensors"),
  );
  const scaled = await VaeDecoder.load(dir);
  const z = await randomLatent(8, 2);
  // z / sf + shift0 = k·z' / (k·sf) + shift  ⇔  z' = z − sf·(shift − shift0).
  const z2 = tf.tidy(() => tf.mul(tf.sub(z, sf * (shift - vae.config.shiftFactor)), k));
  const err = assertClose(
    await scaled.decodeRaw(z2 as tf.Tensor4D).data(),
    await vae.decodeRaw(z).data(),
    1e-5,
    "scaling_factor and shift_factor",
  );
  console.log(`rescaled config: max rel err ${err.toExponential(2)}`);
  tf.dispose([z, z2]);
  vae.dispose();
  scaled.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("vae: legacy attention key names (query/key/value/proj_attn)", async () => {
  await useBackend("wasm");
  const dir = await Deno.makeTempDir({ prefix: "vae_test_" });
  const src = await SafetensorsFile.open(join(VAE_DIR, "diffusion_pytorch_model.safetensors"));
  const tensors: Record<string, WritableTensor> = {};
  const rename: Record<string, string> = {
    to_q: "query",
    to_k: "key",
    to_v: "value",
    "to_out.0": "proj_attn",
  };
  for (const k of src.keys()) {
    const h = await src.read(k);
    const nk = k.replace(
      /\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\./,
      (_, p) => `.attentions.0.${rename[p]}.`,
    );
    tensors[nk] = { dtype: "F32", shape: h.shape, data: h.data };
  }
  src.close();
  // Only a mid block with attention has such keys (mid_block_add_attention, default true).
  const hasAttention = (await rawConfig()).mid_block_add_attention !== false;
  assert.equal("decoder.mid_block.attentions.0.proj_attn.weight" in tensors, hasAttention);
  await Deno.writeFile(
    join(dir, "diffusion_pytorch_model.safetensors"),
    encodeSafetensors(tensors),
  );
  await Deno.copyFile(join(VAE_DIR, "config.json"), join(dir, "config.json"));
  const a = await VaeDecoder.load(VAE_DIR);
  const b = await VaeDecoder.load(dir);
  const z = await randomLatent(8, 3);
  assertClose(await b.decodeRaw(z).data(), await a.decodeRaw(z).data(), 1e-6, "legacy keys");
  a.dispose();
  b.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("vae: unsupported config values name file and field", () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ _class_name: "AutoencoderTiny" }, /v\/config\.json: field '_class_name'/],
    [
      {
        block_out_channels: [32, 64],
        up_block_types: ["UpDecoderBlock2D", "AttnUpDecoderBlock2D"],
      },
      /field 'up_block_types\[1\]'/,
    ],
    [{ latents_mean: [0, 0, 0, 0] }, /field 'latents_mean'/],
    [{ act_fn: "gelu" }, /field 'act_fn'/],
    [{ scaling_factor: -1 }, /field 'scaling_factor'/],
  ];
  for (const [raw, re] of bad) assert.throws(() => parseVaeConfig(raw, "v/config.json"), re);
  assert.equal(parseVaeConfig({ scaling_factor: 0.13025 }).scalingFactor, 0.13025);
});
