// The UNet benchmark shared by bench/unet.ts (wasm here) and bench/unet_gpu.ts (WebGPU on the GPU
// machine): an SD 1.5 UNet with random weights built in memory, timed forward and forward +
// backward into the encoder hidden states. Imports nothing native, so it bundles.
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { type BackendName, currentBackend, useBackend } from "../core/backend.ts";
import { parseUNetConfig, UNet2DConditionModel } from "../adapters/unet/unet_2d_condition.ts";
import { RandomWeightReader } from "../adapters/unet/random_weight_reader.ts";
import { SeededNoise } from "../core/seeded_noise.ts";
import { formatBytes, peakRss } from "./_peak_rss.ts";
import { segmentCount, type SegmentTiming, timeSegments } from "./_unet_streamed.ts";
import { median } from "./_call_timer.ts";

/** SD 1.5's `unet/config.json` (the fields that differ from diffusers' defaults, and a few that don't). */
export const SD15_UNET: Record<string, unknown> = {
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  attention_head_dim: 8,
  cross_attention_dim: 768,
  norm_num_groups: 32,
  sample_size: 64,
};

/**
 * The test fixture's UNet shape, for checking a bench itself quickly (`--tiny`).
 *
 * @example
 * ```ts
 * import { TINY_UNET } from "./_unet_bench.ts";
 * console.log(TINY_UNET.block_out_channels);
 * ```
 */
export const TINY_UNET: Record<string, unknown> = {
  block_out_channels: [32, 64, 64],
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  layers_per_block: 2,
  attention_head_dim: 2,
  cross_attention_dim: 32,
  norm_num_groups: 8,
  sample_size: 16,
};

/** One timed phase. */
export interface PhaseResult {
  /** What ran. */
  phase: "forward" | "forward+backward";
  /** Latent side. */
  latent: number;
  /** Batch. */
  batch: number;
  /** Timed runs in ms. */
  ms: number[];
  /** Median of those. */
  medianMs: number;
  /** Peak RSS of the process after the phase (bytes; streamed: the largest segment process). */
  peakRssBytes: number;
  /** tfjs' tensor bytes after the phase (0 when streamed). */
  tensorBytes: number;
  /** Why it did not run, when skipped. */
  skipped?: string;
}

/** The whole benchmark result (written as JSON). */
export interface UNetBenchResult {
  /** Backend and device. */
  backend: string;
  /** Device description. */
  device: string;
  /** `sd15` or `tiny`. */
  model: string;
  /** Parameters. */
  parameters: number;
  /** Time to build the random weights (ms). */
  buildMs: number;
  /** Query slice used in attention (0 = none). */
  attentionSlice: number;
  /** Phases (in streamed mode, sums over the segments). */
  phases: PhaseResult[];
  /** Per-segment timings, in streamed mode. */
  segments?: SegmentTiming[];
}

const SEGMENT_MARK = "@@segment ";

/** Parse the arguments, run, print a table, and write `unet_<backend>.json` under `outDir`. */
export async function runUNetBench(
  args: string[],
  defaults: { backend: BackendName; outDir?: string },
): Promise<UNetBenchResult> {
  const { values } = parseArgs({
    args,
    options: {
      backend: { type: "string", default: defaults.backend },
      tiny: { type: "boolean", default: false },
      latent: { type: "string" },
      "backward-latent": { type: "string" },
      batch: { type: "string", default: "2" },
      warmup: { type: "string", default: "1" },
      runs: { type: "string", default: "2" },
      slice: { type: "string" },
      "forward-only": { type: "boolean", default: false },
      stream: { type: "boolean" },
      segment: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      "unet bench: [--backend wasm|webgpu|cpu] [--tiny] [--latent 64] [--backward-latent N] " +
        "[--batch 2] [--warmup 1] [--runs 2] [--slice N] [--forward-only] [--stream] [--out DIR]\n" +
        "  --stream: time block by block, one block's weights resident at a time (default on " +
        "wasm for SD 1.5, whose weights do not fit the 4 GiB wasm heap next to XNNPACK's packed " +
        "conv filters)",
    );
    Deno.exit(0);
  }
  const backend = values.backend as BackendName;
  await useBackend(backend);
  const info = currentBackend();
  const isWasm = info.name === "wasm";
  const raw = values.tiny ? TINY_UNET : SD15_UNET;
  const config = parseUNetConfig(raw, values.tiny ? "<tiny config>" : "<SD 1.5 config>");
  const latent = Number(values.latent ?? config.sampleSize);
  // wasm32 has a 4 GiB heap: slice the attention, and back-propagate at a smaller latent, since
  // the tape holds every attention matrix (5 × 1 GiB at 64×64, batch 2).
  const slice = Number(values.slice ?? (isWasm && !values.tiny ? 256 : 0));
  const bwdLatent = Number(values["backward-latent"] ?? (isWasm && !values.tiny ? 32 : latent));
  const batch = Number(values.batch);
  const warmup = Number(values.warmup);
  const runs = Number(values.runs);

  const result: UNetBenchResult = {
    backend: info.name,
    device: info.device,
    model: values.tiny ? "tiny" : "sd15",
    parameters: 0,
    buildMs: 0,
    attentionSlice: slice,
    phases: [],
  };
  const wholeModel = async (): Promise<void> => {
    const t0 = performance.now();
    const unet = await UNet2DConditionModel.fromReader(config, new RandomWeightReader(1));
    const buildMs = performance.now() - t0;
    unet.attentionSlice = slice;
    result.parameters = unet.numParameters();
    result.buildMs = buildMs;
    console.log(
      `${result.model} UNet: ${(result.parameters / 1e6).toFixed(1)}M parameters, built in ` +
        `${(buildMs / 1000).toFixed(1)} s on ${info.name} (${info.device}); attention slice ${
          slice || "off"
        }`,
    );
    const gen = new SeededNoise(7);
    const timesteps = Array.from(
      { length: batch },
      (_, i) => 999 - Math.round((i * 998) / Math.max(1, batch - 1)),
    );
    const states = gen.normal([batch, 77, config.crossAttentionDim[0]]) as tf.Tensor3D;

    const phase = async (
      name: PhaseResult["phase"],
      side: number,
      run: (x: tf.Tensor4D) => tf.Tensor,
    ): Promise<void> => {
      const x = gen.normal([batch, side, side, config.inChannels]) as tf.Tensor4D;
      const ms: number[] = [];
      for (let i = 0; i < warmup + runs; i++) {
        const s = performance.now();
        const y = run(x);
        await y.data();
        y.dispose();
        const dt = performance.now() - s;
        if (i >= warmup) ms.push(dt);
        console.log(
          `  ${name} ${side}×${side} ${i < warmup ? "warm-up" : `run ${i - warmup + 1}`}: ${
            dt.toFixed(0)
          } ms`,
        );
      }
      x.dispose();
      result.phases.push({
        phase: name,
        latent: side,
        batch,
        ms,
        medianMs: median(ms),
        peakRssBytes: peakRss(),
        tensorBytes: tf.memory().numBytes,
      });
    };

    await phase("forward", latent, (x) => unet.forward(x, timesteps, states));
    if (!values["forward-only"]) {
      const grad = (x: tf.Tensor4D) =>
        tf.grad((e: tf.Tensor) => unet.forward(x, timesteps, e as tf.Tensor3D).square().mean())(
          states,
        );
      await phase("forward+backward", bwdLatent, grad);
    }
    states.dispose();
    unet.dispose();
  };
  const stream = values.stream ?? (isWasm && !values.tiny);
  if (stream) {
    console.log(
      `${
        values.tiny ? "tiny" : "sd15"
      } UNet streamed block by block on ${info.name} (${info.device}); ` +
        `attention slice ${slice || "off"}; forward ${latent}×${latent}, forward+backward ` +
        `${values["forward-only"] ? "skipped" : `${bwdLatent}×${bwdLatent}`}, batch ${batch}`,
    );
    const opts = {
      batch,
      latent,
      bwdLatent: values["forward-only"] ? 0 : bwdLatent,
      warmup,
      runs,
      slice,
    };
    if (values.segment !== undefined) {
      // Child mode: one segment in this (fresh) process; the parent reads the marked line.
      const [seg] = await timeSegments(
        config,
        { ...opts, only: Number(values.segment) },
        (s) => console.log(s),
      );
      console.log(`${SEGMENT_MARK}${JSON.stringify({ ...seg, peakRssBytes: peakRss() })}`);
      return result;
    }
    // Each segment runs in its own process: the wasm heap never shrinks and fragments, so a
    // later large segment could fail to allocate after an earlier one.
    const segs: SegmentTiming[] = [];
    let peak = 0;
    for (let k = 0; k < segmentCount(config); k++) {
      const child = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--unstable-webgpu",
          new URL("./unet.ts", import.meta.url).href,
          ...args,
          "--stream",
          "--segment",
          String(k),
        ],
        stdout: "piped",
        stderr: "inherit",
      }).output();
      const text = new TextDecoder().decode(child.stdout);
      const line = text.split("\n").find((l) => l.startsWith(SEGMENT_MARK));
      for (const l of text.split("\n")) if (l.startsWith("  ")) console.log(l);
      if (!child.success || !line) throw new Error(`segment ${k} failed (exit code ${child.code})`);
      const seg = JSON.parse(line.slice(SEGMENT_MARK.length));
      peak = Math.max(peak, seg.peakRssBytes);
      delete seg.peakRssBytes;
      segs.push(seg);
    }
    result.segments = segs;
    result.parameters = segs.reduce((a, s) => a + s.parameters, 0);
    const sum = (pick: (s: SegmentTiming) => number[], run: number) =>
      segs.reduce((a, s) => a + pick(s)[run], 0);
    for (
      const [name, side, pick] of [
        ["forward", latent, (s: SegmentTiming) => s.forwardMs],
        ["forward+backward", bwdLatent, (s: SegmentTiming) => s.backwardMs],
      ] as const
    ) {
      if (!pick(segs[0]).length) continue;
      const ms = Array.from({ length: runs }, (_, i) => sum(pick, i));
      result.phases.push({
        phase: name,
        latent: side,
        batch,
        ms,
        medianMs: median(ms),
        peakRssBytes: peak,
        tensorBytes: 0,
      });
    }
  } else {
    await wholeModel();
  }
  const rows = result.phases.map((p) =>
    `| ${p.phase} | ${p.latent}×${p.latent} | ${p.batch} | ${p.medianMs.toFixed(0)} | ` +
    `${p.ms.map((m) => m.toFixed(0)).join(", ")} | ${formatBytes(p.peakRssBytes)} |`
  );
  console.log(
    [
      `\nUNet ${result.model}, ${info.name} (${info.device})`,
      "| phase | latent | batch | median ms | runs ms | peak RSS |",
      "| --- | --- | --- | --- | --- | --- |",
      ...rows,
    ].join("\n"),
  );
  const outDir = values.out ?? defaults.outDir;
  if (outDir) {
    await Deno.mkdir(outDir, { recursive: true });
    const file = `${outDir}/unet_${info.name}${values.tiny ? "_tiny" : ""}.json`;
    await Deno.writeTextFile(file, JSON.stringify(result, null, 2));
    console.log(`wrote ${file}`);
  }
  return result;
}
