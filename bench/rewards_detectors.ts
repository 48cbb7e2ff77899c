/**
 * `deno task bench rewards [--backend wasm] [--batch 8] [--size 512] [--iters 2]
 * [--only face,hand,aesthetic,clip-score] [--clip vit-l|tiny]`: images per second of the reward
 * functions on a batch of `size`×`size` images (a face-api photo repeated, so the face and hand
 * paths run their crop models too). `face` and `hand` use @vladmandic/human's real models.
 * `aesthetic` and `clip-score` need a CLIP ViT-L/14 that cannot be downloaded here: with
 * `--clip vit-l` (default) the bench writes a CLIPModel folder of the real size (ViT-L/14 vision
 * 24×1024, text 12×768, projection 768; fp16 safetensors, random weights) and the LAION head's
 * shapes to `$TMPDIR/texforce-bench-vitl-random` (once; reused); `--clip tiny` uses the test fixture instead. Random weights do
 * not change the arithmetic, so the timings are those of the real models.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import { type BackendName, useBackend } from "../core/backend.ts";
import { type WritableTensor, writeSafetensors } from "../core/io/safetensors.ts";
import type { Reward } from "../core/reward.ts";
import { aestheticReward, clipScoreReward, faceReward, handReward } from "../rewards/mod.ts";
import { formatBytes, peakRss } from "./_peak_rss.ts";
import { clipEncoderLayerShapes } from "./_clip_layout.ts";

const FIXTURES = new URL("../tests/fixtures/", import.meta.url);
const TOKENIZER = new URL("sd-tiny/tiny-sd/tokenizer", FIXTURES).pathname;

// Values in ±0.02 (CLIP's init scale), LayerNorm weights 1, drawn with a fast xorshift.
function randomTensor(shape: number[], seed: number, ones = false): WritableTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = ones ? 1 : ((s >>> 0) / 4294967296 - 0.5) * 0.04;
  }
  return { dtype: "F16", shape, data };
}

/** A random-weight `openai/clip-vit-large-patch14` folder and a LAION-shaped head in `dir`. */
async function writeRandomVitL(dir: string): Promise<{ clip: string; head: string }> {
  const clip = join(dir, "clip");
  await Deno.mkdir(clip, { recursive: true });
  const shapes = new Map<string, number[]>();
  const add = (k: string, s: number[]) => shapes.set(k, s);
  const v = 1024, vm = 4096, t = 768, tm = 3072, p = 768;
  add("vision_model.embeddings.class_embedding", [v]);
  add("vision_model.embeddings.patch_embedding.weight", [v, 3, 14, 14]);
  add("vision_model.embeddings.position_embedding.weight", [257, v]);
  for (const n of ["pre_layrnorm", "post_layernorm"]) {
    add(`vision_model.${n}.weight`, [v]);
    add(`vision_model.${n}.bias`, [v]);
  }
  clipEncoderLayerShapes(add, "vision_model.", 24, v, vm);
  add("text_model.embeddings.token_embedding.weight", [49408, t]);
  add("text_model.embeddings.position_embedding.weight", [77, t]);
  add("text_model.final_layer_norm.weight", [t]);
  add("text_model.final_layer_norm.bias", [t]);
  clipEncoderLayerShapes(add, "text_model.", 12, t, tm);
  add("visual_projection.weight", [p, v]);
  add("text_projection.weight", [p, t]);
  const tensors: Record<string, WritableTensor> = {};
  let seed = 1;
  for (const [k, s] of shapes) tensors[k] = randomTensor(s, seed++, /norm\w*\.weight$/.test(k));
  tensors.logit_scale = { dtype: "F32", shape: [], data: [Math.log(100)] };
  await writeSafetensors(join(clip, "model.safetensors"), tensors);
  const config = {
    architectures: ["CLIPModel"],
    model_type: "clip",
    projection_dim: p,
    logit_scale_init_value: 2.6592,
    text_config: {
      hidden_size: t,
      intermediate_size: tm,
      num_hidden_layers: 12,
      num_attention_heads: 12,
      max_position_embeddings: 77,
      vocab_size: 49408,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
      bos_token_id: 49406,
      eos_token_id: 49407,
      pad_token_id: 1,
    },
    vision_config: {
      hidden_size: v,
      intermediate_size: vm,
      num_hidden_layers: 24,
      num_attention_heads: 16,
      image_size: 224,
      patch_size: 14,
      num_channels: 3,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
    },
  };
  await Deno.writeTextFile(join(clip, "config.json"), JSON.stringify(config));
  const pre = await Deno.readTextFile(new URL("clip-tiny/clip/preprocessor_config.json", FIXTURES));
  await Deno.writeTextFile(
    join(clip, "preprocessor_config.json"),
    JSON.stringify({
      ...JSON.parse(pre),
      size: { shortest_edge: 224 },
      crop_size: { height: 224, width: 224 },
    }),
  );
  const head = join(dir, "aesthetic_head.safetensors");
  const headTensors: Record<string, WritableTensor> = {};
  const widths = [p, 1024, 128, 64, 16, 1];
  [0, 2, 4, 6, 7].forEach((layer, i) => {
    headTensors[`layers.${layer}.weight`] = randomTensor([widths[i + 1], widths[i]], 100 + i);
    headTensors[`layers.${layer}.bias`] = randomTensor([widths[i + 1]], 200 + i);
  });
  await writeSafetensors(head, headTensors);
  return { clip, head };
}

function tmpDir(): string {
  return Deno.env.get("TMPDIR") || "/tmp";
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function photoBatch(batch: number, size: number): Promise<tf.Tensor4D> {
  const main = import.meta.resolve("@vladmandic/face-api");
  const file = new URL("../demo/sample2.jpg", main).pathname;
  const buf = await sharp(file).resize(size, size, { fit: "cover" }).removeAlpha().raw()
    .toBuffer();
  return tf.tidy(() => {
    const one = tf.div(tf.tensor4d(new Uint8Array(buf), [1, size, size, 3], "int32"), 255);
    return tf.tile(one, [batch, 1, 1, 1]) as tf.Tensor4D;
  });
}

/**
 * Run the reward benchmark.
 *
 * @example
 * ```ts
 * import benchDetectorRewards from "./rewards_detectors.ts";
 * await benchDetectorRewards(["--only", "face", "--iters", "1"]);
 * ```
 */
export default async function benchDetectorRewards(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      backend: { type: "string", default: "wasm" },
      batch: { type: "string", default: "8" },
      size: { type: "string", default: "512" },
      iters: { type: "string", default: "2" },
      only: { type: "string", default: "face,hand,aesthetic,clip-score" },
      clip: { type: "string", default: "vit-l" },
    },
  });
  const batch = Number(values.batch);
  const size = Number(values.size);
  const iters = Number(values.iters);
  const only = values.only!.split(",");
  const info = await useBackend(values.backend as BackendName);
  console.log(
    `rewards on ${info.name} (${info.device}): batch ${batch}, ${size}×${size}, ` +
      `median of ${iters} after a warm-up`,
  );
  const images = await photoBatch(batch, size);
  const prompts = Array.from({ length: batch }, () => "a complete face of a woman");
  let vit: { clip: string; head: string } | undefined;
  const clipPaths = async (): Promise<{ clip: string; head: string; label: string }> => {
    if (values.clip === "tiny") {
      return {
        clip: new URL("clip-tiny/clip", FIXTURES).pathname,
        head: new URL("clip-tiny/aesthetic_mlp.safetensors", FIXTURES).pathname,
        label: "tiny test CLIP (32 wide)",
      };
    }
    if (!vit) {
      // Written once (about 0.9 GB) and reused by later runs.
      const dir = join(tmpDir(), "texforce-bench-vitl-random");
      if (await exists(join(dir, "aesthetic_head.safetensors"))) {
        vit = { clip: join(dir, "clip"), head: join(dir, "aesthetic_head.safetensors") };
      } else {
        const t0 = performance.now();
        vit = await writeRandomVitL(dir);
        console.log(
          `  (wrote a random-weight ViT-L/14 CLIPModel to ${dir} in ${
            ((performance.now() - t0) / 1000).toFixed(1)
          } s)`,
        );
      }
    }
    return { ...vit, label: "ViT-L/14 size, random weights" };
  };
  // On wasm the ViT-L/14's 1.7 GB of fp32 weights leave too little of the 32-bit heap for a
  // batch of 8 at once (tfjs aborts: "table index is out of bounds"), so it is timed one image
  // per call there.
  const vitOnWasm = values.clip !== "tiny" && info.name === "wasm";
  const clipBatch = vitOnWasm ? 1 : batch;
  const makers: Record<string, () => Promise<[Reward, string, number]>> = {
    face: async () => [await faceReward(), "blazeface + facemesh", batch],
    hand: async () => [await handReward(), "handtrack + handlandmark-lite", batch],
    aesthetic: async () => {
      const c = await clipPaths();
      const r = await aestheticReward({ clipModel: c.clip, head: c.head });
      return [r, c.label, clipBatch];
    },
    "clip-score": async () => {
      const c = await clipPaths();
      const r = await clipScoreReward({ clipModel: c.clip, tokenizer: TOKENIZER });
      return [r, c.label, clipBatch];
    },
  };
  try {
    for (const name of only) {
      const make = makers[name];
      if (!make) throw new Error(`unknown reward '${name}' (expected ${Object.keys(makers)})`);
      const t0 = performance.now();
      const [reward, what, n] = await make();
      const loadMs = performance.now() - t0;
      const input = n === batch ? images : tf.slice(images, [0, 0, 0, 0], [n, -1, -1, -1]);
      const ps = prompts.slice(0, n);
      console.log(`  ${name}: loaded in ${(loadMs / 1000).toFixed(1)} s, warming up`);
      await reward.score({ images: input as tf.Tensor4D, prompts: ps });
      const times: number[] = [];
      for (let i = 0; i < iters; i++) {
        const t1 = performance.now();
        await reward.score({ images: input as tf.Tensor4D, prompts: ps });
        times.push(performance.now() - t1);
      }
      if (input !== images) input.dispose();
      times.sort((a, b) => a - b);
      const ms = times[Math.floor((times.length - 1) / 2)];
      const note = n === batch ? "" : `, batch ${n}: batch ${batch} exceeds the wasm heap`;
      console.log(
        `${name.padEnd(11)} ${(n / (ms / 1000)).toFixed(2).padStart(7)} images/s  ` +
          `(${(ms / n).toFixed(0)} ms/image; load ${(loadMs / 1000).toFixed(1)} s; ${what}${note})`,
      );
      reward.dispose?.();
    }
  } finally {
    images.dispose();
  }
  console.log(`peak RSS ${formatBytes(peakRss())}, tensors ${tf.memory().numTensors}`);
}
