/**
 * Stock tfjs WebGPU vs texforce's WebGPU kernels, on the GPU machine: attention at 4096 tokens
 * (forward, forward + backward), matmul 2048² and 4096², the 3×3 conv 2×64×64×320 → 320
 * (forward; forward + input and filter gradients), the SD 1.5 UNet forward and forward +
 * backward into the encoder states (random weights, CFG batch 2, 64×64 latents; also with block
 * recomputation and with the `f16` option), the CLIP ViT-L text encoder with LoRA r16 forward +
 * backward, the VAE decode to 512², and one small TexForce epoch (the tiny fixture model, webgpu
 * backend). Prints median ms, TFLOP/s where the work is counted exactly, the ratio to PyTorch
 * fp32 and fp16 on an H200 (`../shared/gpu/README.md`), the speed-up over stock and each row's
 * peak GPU memory (the growth of tfjs' WebGPU buffer pool over the row, emptied of free buffers
 * first: an upper bound, as the pool reuses buffers of equal size only); writes
 * `gpu_kernels.json` under `$OUT` (or `--out`) after every row, so a run cut short still returns
 * what it measured. Rows past `--budget-s` seconds are skipped (and say so).
 *
 * Bundles (imports nothing native): `bash bench/gpu_prepare.sh` (runs
 * `../shared/gpu/prepare.sh bench/gpu_kernels.ts` and adds the tiny model for the epoch row;
 * .gpu/ is 46 MB), then the device tool with command
 * `bash .gpu/remote.sh --runs 3 --budget-s 420`, carry `[".gpu"]`, timeout_s 540 (options:
 * `--only attention,matmul,conv,unet,clip,vae,epoch`, `--gemm-tile 64|128`, `--warmup 1`,
 * `--no-f16`: the stock tfjs device, no f16 rows).
 * Here: `deno task bench gpu_kernels --tiny` runs small shapes on lavapipe (a functional check
 * only: lavapipe is a CPU rasteriser, its timings say nothing about a GPU); the same through the
 * bundle: `OUT=/tmp/x bash .gpu/remote.sh --tiny --runs 1 --warmup 0`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { currentBackend, useBackend } from "../core/backend.ts";
import { multiHeadAttention } from "../adapters/nn/attention.ts";
import { flashAttention } from "../adapters/webgpu/flash_attention.ts";
import { tiledMatMul } from "../adapters/webgpu/tiled_matmul.ts";
import { conv3x3 } from "../adapters/webgpu/implicit_gemm_conv.ts";
import { setWebgpuKernels, type WebgpuKernelOptions } from "../adapters/webgpu/kernel_options.ts";
import { requestShaderF16 } from "../adapters/webgpu/f16.ts";
import { parseUNetConfig, UNet2DConditionModel } from "../adapters/unet/unet_2d_condition.ts";
import { RandomWeightReader } from "../adapters/unet/random_weight_reader.ts";
import type { ClipTextConfig } from "../adapters/clip/clip_text_model.ts";
import { parseVaeConfig, VaeDecoder } from "../adapters/vae/vae_decoder.ts";
import { benchTokenIds, clipWithBenchLora, SD15_TEXT } from "./clip.ts";
import { SD15_UNET, TINY_UNET } from "./_unet_bench.ts";
import { formatBytes } from "./_peak_rss.ts";
import { adamwPlugin } from "../adapters/optim/adamw.ts";
import { clipLoraEncoderPlugin } from "../adapters/encoder/clip_lora_encoder.ts";
import { ddimSamplerPlugin } from "../samplers/mod.ts";
import { brightnessPlugin } from "../rewards/brightness.ts";
import { PluginRegistry } from "../core/plugin.ts";
import { parsePipeline } from "../core/pipeline_schema.ts";
import { readMetrics } from "../core/report.ts";
import { train } from "../core/train.ts";
import { median } from "./_call_timer.ts";

/** PyTorch 2.11 fp32 on the H200 (medians, ms), from `../shared/gpu/README.md`. */
const PYTORCH_FP32_MS: Record<string, number> = {
  "matmul 2048²": 0.345,
  "matmul 4096²": 2.68,
  "conv 3×3 2×64×64×320→320": 0.518,
  "UNet forward": 71.7,
  "UNet forward+backward": 147,
  "CLIP LoRA forward+backward": 36.2,
};

/** PyTorch 2.11 fp16 on the same H200 (ms), same source. */
const PYTORCH_FP16_MS: Record<string, number> = {
  "UNet forward": 28.8,
  "UNet forward+backward": 92.9,
  "CLIP LoRA forward+backward": 44.6,
};

/** One timed row. */
export interface KernelBenchRow {
  /** What ran. */
  work: string;
  /** `stock` (tfjs kernels), `texforce` (own kernels) or `texforce+recompute`. */
  path: string;
  /** Median ms. */
  medianMs: number;
  /** Every timed run (ms). */
  ms: number[];
  /** Counted floating-point work per call, when known exactly. */
  flop?: number;
  /** TFLOP/s at the median. */
  tflops?: number;
  /** medianMs / PyTorch fp32 ms, where a PyTorch figure exists. */
  vsPytorch?: number;
  /** medianMs / PyTorch fp16 ms, where a PyTorch figure exists. */
  vsPytorchFp16?: number;
  /** Tensor bytes alive at the end of the forward pass (the backward's tape) or after the call. */
  tensorBytes: number;
  /** tfjs' WebGPU buffer pool size after the row (a high-water mark of GPU memory). */
  gpuPoolBytes?: number;
  /**
   * Peak GPU memory of the row: how far tfjs' WebGPU buffer pool grew over it, from a pool
   * holding only the buffers in use (an upper bound: buffers are reused at equal size only).
   */
  peakGpuBytes?: number;
  /** More about the row (the epoch's split into sampling, rewards and training). */
  detail?: string;
  /** Why the row did not run. */
  skipped?: string;
}

const OFF: Partial<WebgpuKernelOptions> = {
  flashAttention: false,
  tiledMatmul: false,
  groupNormSilu: false,
  implicitGemmConv: false,
};
const ON: Partial<WebgpuKernelOptions> & { gemmTile?: 64 | 128 } = {
  flashAttention: true,
  tiledMatmul: true,
  groupNormSilu: true,
  implicitGemmConv: true,
};

/**
 * Destroy the free buffers of tfjs' WebGPU pool, leaving those in use; returns the pool's size
 * then (undefined off webgpu). The pool only grows while a row runs, so its size after the row
 * is the row's peak GPU memory (model weights included).
 */
function trimPool(): number | undefined {
  const bm = (tf.backend() as unknown as {
    bufferManager?: {
      freeBuffers: Map<string, GPUBuffer[]>;
      numFreeBuffers: number;
      numBytesAllocated: number;
    };
  }).bufferManager;
  if (!bm) return undefined;
  for (const list of bm.freeBuffers.values()) {
    for (const b of list) {
      bm.numBytesAllocated -= b.size;
      b.destroy();
    }
    list.length = 0;
  }
  bm.numFreeBuffers = 0;
  return bm.numBytesAllocated;
}

const TINY_TEXT: ClipTextConfig = {
  ...SD15_TEXT,
  hiddenSize: 64,
  intermediateSize: 128,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
};

/**
 * Run the benchmark with `args`.
 *
 * @example
 * ```ts
 * import gpuKernels from "./gpu_kernels.ts";
 * await gpuKernels(["--tiny", "--only", "matmul", "--runs", "1"]);
 * ```
 */
export default async function gpuKernels(args: string[]): Promise<KernelBenchRow[]> {
  const { values } = parseArgs({
    args,
    options: {
      tiny: { type: "boolean", default: false },
      only: { type: "string", default: "attention,matmul,conv,unet,clip,vae,epoch" },
      warmup: { type: "string", default: "1" },
      runs: { type: "string", default: "5" },
      "gemm-tile": { type: "string", default: "64" },
      "budget-s": { type: "string", default: "480" },
      "no-f16": { type: "boolean", default: false },
      "epoch-model": { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      "gpu_kernels: [--tiny] [--only attention,matmul,conv,unet,clip,vae,epoch] [--warmup 1] " +
        "[--runs 5] [--gemm-tile 64|128] [--budget-s 480] [--epoch-model DIR] [--no-f16] " +
        "[--out DIR]",
    );
    return [];
  }
  const tiny = values.tiny;
  // The models' rows run the texforce path with this GEMM tile (64 or 128).
  ON.gemmTile = Number(values["gemm-tile"]) === 128 ? 128 : 64;
  const only = new Set(values.only.split(","));
  const warmup = Number(values.warmup);
  const runs = Number(values.runs);
  const started = performance.now();
  const budgetMs = Number(values["budget-s"]) * 1000;
  // Before the backend starts: a device with shader-f16 where the adapter has it (f16 rows).
  const hasF16 = !values["no-f16"] && await requestShaderF16();
  await useBackend("webgpu");
  const info = currentBackend();
  const adapter = await (navigator as unknown as { gpu: GPU }).gpu.requestAdapter();
  const features = adapter ? [...adapter.features].sort().join(", ") : "?";
  console.log(
    `gpu_kernels on ${info.device}${tiny ? " (tiny shapes)" : ""}; features: ${features}`,
  );
  const rows: KernelBenchRow[] = [];
  const epochSeconds = new Map<string, { sampling: number; rewards: number; training: number }>();
  const outDir = values.out ?? Deno.env.get("OUT");
  const save = async () => {
    if (!outDir) return;
    await Deno.mkdir(outDir, { recursive: true });
    await Deno.writeTextFile(
      `${outDir}/gpu_kernels.json`,
      JSON.stringify({ device: info.device, features, tiny, rows }, null, 2),
    );
  };

  const time = async (
    work: string,
    path: string,
    kernels: Partial<WebgpuKernelOptions>,
    call: () => Promise<number>,
    flop?: number,
    reps = { warmup, runs },
  ): Promise<void> => {
    if (performance.now() - started > budgetMs) {
      rows.push({ work, path, medianMs: NaN, ms: [], tensorBytes: 0, skipped: "out of time" });
      console.log(`  ${work} [${path}]: skipped, past --budget-s`);
      return;
    }
    const before = setWebgpuKernels(kernels);
    try {
      const pool0 = trimPool();
      const ms: number[] = [];
      let tensorBytes = 0;
      for (let i = 0; i < reps.warmup + reps.runs; i++) {
        const t0 = performance.now();
        tensorBytes = await call();
        if (i >= reps.warmup) ms.push(performance.now() - t0);
      }
      const m = median(ms);
      const ref = tiny ? undefined : PYTORCH_FP32_MS[work];
      const ref16 = tiny ? undefined : PYTORCH_FP16_MS[work];
      const mem = tf.memory() as tf.MemoryInfo & { numBytesAllocatedInGPU?: number };
      rows.push({
        work,
        path,
        medianMs: m,
        ms,
        flop,
        tflops: flop ? flop / (m * 1e-3) / 1e12 : undefined,
        vsPytorch: ref ? m / ref : undefined,
        vsPytorchFp16: ref16 ? m / ref16 : undefined,
        tensorBytes,
        gpuPoolBytes: mem.numBytesAllocatedInGPU,
        peakGpuBytes: pool0 === undefined ? undefined : mem.numBytesAllocatedInGPU,
      });
      console.log(`  ${work} [${path}]: ${m.toFixed(2)} ms`);
    } catch (e) {
      rows.push({
        work,
        path,
        medianMs: NaN,
        ms: [],
        tensorBytes: 0,
        skipped: (e as Error).message.split("\n")[0],
      });
      console.log(`  ${work} [${path}]: failed: ${(e as Error).message.split("\n")[0]}`);
    } finally {
      setWebgpuKernels(before);
      await save();
    }
  };

  if (only.has("attention")) {
    // SD 1.5's first self-attention at 64×64 latents, CFG batch 2: 2 × 8 heads × 4096 × 40.
    const [b, l, heads, d] = tiny ? [1, 300, 2, 40] : [2, 4096, 8, 40];
    const q = tf.randomNormal([b, l, heads * d]);
    const k = tf.randomNormal([b, l, heads * d]);
    const v = tf.randomNormal([b, l, heads * d]);
    const flop = 4 * b * heads * l * l * d;
    const label = `attention ${b * heads}×${l}×${d}`;
    const variants: [string, (a: tf.Tensor, bb: tf.Tensor, c: tf.Tensor) => tf.Tensor][] = [
      ["stock", (a, bb, c) => multiHeadAttention(a, bb, c, heads)],
      ["texforce", (a, bb, c) => flashAttention(a, bb, c, { heads })],
    ];
    for (const [path, f] of variants) {
      await time(label, path, {}, async () => {
        const y = f(q, k, v);
        await y.data();
        const bytes = tf.memory().numBytes;
        y.dispose();
        return bytes;
      }, flop);
    }
    for (const [path, f] of variants) {
      // Forward + backward: 2 products forward, 5 backward (FlashAttention's count, without
      // the recomputation the tiled kernel adds).
      await time(`${label} fwd+bwd`, path, {}, async () => {
        let bytes = 0;
        const gs = tf.grads((a: tf.Tensor, bb: tf.Tensor, c: tf.Tensor) => {
          const y = f(a, bb, c);
          bytes = tf.memory().numBytes;
          return y.sum();
        })([q, k, v]);
        await Promise.all(gs.map((g) => g.data()));
        tf.dispose(gs);
        return bytes;
      }, flop * 3.5);
    }
    tf.dispose([q, k, v]);
  }

  if (only.has("matmul")) {
    for (const n of tiny ? [256] : [2048, 4096]) {
      const a = tf.randomNormal([n, n]);
      const bm = tf.randomNormal([n, n]);
      for (
        const [path, f, tile] of [
          ["stock", () => tf.matMul(a, bm), 64],
          ["texforce", () => tiledMatMul(a, bm), 64],
          ["texforce tile 128", () => tiledMatMul(a, bm), 128],
          ...(hasF16 ? [["texforce f16", () => tiledMatMul(a, bm), 64] as const] : []),
        ] as const
      ) {
        const f16 = path.endsWith("f16");
        await time(`matmul ${n}²`, path, { gemmTile: tile, f16 }, async () => {
          const y = f();
          await y.data();
          y.dispose();
          return 3 * n * n * 4;
        }, 2 * n ** 3);
      }
      tf.dispose([a, bm]);
    }
  }

  if (only.has("conv")) {
    const [side, ch] = tiny ? [16, 32] : [64, 320];
    const x = tf.randomNormal([2, side, side, ch]) as tf.Tensor4D;
    const w = tf.randomNormal([3, 3, ch, ch], 0, 0.05) as tf.Tensor4D;
    const flop = 2 * 2 * side * side * ch * ch * 9;
    const label = `conv 3×3 2×${side}×${side}×${ch}→${ch}`;
    for (
      const [path, f, tile] of [
        ["stock", () => tf.conv2d(x, w, 1, "same"), 64],
        ["texforce", () => conv3x3(x, w), 64],
        ["texforce tile 128", () => conv3x3(x, w), 128],
        ...(hasF16 ? [["texforce f16", () => conv3x3(x, w), 64] as const] : []),
      ] as const
    ) {
      await time(label, path, { gemmTile: tile, f16: path.endsWith("f16") }, async () => {
        const y = f();
        await y.data();
        y.dispose();
        return x.size * 8;
      }, flop);
    }
    // Forward + the input and filter gradients (pre-training's case): three GEMMs of equal work.
    const dy = tf.randomNormal([2, side, side, ch]);
    for (
      const [path, f, tile] of [
        [
          "stock",
          (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, "same"),
          64,
        ],
        [
          "texforce",
          (a: tf.Tensor, b: tf.Tensor) =>
            conv3x3(a as tf.Tensor4D, b as tf.Tensor4D, undefined, { weightGrad: true }),
          64,
        ],
        [
          "texforce tile 128",
          (a: tf.Tensor, b: tf.Tensor) =>
            conv3x3(a as tf.Tensor4D, b as tf.Tensor4D, undefined, { weightGrad: true }),
          128,
        ],
      ] as const
    ) {
      await time(`${label} fwd+dX+dW`, path, { gemmTile: tile }, async () => {
        const gs = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(a, b), dy)))([x, w]);
        await Promise.all(gs.map((g) => g.data()));
        tf.dispose(gs);
        return x.size * 8;
      }, 3 * flop);
    }
    tf.dispose([x, w, dy]);
  }

  if (only.has("unet")) {
    const config = parseUNetConfig(tiny ? TINY_UNET : SD15_UNET, "<bench config>");
    const t0 = performance.now();
    const unet = await UNet2DConditionModel.fromReader(config, new RandomWeightReader(1));
    console.log(
      `  UNet ${(unet.numParameters() / 1e6).toFixed(1)}M parameters built in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
    const side = config.sampleSize;
    const x = tf.randomNormal([2, side, side, config.inChannels]) as tf.Tensor4D;
    const states = tf.randomNormal([2, 77, config.crossAttentionDim[0]]) as tf.Tensor3D;
    const ts = [999, 500];
    const forward = async () => {
      const y = unet.forward(x, ts, states);
      await y.data();
      const bytes = tf.memory().numBytes;
      y.dispose();
      return bytes;
    };
    const backward = async () => {
      let bytes = 0;
      const g = tf.grad((s: tf.Tensor) => {
        const y = unet.forward(x, ts, s as tf.Tensor3D);
        bytes = tf.memory().numBytes;
        return y.square().mean();
      })(states);
      await g.data();
      g.dispose();
      return bytes;
    };
    await time("UNet forward", "stock", OFF, forward);
    await time("UNet forward", "texforce", ON, forward);
    await time("UNet forward+backward", "stock", OFF, backward);
    await time("UNet forward+backward", "texforce", ON, backward);
    unet.recomputeBlocks = true;
    await time("UNet forward+backward", "texforce+recompute", ON, backward);
    unet.recomputeBlocks = false;
    if (hasF16) {
      await time("UNet forward", "texforce f16", { ...ON, f16: true }, forward);
      await time("UNet forward+backward", "texforce f16", { ...ON, f16: true }, backward);
    }
    tf.dispose([x, states]);
    unet.dispose();
  }

  if (only.has("clip")) {
    const cfg = tiny ? TINY_TEXT : SD15_TEXT;
    const { model, lora, vars } = await clipWithBenchLora(cfg, 16);
    const ids = benchTokenIds(2);
    const call = async () => {
      let bytes = 0;
      const { value, grads } = tf.variableGrads(() => {
        const h = model.forward(ids, { lora }).lastHiddenState;
        bytes = tf.memory().numBytes;
        return tf.mean(tf.square(h)) as tf.Scalar;
      }, vars);
      await Promise.all(Object.values(grads).map((g) => g.data()));
      tf.dispose([value, ...Object.values(grads)]);
      return bytes;
    };
    await time("CLIP LoRA forward+backward", "stock", OFF, call);
    await time("CLIP LoRA forward+backward", "texforce", ON, call);
    ids.dispose();
    lora.dispose();
    model.dispose();
  }

  if (only.has("vae")) {
    const config = parseVaeConfig(
      tiny
        ? { block_out_channels: [32, 64], norm_num_groups: 8, layers_per_block: 1 }
        : { block_out_channels: [128, 256, 512, 512], layers_per_block: 2 },
      "<bench vae config>",
    );
    // The VAE's attention has q/k/v biases: no key is missing.
    const vae = await VaeDecoder.fromReader(config, new RandomWeightReader(3, /^$/));
    const side = tiny ? 16 : 64;
    const z = tf.randomNormal([1, side, side, config.latentChannels]) as tf.Tensor4D;
    const call = async () => {
      const img = vae.decode(z);
      await img.data();
      const bytes = tf.memory().numBytes;
      img.dispose();
      return bytes;
    };
    const label = `VAE decode ${side * 2 ** (config.blockOutChannels.length - 1)}²`;
    await time(label, "stock", OFF, call);
    await time(label, "texforce", ON, call);
    z.dispose();
    vae.dispose();
  }

  if (only.has("epoch")) {
    // One small TexForce epoch (sampling, reward, PPO update) on the tiny fixture model. The
    // trainer loads the model once per call: two epochs run, the second is the row.
    const model = values["epoch-model"] ?? await firstDir([
      ".gpu/tiny-sd",
      new URL("../tests/fixtures/sd-tiny/tiny-sd", import.meta.url).pathname,
    ]);
    // --tiny (lavapipe): 1 batch of 1 image, 2 DDIM steps, so the row finishes in minutes.
    const [steps, batches, batchSize] = tiny ? [2, 1, 1] : [10, 2, 2];
    const label =
      `TexForce epoch (tiny model, ${batches} × ${batchSize} images, ${steps} DDIM steps)`;
    if (!model) {
      rows.push({
        work: label,
        path: "",
        medianMs: NaN,
        ms: [],
        tensorBytes: 0,
        skipped: "no model",
      });
      console.log(`  ${label}: skipped, no tiny model (--epoch-model DIR)`);
    }
    for (const [path, kernels] of model ? [["stock", OFF], ["texforce", ON]] as const : []) {
      await time(
        label,
        path,
        kernels,
        async () => {
          const dir = await Deno.makeTempDir({ prefix: "texforce-gpu-epoch-" });
          try {
            const pipeline = parsePipeline({
              model,
              backend: "webgpu",
              rewards: [{ use: "brightness" }],
              prompts: { builtin: "tiny" },
              sampler: { steps, batchSize },
              train: { epochs: 2, batchesPerEpoch: batches, batchSize },
              output: { dir, saveImages: false, exportFormats: [] },
            });
            const registry = new PluginRegistry([
              clipLoraEncoderPlugin,
              ddimSamplerPlugin,
              adamwPlugin,
              brightnessPlugin,
            ]);
            await train(pipeline, { registry, log: () => {} });
            const epochs = (await readMetrics(dir)).filter((r) => r.type === "epoch");
            const last = epochs[epochs.length - 1];
            epochSeconds.set(path, {
              sampling: Number(last.seconds_sampling),
              rewards: Number(last.seconds_rewards),
              training: Number(last.seconds_training),
            });
            return tf.memory().numBytes;
          } finally {
            await Deno.remove(dir, { recursive: true });
          }
        },
        undefined,
        { warmup: 0, runs: 1 },
      );
      // The row is the second epoch alone, not the whole call.
      const row = rows[rows.length - 1];
      const e = epochSeconds.get(path);
      if (row && !row.skipped && e) {
        row.medianMs = (e.sampling + e.rewards + e.training) * 1000;
        row.ms = [row.medianMs];
        row.detail = `sampling ${e.sampling.toFixed(2)} s, rewards ${e.rewards.toFixed(2)} s, ` +
          `training ${e.training.toFixed(2)} s`;
      }
    }
  }

  printTable(rows, info.device);
  await save();
  if (outDir) console.log(`wrote ${outDir}/gpu_kernels.json`);
  return rows;
}

function printTable(rows: KernelBenchRow[], device: string): void {
  const stock = new Map(rows.filter((r) => r.path === "stock").map((r) => [r.work, r.medianMs]));
  console.log(`\n${device}`);
  console.log(
    "| work | path | median ms | TFLOP/s | × PyTorch fp32 | × PyTorch fp16 | vs stock | " +
      "peak GPU | tensors |",
  );
  console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows) {
    if (r.skipped) {
      console.log(`| ${r.work} | ${r.path} | skipped: ${r.skipped} | | | | | | |`);
      continue;
    }
    const s = stock.get(r.work);
    const cells = [
      r.detail ? `${r.work} (${r.detail})` : r.work,
      r.path,
      r.medianMs.toFixed(2),
      r.tflops ? r.tflops.toPrecision(3) : "—",
      r.vsPytorch ? r.vsPytorch.toFixed(2) : "—",
      r.vsPytorchFp16 ? r.vsPytorchFp16.toFixed(2) : "—",
      s && r.path !== "stock" ? (s / r.medianMs).toFixed(1) + "×" : "—",
      r.peakGpuBytes !== undefined ? formatBytes(r.peakGpuBytes) : "—",
      formatBytes(r.tensorBytes),
    ];
    console.log(`| ${cells.join(" | ")} |`);
  }
}

async function firstDir(paths: string[]): Promise<string | undefined> {
  for (const p of paths) {
    try {
      if ((await Deno.stat(p)).isDirectory) return p;
    } catch { /* next */ }
  }
  return undefined;
}

if (import.meta.main) await gpuKernels(Deno.args);
