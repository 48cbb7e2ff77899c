// ImageReward against ImageReward's own code (tests/fixtures/imagereward-tiny, or
// $TEXFORCE_FIXTURES/imagereward-tiny): WordPiece ids, BLIP ViT, BERT with cross-attention,
// head, preprocessing, scores and the loader's key/shape checks.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { useBackend } from "../../core/backend.ts";
import type { HostTensor, TensorInfo, WeightSource } from "../../core/io/safetensors.ts";
import { openWeights } from "../../core/io/weights.ts";
import { BertTokenizer } from "../../adapters/image_reward/bert_tokenizer.ts";
import {
  ImageRewardModel,
  imageRewardPreprocess,
  parseImageRewardConfig,
} from "../../adapters/image_reward/image_reward_model.ts";
import { imageRewardPlugin, imageRewardReward } from "../../rewards/imagereward.ts";
import { builtinRegistry } from "../../builtin_plugins.ts";
import { parsePluginOptions } from "../../core/plugin.ts";
import type { Reward } from "../../core/reward.ts";
import { assertClose, fixture, golden } from "../_helpers.ts";

const DIR = fixture("imagereward-tiny");
const TOL = 1e-4;

async function goldenJson(): Promise<{ prompts: string[]; tokens: string[][] }> {
  return JSON.parse(await Deno.readTextFile(`${DIR}/golden.json`));
}

async function config() {
  const cfg = JSON.parse(await Deno.readTextFile(`${DIR}/config.json`));
  const med = JSON.parse(await Deno.readTextFile(`${DIR}/med_config.json`));
  return parseImageRewardConfig(cfg, "config.json", med, "med_config.json");
}

function nhwc(h: HostTensor): tf.Tensor4D {
  return tf.tidy(() =>
    tf.tensor4d(h.data as Float32Array, h.shape as [number, number, number, number])
      .transpose([0, 2, 3, 1])
  );
}

Deno.test("WordPiece tokenizer matches BLIP's BertTokenizer on the fixture prompts", async () => {
  const g = await golden("imagereward-tiny");
  const { prompts, tokens } = await goldenJson();
  const c = await config();
  const tok = await BertTokenizer.load(`${DIR}/tokenizer`);
  assert.equal(tok.vocabSize, c.text.vocabSize);
  assert.equal(tok.tokenId("[DEC]"), 295);
  assert.equal(tok.tokenId("[ENC]"), 296);
  const enc = tok.encodeBatch(prompts, { maxLength: c.textMaxLength });
  const ids = g.get("tokenizer.input_ids")!;
  const mask = g.get("tokenizer.attention_mask")!;
  const l = ids.shape[1];
  for (let i = 0; i < prompts.length; i++) {
    const want = Array.from(ids.data.subarray(i * l, (i + 1) * l));
    assert.deepEqual(enc.inputIds[i], want, `ids of prompt ${i} ${JSON.stringify(prompts[i])}`);
    assert.deepEqual(enc.attentionMask[i], Array.from(mask.data.subarray(i * l, (i + 1) * l)));
    const t = ["[CLS]", ...tok.tokenize(prompts[i]).slice(0, l - 2), "[SEP]"];
    assert.deepEqual(t, tokens[i], `tokens of prompt ${i}`);
  }
});

Deno.test("ImageReward preprocess matches its _transform (Pillow bicubic, round crop)", async () => {
  const g = await golden("imagereward-tiny");
  const c = await config();
  const size = c.vision.imageSize;
  const want = g.get("preprocess.pixel_values")!.data as Float32Array;
  const per = 3 * size * size;
  let worst = 0;
  for (let i = 0; i < 3; i++) {
    const raw = g.get(`in.raw_image.${i}`)!;
    const [h, w] = raw.shape;
    const out = imageRewardPreprocess(
      Uint8Array.from(raw.data),
      h,
      w,
      size,
      c.imageMean,
      c.imageStd,
    );
    worst = Math.max(
      worst,
      assertClose(out, want.subarray(i * per, (i + 1) * per), TOL, `image ${i}`),
    );
  }
  console.log(`  preprocess.pixel_values: ${worst.toExponential(2)}`);
});

Deno.test("ImageReward model matches the reference forward pass", async (t) => {
  const g = await golden("imagereward-tiny");
  const want = (k: string) => g.get(k)!.data as Float32Array;
  for (const backend of ["cpu", "wasm"] as const) {
    await t.step(backend, async () => {
      await useBackend(backend);
      const before = tf.memory().numTensors;
      const model = await ImageRewardModel.load(DIR);
      const errors: Record<string, string> = {};
      const check = async (k: string, actual: tf.Tensor) => {
        errors[k] = assertClose(await actual.data(), want(k), TOL, `${backend} ${k}`)
          .toExponential(2);
        actual.dispose();
      };
      const pixels = nhwc(g.get("in.pixel_values")!);
      const idsH = g.get("tokenizer.input_ids")!;
      const [np, l] = idsH.shape;
      const ids = tf.tensor2d(Int32Array.from(idsH.data), [np, l], "int32");
      const maskH = g.get("tokenizer.attention_mask")!;
      const mask = tf.tensor2d(Float32Array.from(maskH.data), [np, l]);
      await check("vision.patch_embed", model.vision.patchEmbed(pixels));
      const image = model.vision.forward(pixels);
      await check("vision.image_embeds", image.clone());
      await check("text.embeddings", model.text.embeddings(ids));
      const ni = pixels.shape[0];
      // Every (image i, prompt j) pair as one batch of ni·np rows, row i·np + j.
      const [hidden, pairIds, pairMask, pairPixels] = tf.tidy(() => {
        const rep = (x: tf.Tensor) => tf.tile(x, [ni, ...x.shape.slice(1).map(() => 1)]);
        const imgRows = tf.gather(image, tf.range(0, ni * np, 1, "int32").div(np).floor().toInt());
        const pxRows = tf.gather(pixels, tf.range(0, ni * np, 1, "int32").div(np).floor().toInt());
        const pi = rep(ids) as tf.Tensor2D;
        const pm = rep(mask) as tf.Tensor2D;
        return [model.text.forward(pi, pm, imgRows as tf.Tensor3D), pi, pm, pxRows];
      });
      const d = hidden.shape[2];
      const cls = tf.tidy(() => hidden.slice([0, 0, 0], [ni * np, 1, d]).reshape([ni * np, d]));
      await check("text.last_hidden_state", hidden);
      await check("text.cls_features", cls.clone());
      await check("mlp.raw", model.head(cls as tf.Tensor2D));
      cls.dispose();
      await check(
        "score",
        model.score(pairPixels as tf.Tensor4D, pairIds as tf.Tensor2D, pairMask as tf.Tensor2D),
      );
      for (const x of [image, pixels, ids, mask, pairIds, pairMask, pairPixels]) x.dispose();
      console.log(`  ${backend}: ${JSON.stringify(errors)}`);
      model.dispose();
      assert.equal(tf.memory().numTensors, before, "tensors leaked");
    });
  }
});

Deno.test("imagereward reward reproduces ImageReward.score() and inference_rank()", async () => {
  await useBackend("cpu");
  const g = await golden("imagereward-tiny");
  const { prompts } = await goldenJson();
  const reward = await imageRewardReward({ model: DIR });
  const want = g.get("raw.score")!.data as Float32Array;
  const got = new Float32Array(want.length);
  for (let i = 0; i < 3; i++) {
    const raw = g.get(`in.raw_image.${i}`)!;
    const [h, w] = raw.shape;
    const image = tf.tensor4d(Float32Array.from(raw.data, (v) => v / 255), [1, h, w, 3]);
    const scores = await reward.score({
      images: tf.tidy(() => tf.tile(image, [prompts.length, 1, 1, 1])) as tf.Tensor4D,
      prompts,
    });
    got.set(scores, i * prompts.length);
    image.dispose();
  }
  console.log(`  raw.score: ${assertClose(got, want, TOL, "raw.score").toExponential(2)}`);
  // inference_rank(prompts[0], images): rewards and 1-based ranks (1 = best).
  const rewards = [0, 1, 2].map((i) => got[i * prompts.length]);
  assertClose(rewards, g.get("rank.prompt0.rewards")!.data, TOL, "rank.prompt0.rewards");
  const order = [0, 1, 2].sort((a, b) => rewards[b] - rewards[a]);
  const ranks = [0, 1, 2].map((i) => order.indexOf(i) + 1);
  assert.deepEqual(ranks, Array.from(g.get("rank.prompt0.indices")!.data));
  reward.dispose?.();
});

/** A source that drops or reshapes one key of another. */
class Tampered implements WeightSource {
  readonly path: string;
  constructor(private inner: WeightSource, private key: string, private shape?: number[]) {
    this.path = inner.path;
  }
  keys(): string[] {
    return this.inner.keys().filter((k) => this.shape || k !== this.key);
  }
  has(name: string): boolean {
    return (this.shape !== undefined || name !== this.key) && this.inner.has(name);
  }
  info(name: string): TensorInfo {
    const i = this.inner.info(name);
    return name === this.key && this.shape ? { ...i, shape: this.shape } : i;
  }
  read(name: string): Promise<HostTensor> {
    return this.inner.read(name);
  }
  close(): void {}
}

Deno.test("ImageReward loader names a missing or misshapen key", async (t) => {
  await useBackend("cpu");
  const c = await config();
  const src = await openWeights(`${DIR}/model.safetensors`);
  const cases: [string, number[] | undefined, RegExp][] = [
    [
      "blip.text_encoder.encoder.layer.1.crossattention.self.key.weight",
      undefined,
      /missing 'blip\.text_encoder\.encoder\.layer\.1\.crossattention\.self\.key\.weight' \(expected shape \[32, 48\]\)/,
    ],
    [
      "blip.visual_encoder.blocks.0.attn.qkv.weight",
      [96, 48],
      /'blip\.visual_encoder\.blocks\.0\.attn\.qkv\.weight' has shape \[96, 48\], expected \[144, 48\]/,
    ],
    ["mlp.layers.6.bias", undefined, /missing 'mlp\.layers\.6\.bias'/],
    ["blip.visual_encoder.pos_embed", [1, 16, 48], /pos_embed' has shape \[1, 16, 48\]/],
  ];
  for (const [key, shape, re] of cases) {
    await t.step(`${shape ? "misshapen" : "missing"} ${key}`, async () => {
      await assert.rejects(() => ImageRewardModel.fromSource(new Tampered(src, key, shape), c), re);
    });
  }
  await t.step("a plain BERT with token-type embeddings is refused", async () => {
    const withTypes = new Tampered(src, "none");
    const has = withTypes.has.bind(withTypes);
    withTypes.has = (n) => n.endsWith("token_type_embeddings.weight") || has(n);
    await assert.rejects(() => ImageRewardModel.fromSource(withTypes, c), /token-type/);
  });
  await t.step("the untouched fixture loads", async () => {
    (await ImageRewardModel.fromSource(src, c)).dispose();
  });
  src.close();
});

Deno.test("imagereward plugin: registry, options, and a .pt checkpoint is refused with the fix", async () => {
  await useBackend("cpu");
  const plugin = builtinRegistry().get("reward", "imagereward")!;
  assert.equal(plugin, imageRewardPlugin);
  const options = parsePluginOptions(plugin, { model: "imagereward-tiny" }, "rewards[0].options");
  const r = await plugin.create(options, { baseDir: fixture() }) as Reward;
  const x = tf.zeros([2, 40, 30, 3]) as tf.Tensor4D;
  assert.equal((await r.score({ images: x, prompts: ["a cat", ""] })).length, 2);
  await assert.rejects(r.score({ images: x, prompts: ["a"] }), /imagereward: 2 images but 1/);
  x.dispose();
  r.dispose?.();
  const dir = await Deno.makeTempDir();
  await Deno.copyFile(`${DIR}/med_config.json`, `${dir}/med_config.json`);
  await Deno.writeFile(`${dir}/ImageReward.pt`, new Uint8Array([0x80, 0x02]));
  await assert.rejects(
    ImageRewardModel.load(dir),
    /ImageReward\.pt: a PyTorch pickle, which texforce never loads; convert it once: python -c/,
  );
  await Deno.remove(dir, { recursive: true });
});
