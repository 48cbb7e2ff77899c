// The aesthetic and clip-score rewards: head parity with the golden, the factories and plugins
// on the tiny CLIP fixture, and errors that name missing files.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { type BackendName, useBackend } from "../../core/backend.ts";
import { builtinRegistry } from "../../builtin_plugins.ts";
import { parsePluginOptions } from "../../core/plugin.ts";
import type { Reward } from "../../core/reward.ts";
import { ClipModel, l2Normalize } from "../../adapters/clip/clip_vision_model.ts";
import { ClipImageProcessor } from "../../adapters/clip/clip_image_processor.ts";
import { ClipTokenizer } from "../../adapters/clip/clip_tokenizer.ts";
import { linear } from "../../adapters/nn/linear.ts";
import {
  aestheticPlugin,
  aestheticReward,
  clipScorePlugin,
  clipScoreReward,
  loadAestheticHead,
} from "../../rewards/mod.ts";
import {
  assertClose,
  assertCloseToScale,
  fixture,
  golden,
  nchwToNhwc,
  TINY_SD,
} from "../_helpers.ts";

const CLIP_DIR = fixture("clip-tiny", "clip");
const HEAD = fixture("clip-tiny", "aesthetic_mlp.safetensors");
// The clip-tiny folder has no tokenizer; the tiny SD tokenizer has the same vocabulary.
const TOKENIZER = join(TINY_SD, "tokenizer");
const TOL = 1e-4;
const BACKENDS: BackendName[] = ["cpu", "wasm"];

/** The golden's 8-bit images as floats in [0, 1], the reward's input. */
async function goldenImages(): Promise<tf.Tensor4D> {
  const im = (await golden("clip-tiny")).get("in.images_uint8_hwc")!;
  return tf.tidy(() => tf.div(tf.tensor(im.data, im.shape, "float32"), 255) as tf.Tensor4D);
}

Deno.test("aesthetic head matches the golden score", async (t) => {
  const g = await golden("clip-tiny");
  for (const backend of BACKENDS) {
    await t.step(backend, async () => {
      await useBackend(backend);
      const clip = await ClipModel.load(CLIP_DIR);
      const head = await loadAestheticHead(HEAD, clip.projectionDim);
      const pixels = nchwToNhwc(g.get("in.pixel_values")!);
      const score = tf.tidy(() => {
        let x: tf.Tensor = l2Normalize(clip.imageFeatures(pixels));
        for (const l of head) x = linear(x, l);
        return x.reshape([-1]);
      });
      // Scores are ~1e-2: the bound is relative to their own size too.
      const err = assertCloseToScale(
        await score.data(),
        g.get("aesthetic.score")!.data as Float32Array,
        TOL,
        `${backend} aesthetic.score`,
      );
      console.log(`  ${backend}: aesthetic.score ${err.toExponential(3)}`);
      tf.dispose([score, pixels, ...head.flatMap((l) => [l.weight, l.bias!])]);
      clip.dispose();
    });
  }
});

Deno.test("aesthetic reward through its factory and plugin", async (t) => {
  await useBackend("cpu");
  const images = await goldenImages();
  // Reference: the same steps by hand (processor, CLIP, normalise, head).
  const clip = await ClipModel.load(CLIP_DIR);
  const head = await loadAestheticHead(HEAD, clip.projectionDim);
  const processor = await ClipImageProcessor.load(CLIP_DIR);
  const pixels = await processor.preprocess(images);
  const expected = tf.tidy(() => {
    let x: tf.Tensor = l2Normalize(clip.imageFeatures(pixels));
    for (const l of head) x = linear(x, l);
    return x.reshape([-1]);
  });
  const want = Array.from(await expected.data());
  tf.dispose([expected, pixels, ...head.flatMap((l) => [l.weight, l.bias!])]);
  clip.dispose();

  await t.step("factory", async () => {
    const r = await aestheticReward({ clipModel: CLIP_DIR, head: HEAD });
    assert.equal(r.name, "aesthetic");
    const got = await r.score({ images, prompts: ["a", "b"] });
    assert.equal(got.length, 2);
    assertClose(got, want, 1e-6, "aesthetic reward");
    r.dispose?.();
  });
  await t.step("plugin, paths relative to baseDir", async () => {
    const plugin = builtinRegistry().get("reward", "aesthetic");
    assert.equal(plugin, aestheticPlugin);
    const options = parsePluginOptions(
      aestheticPlugin,
      { clipModel: "clip", head: "aesthetic_mlp.safetensors" },
      "rewards[0].options",
    );
    const r = await aestheticPlugin.create(options, { baseDir: fixture("clip-tiny") }) as Reward;
    assertClose(await r.score({ images, prompts: ["a", "b"] }), want, 1e-6, "aesthetic plugin");
    r.dispose?.();
    assert.throws(
      () => parsePluginOptions(aestheticPlugin, { clipModel: "clip" }, "rewards[0].options"),
      /head/,
    );
  });
  await t.step("bad paths name the file", async () => {
    await assert.rejects(
      aestheticReward({ clipModel: "/nonexistent/clip", head: HEAD }),
      /aesthetic: .*\/nonexistent\/clip\/preprocessor_config\.json/,
    );
    await assert.rejects(
      aestheticReward({ clipModel: CLIP_DIR, head: "/nonexistent/head.safetensors" }),
      /aesthetic: .*\/nonexistent\/head\.safetensors/,
    );
    // A CLIP checkpoint is not an aesthetic head.
    await assert.rejects(
      aestheticReward({ clipModel: CLIP_DIR, head: join(CLIP_DIR, "model.safetensors") }),
      /model\.safetensors: missing weight 'layers\.0\.weight'/,
    );
  });
  await t.step("rejects non-RGB batches", async () => {
    const r = await aestheticReward({ clipModel: CLIP_DIR, head: HEAD });
    const gray = tf.zeros([1, 8, 8, 1]) as tf.Tensor4D;
    await assert.rejects(r.score({ images: gray, prompts: ["a"] }), /aesthetic: expected images/);
    gray.dispose();
    r.dispose?.();
  });
  images.dispose();
});

Deno.test("clip-score reward: scale · cosine per image and prompt", async (t) => {
  const images = await goldenImages();
  const prompts = ["a photo of a cat", "a dog"];
  for (const backend of BACKENDS) {
    await t.step(backend, async () => {
      await useBackend(backend);
      const clip = await ClipModel.load(CLIP_DIR);
      const tok = await ClipTokenizer.load(TOKENIZER);
      const processor = await ClipImageProcessor.load(CLIP_DIR);
      const pixels = await processor.preprocess(images);
      const ids = tf.tensor2d(
        tok.encodeBatch(prompts, { maxLength: 77 }).inputIds,
        undefined,
        "int32",
      );
      const out = clip.forward(pixels, ids);
      // The diagonal of logits_per_image is exp(logit_scale) · cos(image i, prompt i).
      const logits = (await out.logitsPerImage.array()) as number[][];
      const diag = logits.map((row, i) => row[i]);
      tf.dispose([pixels, ids, out.imageEmbeds, out.textEmbeds, out.logitsPerImage]);

      const r100 = await clipScoreReward({ clipModel: CLIP_DIR, tokenizer: TOKENIZER });
      assert.equal(r100.name, "clip-score");
      const got100 = await r100.score({ images, prompts });
      assertClose(got100, diag.map((v) => v * 100 / clip.logitScale), TOL, "clip-score ×100");
      r100.dispose?.();

      const rLogit = await clipScoreReward({
        clipModel: CLIP_DIR,
        tokenizer: TOKENIZER,
        scale: "logit_scale",
      });
      assertClose(await rLogit.score({ images, prompts }), diag, TOL, "clip-score ×logit_scale");
      await assert.rejects(rLogit.score({ images, prompts: ["one"] }), /2 images but 1 prompts/);
      rLogit.dispose?.();
      clip.dispose();
    });
  }
  await t.step("plugin and bad paths", async () => {
    await useBackend("cpu");
    assert.equal(builtinRegistry().get("reward", "clip-score"), clipScorePlugin);
    const options = parsePluginOptions(
      clipScorePlugin,
      { clipModel: "clip", tokenizer: "../sd-tiny/tiny-sd/tokenizer" },
      "rewards[0].options",
    );
    assert.equal(options.scale, 100);
    const r = await clipScorePlugin.create(options, { baseDir: fixture("clip-tiny") }) as Reward;
    assert.equal((await r.score({ images, prompts })).length, 2);
    r.dispose?.();
    // No tokenizer option: the CLIP folder itself must hold vocab.json.
    await assert.rejects(
      clipScoreReward({ clipModel: CLIP_DIR }),
      /clip-score: .*clip-tiny\/clip\/vocab\.json: file not found/,
    );
    await assert.rejects(
      clipScoreReward({ clipModel: "/nonexistent/clip", tokenizer: TOKENIZER }),
      /clip-score: .*\/nonexistent\/clip\/preprocessor_config\.json/,
    );
  });
  images.dispose();
});
