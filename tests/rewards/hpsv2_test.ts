// HPSv2 against HPSv2's own code (tests/fixtures/hpsv2-tiny, or $TEXFORCE_FIXTURES/hpsv2-tiny):
// open_clip tokenizer, open_clip → CLIP key mapping, HPSv2's resize-and-pad transform, score.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { useBackend } from "../../core/backend.ts";
import { l2Normalize } from "../../adapters/clip/clip_vision_model.ts";
import { loadOpenClip } from "../../adapters/clip/open_clip.ts";
import { OpenClipTokenizer } from "../../adapters/clip/open_clip_tokenizer.ts";
import { openClipTransform } from "../../adapters/clip/open_clip_image_transform.ts";
import { hpsv2Plugin, hpsv2Reward } from "../../rewards/hpsv2.ts";
import { builtinRegistry } from "../../builtin_plugins.ts";
import { parsePluginOptions } from "../../core/plugin.ts";
import type { Reward } from "../../core/reward.ts";
import { assertClose, fixture, golden } from "../_helpers.ts";

const DIR = fixture("hpsv2-tiny");
const TOL = 1e-4;

async function goldenJson(): Promise<{ prompts: string[] }> {
  return JSON.parse(await Deno.readTextFile(fixture("hpsv2-tiny", "golden.json")));
}

function nchwToNhwc(data: Float32Array, shape: number[]): tf.Tensor4D {
  return tf.tidy(() =>
    tf.tensor4d(data, shape as [number, number, number, number]).transpose([0, 2, 3, 1])
  );
}

Deno.test("open_clip tokenizer matches open_clip.tokenize", async () => {
  const g = await golden("hpsv2-tiny");
  const { prompts } = await goldenJson();
  const tok = await OpenClipTokenizer.load(`${DIR}/bpe_simple_vocab_16e6.txt.gz`);
  assert.equal(tok.vocabSize, 49408);
  const ids = tok.encodeBatch(prompts);
  const want = g.get("tokenizer.input_ids")!;
  const [n, l] = want.shape;
  for (let i = 0; i < n; i++) {
    const row = Array.from(want.data.subarray(i * l, (i + 1) * l));
    assert.deepEqual(ids[i], row, `prompt ${i} ${JSON.stringify(prompts[i])}`);
  }
  const eot = g.get("tokenizer.eot_index")!.data;
  for (let i = 0; i < n; i++) {
    assert.equal(ids[i].indexOf(Math.max(...ids[i])), eot[i], `eot index of prompt ${i}`);
  }
});

Deno.test("HPSv2 transform matches img_score.py's preprocess (tensor bicubic, pad)", async (t) => {
  const g = await golden("hpsv2-tiny");
  const cfg = JSON.parse(await Deno.readTextFile(`${DIR}/model_config.json`));
  const size = cfg.vision_cfg.image_size as number;
  const cases = [
    ["preprocess.hps_val", "resize-max-pad", true],
    ["preprocess.hps_val_noaa", "resize-max-pad", false],
    ["preprocess.centercrop", "resize-center-crop", true],
    ["preprocess.centercrop_noaa", "resize-center-crop", false],
  ] as const;
  for (const [key, mode, antialias] of cases) {
    await t.step(key, () => {
      const want = g.get(key)!.data as Float32Array;
      const per = 3 * size * size;
      let worst = 0;
      for (let i = 0; i < 3; i++) {
        const raw = g.get(`in.raw_image.${i}`)!;
        const [h, w] = raw.shape;
        const out = openClipTransform(Uint8Array.from(raw.data as Int32Array), h, w, {
          size,
          mode,
          antialias,
        });
        worst = Math.max(
          worst,
          assertClose(out, want.subarray(i * per, (i + 1) * per), TOL, `${key}[${i}]`),
        );
      }
      console.log(`  ${key}: ${worst.toExponential(2)}`);
    });
  }
});

Deno.test("open_clip weights on the CLIP towers match HPSv2's model", async (t) => {
  const g = await golden("hpsv2-tiny");
  const want = (k: string) => g.get(k)!.data as Float32Array;
  for (const backend of ["cpu", "wasm"] as const) {
    await t.step(backend, async () => {
      await useBackend(backend);
      const before = tf.memory().numTensors;
      const { clip } = await loadOpenClip(`${DIR}/model.safetensors`, `${DIR}/model_config.json`);
      const px = g.get("in.pixel_values")!;
      const pixels = nchwToNhwc(px.data as Float32Array, px.shape);
      const idsHost = g.get("tokenizer.input_ids")!;
      const ids = tf.tensor2d(
        Int32Array.from(idsHost.data),
        idsHost.shape as [number, number],
        "int32",
      );
      const errors: Record<string, string> = {};
      const check = async (k: string, actual: tf.Tensor) => {
        const err = assertClose(await actual.data(), want(k), TOL, `${backend} ${k}`);
        errors[k] = err.toExponential(2);
        actual.dispose();
      };
      await check("visual.ln_pre", clip.vision.embeddings(pixels));
      const v = clip.vision.forward(pixels);
      v.lastHiddenState.dispose();
      await check("visual.ln_post_cls", v.pooledOutput);
      await check("image_features_unnormalized", clip.imageFeatures(pixels));
      await check("text.ln_final", clip.text.forward(ids).lastHiddenState);
      await check("text_features_unnormalized", clip.textFeatures(ids));
      await check("image_features", tf.tidy(() => l2Normalize(clip.imageFeatures(pixels))));
      await check("text_features", tf.tidy(() => l2Normalize(clip.textFeatures(ids))));
      const out = clip.forward(pixels, ids);
      await check("logits_per_image", out.logitsPerImage);
      await check("cosine", tf.matMul(out.imageEmbeds, out.textEmbeds, false, true));
      const pairs = tf.tidy(() =>
        tf.sum(tf.mul(out.imageEmbeds, out.textEmbeds.slice([0, 0], [3, -1])), -1)
      );
      await check("hps.score_pairs", pairs);
      out.imageEmbeds.dispose();
      out.textEmbeds.dispose();
      assertClose([clip.logitScale], want("logit_scale"), TOL, "logit_scale");
      console.log(`  ${backend}: ${JSON.stringify(errors)}`);
      pixels.dispose();
      ids.dispose();
      clip.dispose();
      assert.equal(tf.memory().numTensors, before, "tensors leaked");
    });
  }
});

Deno.test("hpsv2 reward reproduces img_score.score() on raw images", async () => {
  await useBackend("cpu");
  const g = await golden("hpsv2-tiny");
  const { prompts } = await goldenJson();
  const reward = await hpsv2Reward({
    checkpoint: `${DIR}/model.safetensors`,
    modelConfig: `${DIR}/model_config.json`,
    bpe: `${DIR}/bpe_simple_vocab_16e6.txt.gz`,
    // The golden scores were made with torchvision 0.29 (antialias on).
    antialias: true,
  });
  const want = g.get("raw.hps_score")!.data as Float32Array;
  const got = new Float32Array(want.length);
  for (let i = 0; i < 3; i++) {
    const raw = g.get(`in.raw_image.${i}`)!;
    const [h, w] = raw.shape;
    // Images as the reward receives them: float [0, 1]; it quantises back to the same bytes.
    const image = tf.tidy(() =>
      tf.tensor4d(Float32Array.from(raw.data, (v) => v / 255), [1, h, w, 3])
    );
    for (let j = 0; j < prompts.length; j++) {
      got[i * prompts.length + j] =
        (await reward.score({ images: image, prompts: [prompts[j]] }))[0];
    }
    image.dispose();
  }
  const err = assertClose(got, want, TOL, "raw.hps_score");
  console.log(`  raw.hps_score: ${err.toExponential(2)}`);
  reward.dispose?.();
});

Deno.test("hpsv2 plugin: registry, options, errors", async () => {
  await useBackend("cpu");
  const plugin = builtinRegistry().get("reward", "hpsv2")!;
  assert.equal(plugin, hpsv2Plugin);
  const options = parsePluginOptions(plugin, {
    checkpoint: "hpsv2-tiny/model.safetensors",
    modelConfig: "hpsv2-tiny/model_config.json",
    bpe: "hpsv2-tiny/bpe_simple_vocab_16e6.txt.gz",
  }, "rewards[0].options");
  assert.equal(options.antialias, false);
  assert.equal(options.preprocess, "resize-max-pad");
  const r = await plugin.create(options, { baseDir: fixture() }) as Reward;
  const x = tf.zeros([2, 20, 30, 3]) as tf.Tensor4D;
  const s = await r.score({ images: x, prompts: ["a cat", "a dog"] });
  assert.ok(s.every((v) => Math.abs(v) <= 1), "a cosine");
  x.dispose();
  r.dispose?.();
  await assert.rejects(
    hpsv2Reward({ checkpoint: "HPS_v2_compressed.pt", bpe: "x.gz" }),
    /HPS_v2_compressed\.pt: a PyTorch pickle, which texforce never loads; convert its state dict once/,
  );
  await assert.rejects(
    hpsv2Reward({ checkpoint: `${DIR}/model_config.json.safetensors`, bpe: "x.gz" }),
    /hpsv2: /,
  );
  // open_clip weights with a config of more layers: the missing resblock is named.
  const cfg = JSON.parse(await Deno.readTextFile(`${DIR}/model_config.json`));
  cfg.vision_cfg.layers = 3;
  await assert.rejects(
    loadOpenClip(`${DIR}/model.safetensors`, cfg),
    /missing weight 'visual\.transformer\.resblocks\.2\.ln_1\.weight'/,
  );
});
