// CLIP vision tower, whole CLIPModel and CLIPImageProcessor against transformers' outputs
// (tests/fixtures/clip-tiny).
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { type BackendName, useBackend } from "../../../core/backend.ts";
import { ClipModel, ClipVisionModel } from "../../../adapters/clip/clip_vision_model.ts";
import { ClipImageProcessor, pilResize } from "../../../adapters/clip/clip_image_processor.ts";
import {
  assertCloseToScale as assertClose,
  fixture,
  fixtureJson,
  golden,
  nchwToNhwc,
  relativeError,
} from "../../_helpers.ts";

const CLIP_DIR = fixture("clip-tiny", "clip");
/** The fixture's vision config: token count and width come from it. */
const VISION = (await fixtureJson<{
  vision_config: { image_size: number; patch_size: number; hidden_size: number };
}>("clip-tiny", "clip", "config.json")).vision_config;

/** fp32 parity: max |Δ| / max(1, max |expected|). */
const TOL = 1e-4;
/**
 * The processor is compared in normalised units. One 8-bit level is ≈ 0.0146 there; a few
 * pixels of the golden differ by one level from this Pillow port (rounding of the fixed-point
 * passes), so the bound allows a few levels.
 */
const PROCESSOR_TOL = 0.05;
// ClipTextModel's pooled output reads ids synchronously, which tfjs-webgpu cannot in Deno.
const BACKENDS: BackendName[] = ["cpu", "wasm"];

async function hostData(t: tf.Tensor): Promise<Float32Array> {
  return (await t.data()) as Float32Array;
}

Deno.test("ClipModel matches transformers' CLIPModel", async (t) => {
  const g = await golden("clip-tiny");
  const want = (k: string) => g.get(k)!.data as Float32Array;
  for (const backend of BACKENDS) {
    await t.step(backend, async () => {
      await useBackend(backend);
      const clip = await ClipModel.load(CLIP_DIR);
      const pixels = nchwToNhwc(g.get("in.pixel_values")!);
      const idsHost = g.get("in.input_ids")!;
      const ids = tf.tensor2d(
        Int32Array.from(idsHost.data as ArrayLike<number>),
        idsHost.shape as [number, number],
        "int32",
      );
      const errors: Record<string, number> = {};
      const check = async (k: string, actual: tf.Tensor) => {
        errors[k] = assertClose(await hostData(actual), want(k), TOL, `${backend} ${k}`);
        actual.dispose();
      };
      const v = clip.vision.forward(pixels);
      const tokens = (VISION.image_size / VISION.patch_size) ** 2 + 1;
      assert.deepEqual(v.lastHiddenState.shape, [pixels.shape[0], tokens, VISION.hidden_size]);
      await check("vision.last_hidden_state", v.lastHiddenState);
      await check("vision.pooler_output", v.pooledOutput);
      await check("clip.image_features_unnormalized", clip.imageFeatures(pixels));
      const out = clip.forward(pixels, ids);
      await check("clip.image_embeds", out.imageEmbeds);
      await check("clip.text_embeds", out.textEmbeds);
      await check("clip.logits_per_image", out.logitsPerImage);
      console.log(`  ${backend}: ${JSON.stringify(errors)}`);
      pixels.dispose();
      ids.dispose();
      clip.dispose();
    });
  }
});

Deno.test("ClipImageProcessor matches CLIPImageProcessor (PIL bicubic)", async () => {
  const g = await golden("clip-tiny");
  const images = g.get("in.images_uint8_hwc")!;
  const processor = await ClipImageProcessor.load(CLIP_DIR);
  assert.deepEqual(processor.outputSize(images.shape[1], images.shape[2]), [
    VISION.image_size,
    VISION.image_size,
  ]);
  const pixels = processor.preprocessUint8(
    Uint8Array.from(images.data as Int32Array),
    images.shape as [number, number, number, number],
  );
  const expected = nchwToNhwc(g.get("processor.pixel_values")!);
  const err = assertClose(
    await hostData(pixels),
    await hostData(expected),
    PROCESSOR_TOL,
    "processor.pixel_values",
  );
  console.log(`  processor.pixel_values: ${err.toExponential(3)} (bound ${PROCESSOR_TOL})`);
  // Float input in [0, 1] quantises back to the same bytes.
  const float = tf.tidy(() =>
    tf.div(tf.tensor(images.data, images.shape, "float32"), 255) as tf.Tensor4D
  );
  const again = await processor.preprocess(float);
  assert.deepEqual(await again.data(), await pixels.data());
  tf.dispose([pixels, expected, float, again]);
});

Deno.test("the vision tower computes the activation its config names", async () => {
  // The fixture's tower uses one activation; the same weights under another must give another
  // output, so a tower that ignored hidden_act (or mapped gelu to quick_gelu) fails here.
  await useBackend("cpu");
  const g = await golden("clip-tiny");
  const config = JSON.parse(await Deno.readTextFile(join(CLIP_DIR, "config.json")));
  const outputs: Float32Array[] = [];
  for (const act of ["quick_gelu", "gelu"]) {
    const dir = await Deno.makeTempDir();
    try {
      config.vision_config.hidden_act = act;
      await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
      await Deno.copyFile(join(CLIP_DIR, "model.safetensors"), join(dir, "model.safetensors"));
      const vision = await ClipVisionModel.load(dir);
      const pixels = nchwToNhwc(g.get("in.pixel_values")!);
      const out = vision.forward(pixels);
      outputs.push(await hostData(out.lastHiddenState));
      tf.dispose([pixels, out.lastHiddenState, out.pooledOutput]);
      vision.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  const diff = relativeError(outputs[0], outputs[1]);
  assert.ok(diff > 1e-3, `quick_gelu and gelu towers differ by only ${diff}`);
});

Deno.test("pilResize keeps constants constant and copies when sizes match", () => {
  const src = new Uint8Array(6 * 5 * 3).fill(200);
  assert.ok(pilResize(src, 6, 5, 3, 4, 3, 3).every((v) => v === 200));
  assert.ok(pilResize(src, 6, 5, 3, 9, 8, 2).every((v) => v === 200));
  const same = pilResize(src, 6, 5, 3, 6, 5, 3);
  assert.deepEqual(same, src);
  assert.notEqual(same, src);
});

Deno.test("CLIP vision loading errors name the file", async (t) => {
  await useBackend("cpu");
  await t.step("missing folder", async () => {
    await assert.rejects(ClipModel.load("/nonexistent/clip"), /\/nonexistent\/clip\/config\.json/);
    await assert.rejects(
      ClipImageProcessor.load("/nonexistent/clip"),
      /\/nonexistent\/clip\/preprocessor_config\.json/,
    );
  });
  await t.step("a text-only config is not a CLIPModel", async () => {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ hidden_size: 32 }));
      await assert.rejects(ClipModel.load(dir), /config\.json: not a CLIPModel config/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
  await t.step("config and weights disagree", async () => {
    const dir = await Deno.makeTempDir();
    try {
      const config = JSON.parse(await Deno.readTextFile(join(CLIP_DIR, "config.json")));
      config.vision_config.hidden_size = 64;
      config.vision_config.num_attention_heads = 4;
      await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
      await Deno.copyFile(join(CLIP_DIR, "model.safetensors"), join(dir, "model.safetensors"));
      await assert.rejects(ClipVisionModel.load(dir), /model\.safetensors: weight .* has shape/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});
