import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { useBackend } from "../core/backend.ts";
import { encodeSafetensors, SafetensorsFile, type WritableTensor } from "../core/io/safetensors.ts";
import { parseVaeConfig, VaeDecoder } from "../adapters/vae_decoder.ts";
import { assertClose, availableBackends, golden, nchwToNhwc, TINY_SD } from "./_helpers.ts";

// Lavapipe's WebGPU: see unet_test.ts.
const TOL: Record<string, number> = { cpu: 1e-4, wasm: 1e-4, webgpu: 1e-3 };
const VAE_DIR = join(TINY_SD, "vae");

Deno.test("vae: decoder matches diffusers", async (t) => {
  const g = await golden("sd-tiny");
  for (const backend of await availableBackends()) {
    await t.step(backend, async () => {
      await useBackend(backend as "cpu");
      const vae = await VaeDecoder.load(TINY_SD);
      assert.equal(vae.upscale, 2);
      const z = nchwToNhwc(g.get("vae.in.latents")!);
      const raw = vae.decodeRaw(z);
      assert.deepEqual(raw.shape, [2, 32, 32, 3]);
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
  const z = tf.randomNormal([1, 8, 8, 4]) as tf.Tensor4D;
  const before = tf.memory().numTensors;
  vae.decode(z).dispose();
  assert.equal(tf.memory().numTensors, before);
  const g = tf.grad((x: tf.Tensor) => vae.decodeRaw(x as tf.Tensor4D).mean())(z);
  const s = (await g.abs().sum().data())[0];
  assert.ok(Number.isFinite(s) && s > 0);
  tf.dispose([z, g]);
  vae.dispose();
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
  assert.ok("decoder.mid_block.attentions.0.proj_attn.weight" in tensors);
  await Deno.writeFile(
    join(dir, "diffusion_pytorch_model.safetensors"),
    encodeSafetensors(tensors),
  );
  await Deno.copyFile(join(VAE_DIR, "config.json"), join(dir, "config.json"));
  const a = await VaeDecoder.load(VAE_DIR);
  const b = await VaeDecoder.load(dir);
  const z = tf.randomNormal([1, 8, 8, 4]) as tf.Tensor4D;
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
