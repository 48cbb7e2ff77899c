// PickScore on the CLIP towers proven against transformers (tests/fixtures/clip-tiny), and one
// shared CLIP for aesthetic, clip-score and pickscore through the run's model cache.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { useBackend } from "../../core/backend.ts";
import { ModelCache } from "../../core/model_cache.ts";
import { parsePluginOptions } from "../../core/plugin.ts";
import type { Reward } from "../../core/reward.ts";
import { builtinRegistry } from "../../builtin_plugins.ts";
import { ClipModel } from "../../adapters/clip/clip_vision_model.ts";
import { ClipImageProcessor } from "../../adapters/clip/clip_image_processor.ts";
import { ClipTokenizer } from "../../adapters/clip/clip_tokenizer.ts";
import {
  aestheticPlugin,
  clipScorePlugin,
  pickScorePlugin,
  pickScoreReward,
} from "../../rewards/mod.ts";
import { assertClose, fixture, golden, TINY_SD } from "../_helpers.ts";

const CLIP_DIR = fixture("clip-tiny", "clip");
// clip-tiny has no tokenizer; the tiny SD tokenizer has the same 713-token vocabulary.
const TOKENIZER = join(TINY_SD, "tokenizer");
const TOL = 1e-4;

async function goldenImages(): Promise<tf.Tensor4D> {
  const im = (await golden("clip-tiny")).get("in.images_uint8_hwc")!;
  return tf.tidy(() => tf.div(tf.tensor(im.data, im.shape, "float32"), 255) as tf.Tensor4D);
}

Deno.test("pickscore: exp(logit_scale) × cosine, or the plain cosine", async (t) => {
  const images = await goldenImages();
  const prompts = ["a photo of a cat", "a dog"];
  for (const backend of ["cpu", "wasm"] as const) {
    await t.step(backend, async () => {
      await useBackend(backend);
      const clip = await ClipModel.load(CLIP_DIR);
      const tok = await ClipTokenizer.load(TOKENIZER);
      const pixels = await (await ClipImageProcessor.load(CLIP_DIR)).preprocess(images);
      const ids = tf.tensor2d(tok.encodeBatch(prompts).inputIds, undefined, "int32");
      const out = clip.forward(pixels, ids);
      // PickScore's own code: logit_scale.exp() * (text_embs @ image_embs.T), per pair.
      const logits = (await out.logitsPerImage.array()) as number[][];
      const diag = logits.map((row, i) => row[i]);
      tf.dispose([pixels, ids, out.imageEmbeds, out.textEmbeds, out.logitsPerImage]);
      const r = await pickScoreReward({ model: CLIP_DIR, tokenizer: TOKENIZER });
      assert.equal(r.name, "pickscore");
      const err = assertClose(await r.score({ images, prompts }), diag, TOL, "pickscore");
      r.dispose?.();
      const rc = await pickScoreReward({ model: CLIP_DIR, tokenizer: TOKENIZER, output: "cosine" });
      const cos = await rc.score({ images, prompts });
      assertClose(cos, diag.map((v) => v / clip.logitScale), TOL, "pickscore cosine");
      assert.ok(cos.every((v) => Math.abs(v) <= 1));
      await assert.rejects(rc.score({ images, prompts: ["one"] }), /pickscore: 2 images but 1/);
      rc.dispose?.();
      console.log(
        `  ${backend}: pickscore ${err.toExponential(2)} (logit scale ${clip.logitScale})`,
      );
      clip.dispose();
    });
  }
  images.dispose();
});

Deno.test("aesthetic, clip-score and pickscore share one CLIP per run", async () => {
  await useBackend("cpu");
  const registry = builtinRegistry();
  assert.equal(registry.get("reward", "pickscore"), pickScorePlugin);
  const models = new ModelCache();
  const context = { baseDir: fixture("clip-tiny"), models };
  const before = tf.memory().numTensors;
  const make = async (
    plugin: typeof pickScorePlugin | typeof aestheticPlugin | typeof clipScorePlugin,
    o: unknown,
  ) =>
    await plugin.create(
      parsePluginOptions(plugin as never, o, "rewards[0].options") as never,
      context,
    ) as Reward;
  const tokenizer = "../sd-tiny/tiny-sd/tokenizer";
  const rewards = [
    await make(aestheticPlugin, { clipModel: "clip", head: "aesthetic_mlp.safetensors" }),
    await make(clipScorePlugin, { clipModel: "clip", tokenizer }),
    await make(pickScorePlugin, { model: "./clip", tokenizer }),
  ];
  assert.equal(models.loads, 1, "one CLIP load for three rewards");
  assert.deepEqual(models.keys(), [`clip-model:${CLIP_DIR}`]);
  const images = await goldenImages();
  for (const r of rewards) assert.equal((await r.score({ images, prompts: ["a", "b"] })).length, 2);
  images.dispose();
  rewards[0].dispose?.();
  rewards[1].dispose?.();
  // Still held by pickscore.
  assert.equal(models.keys().length, 1);
  const black = tf.zeros([1, 32, 32, 3]) as tf.Tensor4D;
  assert.equal((await rewards[2].score({ images: black, prompts: ["x"] })).length, 1);
  black.dispose();
  rewards[2].dispose?.();
  assert.deepEqual(models.keys(), []);
  assert.equal(tf.memory().numTensors, before, "the shared CLIP is freed with its last user");
});
