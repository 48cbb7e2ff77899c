/**
 * `deno task bench rewards [--backend wasm] [--iters 2] [--only imagereward,vit-h-14,http]
 * [--vit-layers 16]`: the preference-model rewards at their real sizes with random weights built
 * in memory.
 *
 * - `imagereward`: ImageReward-v1.0 (BLIP ViT-L/16 at 224, 24 blocks, width 1024; BERT-base with
 *   cross-attention, 12 layers; MLP head) — the whole score of one (image, prompt) pair.
 * - `vit-h-14`: open_clip ViT-H-14, the architecture of HPSv2 and PickScore (vision 32 layers,
 *   width 1280, patch 14 at 224; text 24 layers, width 1024, 77 tokens), loaded through the
 *   open_clip → CLIP key mapping. The two towers are built and timed one after the other; on
 *   wasm the image tower cannot be built whole (2.5 GB of fp32 weights plus XNNPACK's packed
 *   copies exceed the 4 GB heap), so `--vit-layers` (default 16) of its 32 identical layers are
 *   timed and scaled. A score is one image-tower plus one text-tower pass. The preprocessing of
 *   both rewards is timed on a 512×512 image.
 * - `http`: the HTTP reward's own overhead (PNG encoding, base64, JSON, a local server that
 *   answers at once) for a batch of 8 images of 512×512.
 *
 * Prints the median ms per call after one warm-up, the build time, peak RSS and tensor counts.
 *
 * @module
 */
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { type BackendName, useBackend } from "../core/backend.ts";
import type { HostTensor, TensorInfo, WeightSource } from "../core/io/safetensors.ts";
import {
  imageRewardLayout,
  ImageRewardModel,
  parseImageRewardConfig,
} from "../adapters/image_reward/image_reward_model.ts";
import { imageRewardPreprocess } from "../adapters/image_reward/image_reward_model.ts";
import {
  type OpenClipConfig,
  OpenClipWeights,
  parseOpenClipConfig,
} from "../adapters/clip/open_clip.ts";
import { openClipTransform } from "../adapters/clip/open_clip_image_transform.ts";
import { ClipVisionModel } from "../adapters/clip/clip_vision_model.ts";
import { ClipTextModel } from "../adapters/clip/clip_text_model.ts";
import {
  ClipImageProcessor,
  parseClipImageProcessorConfig,
} from "../adapters/clip/clip_image_processor.ts";
import { VIT_H_14_CONFIG } from "../rewards/hpsv2.ts";
import { httpReward } from "../rewards/http.ts";
import { formatBytes, peakRss } from "./_peak_rss.ts";

/** Keys and shapes with values drawn on demand (uniform, std 1/√fan_in; LayerNorm gains 1). */
class RandomWeights implements WeightSource {
  readonly path: string;
  #shapes: Map<string, number[]>;
  #seed = 1;

  constructor(path: string, shapes: Map<string, number[]>) {
    this.path = path;
    this.#shapes = shapes;
  }
  keys(): string[] {
    return [...this.#shapes.keys()];
  }
  has(name: string): boolean {
    return this.#shapes.has(name);
  }
  info(name: string): TensorInfo {
    const shape = this.#shapes.get(name)!;
    return { name, dtype: "F32", shape, begin: 0, end: 4 * shape.reduce((a, b) => a * b, 1) };
  }
  read(name: string): Promise<HostTensor> {
    const shape = this.#shapes.get(name)!;
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const norm = /(norm\d?|LayerNorm|ln_\w+)\.weight$/.test(name);
    const bias = name.endsWith(".bias");
    const fanIn = shape.length >= 2 ? n / shape[0] : 1;
    const a = Math.sqrt(3 / Math.max(fanIn, 1)) * (shape.length >= 2 ? 1 : 0.1);
    let s = this.#seed++ * 2654435761;
    for (let i = 0; i < n; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      data[i] = norm ? 1 : bias ? 0 : ((s >>> 0) / 4294967296 * 2 - 1) * a;
    }
    return Promise.resolve({ dtype: "float32", shape: [...shape], data });
  }
  close(): void {}
}

/** open_clip `CLIP.state_dict()` keys of a config. */
function openClipLayout(c: OpenClipConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const v = c.vision;
  const t = c.text;
  const blocks = (prefix: string, n: number, d: number, mlp: number) => {
    for (let i = 0; i < n; i++) {
      const p = `${prefix}.resblocks.${i}`;
      for (const ln of ["ln_1", "ln_2"]) {
        m.set(`${p}.${ln}.weight`, [d]);
        m.set(`${p}.${ln}.bias`, [d]);
      }
      m.set(`${p}.attn.in_proj_weight`, [3 * d, d]);
      m.set(`${p}.attn.in_proj_bias`, [3 * d]);
      m.set(`${p}.attn.out_proj.weight`, [d, d]);
      m.set(`${p}.attn.out_proj.bias`, [d]);
      m.set(`${p}.mlp.c_fc.weight`, [mlp, d]);
      m.set(`${p}.mlp.c_fc.bias`, [mlp]);
      m.set(`${p}.mlp.c_proj.weight`, [d, mlp]);
      m.set(`${p}.mlp.c_proj.bias`, [d]);
    }
  };
  const vd = v.hiddenSize;
  m.set("visual.conv1.weight", [vd, 3, v.patchSize, v.patchSize]);
  m.set("visual.class_embedding", [vd]);
  m.set("visual.positional_embedding", [(v.imageSize / v.patchSize) ** 2 + 1, vd]);
  for (const n of ["ln_pre", "ln_post"]) {
    m.set(`visual.${n}.weight`, [vd]);
    m.set(`visual.${n}.bias`, [vd]);
  }
  blocks("visual.transformer", v.numHiddenLayers, vd, v.intermediateSize);
  m.set("visual.proj", [vd, c.embedDim]);
  const td = t.hiddenSize;
  m.set("token_embedding.weight", [t.vocabSize, td]);
  m.set("positional_embedding", [t.maxPositionEmbeddings, td]);
  blocks("transformer", t.numHiddenLayers, td, t.intermediateSize);
  m.set("ln_final.weight", [td]);
  m.set("ln_final.bias", [td]);
  m.set("text_projection", [td, c.embedDim]);
  m.set("logit_scale", []);
  return m;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function timed(
  label: string,
  iters: number,
  fn: () => Promise<void>,
): Promise<number> {
  let t0 = performance.now();
  await fn();
  const warm = performance.now() - t0;
  const xs: number[] = [];
  for (let i = 0; i < iters; i++) {
    t0 = performance.now();
    await fn();
    xs.push(performance.now() - t0);
  }
  const med = median(xs);
  console.log(
    `  ${label.padEnd(34)} median ${med.toFixed(1)} ms (warm-up ${warm.toFixed(0)} ms; ` +
      `min ${Math.min(...xs).toFixed(1)}, max ${Math.max(...xs).toFixed(1)}, ${iters} calls)`,
  );
  return med;
}

function noiseImage(h: number, w: number): Uint8Array {
  const px = new Uint8Array(h * w * 3);
  let s = 12345;
  for (let i = 0; i < px.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    px[i] = s >>> 24;
  }
  return px;
}

async function benchImageReward(iters: number): Promise<void> {
  const config = parseImageRewardConfig({}, "ImageReward-v1.0 defaults", {
    vocab_size: 30524,
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    intermediate_size: 3072,
    max_position_embeddings: 512,
    layer_norm_eps: 1e-12,
    hidden_act: "gelu",
    encoder_width: 1024,
    add_cross_attention: true,
  }, "med_config.json (ImageReward-v1.0)");
  const shapes = new Map(
    [...imageRewardLayout(config)].map(([k, s]) => [k, s.map((d) => d === -1 ? 256 : d)]),
  );
  const params = [...shapes.values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0);
  let t0 = performance.now();
  const model = await ImageRewardModel.fromSource(
    new RandomWeights("<random ImageReward-v1.0>", shapes),
    config,
  );
  console.log(
    `imagereward: BLIP ViT-L/16 + BERT-base cross-attention + MLP, ${(params / 1e6).toFixed(0)}M ` +
      `parameters, built in ${(performance.now() - t0).toFixed(0)} ms`,
  );
  const s = config.vision.imageSize;
  const img = noiseImage(512, 512);
  await timed("preprocess 512×512 → 224 (PIL)", iters, () => {
    imageRewardPreprocess(img, 512, 512, s);
    return Promise.resolve();
  });
  const pixels = tf.randomNormal([1, s, s, 3]) as tf.Tensor4D;
  const ids = tf.tensor2d([[101, ...Array.from({ length: 33 }, (_, i) => 1000 + i * 7), 102]], [
    1,
    35,
  ], "int32");
  const mask = tf.ones([1, 35]) as tf.Tensor2D;
  const before = tf.memory().numTensors;
  await timed("image tower (197 tokens)", iters, async () => {
    const t = model.vision.forward(pixels);
    await t.data();
    t.dispose();
  });
  const image = model.vision.forward(pixels);
  await timed("text tower (35 tokens × 197 image)", iters, async () => {
    const t = model.text.forward(ids, mask, image);
    await t.data();
    t.dispose();
  });
  t0 = performance.now();
  await timed("whole score, 1 pair", iters, async () => {
    const t = model.score(pixels, ids, mask);
    await t.data();
    t.dispose();
  });
  console.log(`  tensors ${before} before timing, ${tf.memory().numTensors - 1} after`);
  tf.dispose([pixels, ids, mask, image]);
  model.dispose();
}

async function benchVitH14(iters: number, visionLayers: number): Promise<void> {
  const config = parseOpenClipConfig(VIT_H_14_CONFIG, "ViT-H-14.json");
  const full = config.vision.numHiddenLayers;
  // The full image tower (2.5 GB of fp32 weights, plus XNNPACK's packed copy of each matrix) does
  // not fit a wasm heap (4 GB): time `visionLayers` of its layers and scale to all of them.
  config.vision = { ...config.vision, numHiddenLayers: Math.min(visionLayers, full) };
  const source = new OpenClipWeights(
    new RandomWeights("<random ViT-H-14>", openClipLayout(config)),
  );
  const s = config.vision.imageSize;
  const img = noiseImage(512, 512);
  console.log("vit-h-14 (hpsv2, pickscore): open_clip keys through the CLIP mapping");
  await timed("hpsv2 preprocess 512² (tensor bicubic)", iters, () => {
    openClipTransform(img, 512, 512, { size: s, mode: "resize-max-pad", antialias: false });
    return Promise.resolve();
  });
  const processor = new ClipImageProcessor(parseClipImageProcessorConfig({}, "laion ViT-H-14"));
  await timed("pickscore preprocess 512² (PIL)", iters, async () => {
    processor.preprocessUint8(img, [1, 512, 512, 3]).dispose();
    await Promise.resolve();
  });
  let t0 = performance.now();
  const vision = await ClipVisionModel.fromSource(source, config.vision);
  const vl = config.vision.numHiddenLayers;
  console.log(
    `  image tower: ${vl} of ${full} layers × 1280, built in ` +
      `${(performance.now() - t0).toFixed(0)} ms`,
  );
  const pixels = tf.randomNormal([1, s, s, 3]) as tf.Tensor4D;
  const vBefore = tf.memory().numTensors;
  const partMs = await timed(`image tower, ${vl} layers (257 tokens)`, iters, async () => {
    const o = vision.forward(pixels);
    await o.pooledOutput.data();
    tf.dispose([o.lastHiddenState, o.pooledOutput]);
  });
  const vMs = partMs * full / vl;
  if (vl < full) console.log(`  image tower, ${full} layers ≈ ${vMs.toFixed(0)} ms (scaled)`);
  console.log(`  tensors ${vBefore} before timing, ${tf.memory().numTensors} after`);
  pixels.dispose();
  vision.dispose();
  t0 = performance.now();
  const text = await ClipTextModel.fromSource(source, config.text);
  console.log(`  text tower: 24 layers × 1024, built in ${(performance.now() - t0).toFixed(0)} ms`);
  const ids = tf.tensor2d(
    [[
      49406,
      ...Array.from({ length: 20 }, (_, i) => 320 + i),
      49407,
      ...new Array(55).fill(0),
    ]],
    [1, 77],
    "int32",
  );
  const tMs = await timed("text tower (77 tokens)", iters, async () => {
    const o = text.forward(ids, { pooled: true });
    await o.pooledOutput!.data();
    tf.dispose([o.lastHiddenState, o.pooledOutput!]);
  });
  ids.dispose();
  text.dispose();
  console.log(`  one (image, prompt) score ≈ ${(vMs + tMs).toFixed(0)} ms (image + text tower)`);
}

async function benchHttp(iters: number): Promise<void> {
  const controller = new AbortController();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", signal: controller.signal, onListen: () => {} },
    async (req) => {
      const body = await req.json();
      return Response.json({ scores: (body.images as string[]).map((s) => s.length) });
    },
  );
  try {
    const r = httpReward({ url: `http://127.0.0.1:${server.addr.port}/`, batchSize: 8 });
    const images = tf.randomUniform([8, 512, 512, 3]) as tf.Tensor4D;
    console.log("http: local server answering at once (noise images: PNG ≈ worst case)");
    await timed("8 × 512² images, one request", iters, async () => {
      await r.score({ images, prompts: new Array(8).fill("a photo of a cat") });
    });
    images.dispose();
  } finally {
    controller.abort();
    await server.finished;
  }
}

/**
 * Run the preference-reward benchmarks.
 *
 * @example
 * ```ts
 * import benchRewardsPreference from "./rewards_preference.ts";
 * await benchRewardsPreference(["--only", "http"]);
 * ```
 */
export default async function benchRewardsPreference(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      backend: { type: "string", default: "wasm" },
      iters: { type: "string", default: "2" },
      only: { type: "string", default: "imagereward,vit-h-14,http" },
      "vit-layers": { type: "string", default: "16" },
    },
  });
  const iters = Number(values.iters);
  const info = await useBackend(values.backend as BackendName);
  console.log(`backend: ${info.name} (${info.device})`);
  const only = new Set(values.only!.split(","));
  if (only.has("imagereward")) await benchImageReward(iters);
  if (only.has("vit-h-14")) await benchVitH14(iters, Number(values["vit-layers"]));
  if (only.has("http")) await benchHttp(iters);
  console.log(`peak RSS ${formatBytes(peakRss())}`);
}
