/**
 * Stock tfjs WebGPU vs texforce's WebGPU kernels, on the GPU machine: attention at 4096 tokens,
 * matmul 2048² and 4096², the 3×3 conv 2×64×64×320 → 320, the SD 1.5 UNet forward and forward + backward into the encoder
 * states (random weights, CFG batch 2, 64×64 latents), the CLIP ViT-L text encoder with LoRA r16
 * forward + backward, and the VAE decode to 512². Prints median ms, TFLOP/s where the work is
 * counted exactly, the ratio to PyTorch on an H200 (`../shared/gpu/README.md`) and the speed-up
 * over stock; writes `gpu_kernels.json` under `$OUT` (or `--out`).
 *
 * Bundles (imports nothing native): `../shared/gpu/prepare.sh bench/gpu_kernels.ts`, then on the
 * device `bash .gpu/remote.sh [--only attention,matmul,conv,unet,clip,vae] [--runs 5]`. Here:
 * `deno task bench gpu_kernels --tiny` runs small shapes on lavapipe (a functional check only:
 * lavapipe is a CPU rasteriser, its timings say nothing about a GPU).
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
import { parseUNetConfig, UNet2DConditionModel } from "../adapters/unet/unet_2d_condition.ts";
import { RandomWeightReader } from "../adapters/unet/random_weight_reader.ts";
import { type ClipTextConfig, ClipTextModel } from "../adapters/clip/clip_text_model.ts";
import { LoraAdapter, LoraStack } from "../adapters/lora/lora.ts";
import { parseVaeConfig, VaeDecoder } from "../adapters/vae/vae_decoder.ts";
import { RandomClipWeights, SD15_TEXT } from "./clip.ts";
import { SD15_UNET, TINY_UNET } from "./_unet_bench.ts";
import { formatBytes } from "./_peak_rss.ts";

/** PyTorch 2.11 fp32 on the H200 (medians, ms), from `../shared/gpu/README.md`. */
const PYTORCH_FP32_MS: Record<string, number> = {
  "matmul 2048²": 0.345,
  "matmul 4096²": 2.68,
  "conv 3×3 2×64×64×320→320": 0.518,
  "UNet forward": 71.7,
  "UNet forward+backward": 147,
  "CLIP LoRA forward+backward": 36.2,
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
  /** Tensor bytes alive at the end of the forward pass (the backward's tape) or after the call. */
  tensorBytes: number;
  /** tfjs' WebGPU buffer pool size after the row (a high-water mark of GPU memory). */
  gpuPoolBytes?: number;
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

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

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
      only: { type: "string", default: "attention,matmul,conv,unet,clip,vae" },
      warmup: { type: "string", default: "1" },
      runs: { type: "string", default: "5" },
      "gemm-tile": { type: "string", default: "64" },
      out: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      "gpu_kernels: [--tiny] [--only attention,matmul,conv,unet,clip,vae] [--warmup 1] [--runs 5] " +
        "[--gemm-tile 64|128] [--out DIR]",
    );
    return [];
  }
  const tiny = values.tiny;
  // The models' rows run the texforce path with this GEMM tile (64 or 128).
  ON.gemmTile = Number(values["gemm-tile"]) === 128 ? 128 : 64;
  const only = new Set(values.only.split(","));
  const warmup = Number(values.warmup);
  const runs = Number(values.runs);
  await useBackend("webgpu");
  const info = currentBackend();
  const adapter = await (navigator as unknown as { gpu: GPU }).gpu.requestAdapter();
  const features = adapter ? [...adapter.features].sort().join(", ") : "?";
  console.log(
    `gpu_kernels on ${info.device}${tiny ? " (tiny shapes)" : ""}; features: ${features}`,
  );
  const rows: KernelBenchRow[] = [];

  const time = async (
    work: string,
    path: string,
    kernels: Partial<WebgpuKernelOptions>,
    call: () => Promise<number>,
    flop?: number,
  ): Promise<void> => {
    const before = setWebgpuKernels(kernels);
    try {
      const ms: number[] = [];
      let tensorBytes = 0;
      for (let i = 0; i < warmup + runs; i++) {
        const t0 = performance.now();
        tensorBytes = await call();
        if (i >= warmup) ms.push(performance.now() - t0);
      }
      const m = median(ms);
      const ref = tiny ? undefined : PYTORCH_FP32_MS[work];
      const mem = tf.memory() as tf.MemoryInfo & { numBytesAllocatedInGPU?: number };
      rows.push({
        work,
        path,
        medianMs: m,
        ms,
        flop,
        tflops: flop ? flop / (m * 1e-3) / 1e12 : undefined,
        vsPytorch: ref ? m / ref : undefined,
        tensorBytes,
        gpuPoolBytes: mem.numBytesAllocatedInGPU,
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
        ] as const
      ) {
        await time(`matmul ${n}²`, path, { gemmTile: tile }, async () => {
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
      ] as const
    ) {
      await time(label, path, { gemmTile: tile }, async () => {
        const y = f();
        await y.data();
        y.dispose();
        return x.size * 8;
      }, flop);
    }
    tf.dispose([x, w]);
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
    tf.dispose([x, states]);
    unet.dispose();
  }

  if (only.has("clip")) {
    const cfg = tiny ? TINY_TEXT : SD15_TEXT;
    const model = await ClipTextModel.fromSource(new RandomClipWeights(cfg), cfg);
    const lora = new LoraStack();
    lora.add(LoraAdapter.create("default", model.linearShapes(), { rank: 16, alpha: 16, seed: 0 }));
    for (const m of lora.get("default").modules.values()) {
      tf.tidy(() => m.b.assign(tf.randomNormal(m.b.shape, 0, 0.01, "float32", 1)));
    }
    const vars = [...lora.trainableVariables().values()];
    const rowsIds = [0, 1].map((b) => {
      const row = [49406];
      for (let j = 1; j < 76; j++) row.push((b * 7919 + j * 104729) % 49406);
      row.push(49407);
      return row;
    });
    const ids = tf.tensor2d(rowsIds, [2, 77], "int32");
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

  printTable(rows, info.device);
  const outDir = values.out ?? Deno.env.get("OUT");
  if (outDir) {
    await Deno.mkdir(outDir, { recursive: true });
    const file = `${outDir}/gpu_kernels.json`;
    await Deno.writeTextFile(
      file,
      JSON.stringify({ device: info.device, features, tiny, rows }, null, 2),
    );
    console.log(`wrote ${file}`);
  }
  return rows;
}

function printTable(rows: KernelBenchRow[], device: string): void {
  const stock = new Map(rows.filter((r) => r.path === "stock").map((r) => [r.work, r.medianMs]));
  console.log(`\n${device}`);
  console.log(
    "| work | path | median ms | TFLOP/s | × PyTorch fp32 | speed-up vs stock | tensors |",
  );
  console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows) {
    if (r.skipped) {
      console.log(`| ${r.work} | ${r.path} | failed: ${r.skipped} | | | | |`);
      continue;
    }
    const s = stock.get(r.work);
    console.log(
      `| ${r.work} | ${r.path} | ${r.medianMs.toFixed(2)} | ${
        r.tflops ? r.tflops.toPrecision(3) : "—"
      } | ${r.vsPytorch ? r.vsPytorch.toFixed(2) : "—"} | ${
        s && r.path !== "stock" ? (s / r.medianMs).toFixed(1) + "×" : "—"
      } | ${formatBytes(r.tensorBytes)} |`,
    );
  }
}

if (import.meta.main) await gpuKernels(Deno.args);
