/**
 * Stable Diffusion's denoiser: diffusers' `UNet2DConditionModel` (SD 1.x and 2.x configs) on
 * NHWC tensors, loaded from a diffusers `unet/` folder. Weights are plain tensors (not
 * variables), so the model is frozen, yet the forward pass is differentiable with respect to its
 * inputs (the text encoder's hidden states), which is what TexForce back-propagates through.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import { readJsonFile } from "../../core/io/model_folder.ts";
import { openWeights } from "../../core/io/weights.ts";
import { conv2d, type Conv2dWeights, loadConv2d } from "../nn/conv2d.ts";
import { keepFrozenCopies, releaseFrozenCopies } from "../nn/frozen_copies.ts";
import { groupNormThenSilu, type GroupNormWeights, loadGroupNorm } from "../nn/group_norm.ts";
import { WeightReader } from "../nn/weight_reader.ts";
import type { LinearRegistry } from "./_linear_registry.ts";
import {
  loadTimestepEmbedding,
  sinusoidalTimestepEmbedding,
  timestepEmbedding,
  type TimestepEmbeddingWeights,
} from "./timestep_embedding.ts";
import {
  type BlockSettings,
  downBlock,
  type DownBlockWeights,
  loadDownBlock,
  loadMidBlock,
  loadUpBlock,
  midBlock,
  type MidBlockWeights,
  upBlock,
  type UpBlockWeights,
} from "./unet_blocks.ts";
import { parseUNetConfig, type UNetConfig } from "./unet_config.ts";
import { mergeUNetLora, type UNetLora } from "./unet_lora.ts";
import type { Tensor, Tensor2D, Tensor3D, Tensor4D } from "../../core/tensor_types.ts";
import { recomputed } from "../nn/recompute.ts";
import { silu } from "./_activations.ts";
import { webgpuKernels } from "../webgpu/kernel_options.ts";
import { SampleWorkers, tapeOn } from "./_sample_workers.ts";
import { wasmThreadsInUse, wasmThreadsToShare } from "../../core/backend.ts";
import { KernelReplay } from "../wasm/kernel_replay.ts";
import { wasmKernelsVersion } from "../wasm/kernel_options.ts";

export { parseUNetConfig, type UNetConfig } from "./unet_config.ts";
export { loadUNetLora, type LoraPair, type UNetLora } from "./unet_lora.ts";

/**
 * All weights of a UNet.
 *
 * @example
 * ```ts
 * import type { UNetWeights } from "@texforce/core/adapters";
 * declare const w: UNetWeights;
 * console.log(w.down.length, w.up.length);
 * ```
 */
export interface UNetWeights {
  /** Timestep MLP. */
  timeEmbedding: TimestepEmbeddingWeights;
  /** Input conv. */
  convIn: Conv2dWeights;
  /** Down path. */
  down: DownBlockWeights[];
  /** Mid block (absent when the config has none). */
  mid?: MidBlockWeights;
  /** Up path. */
  up: UpBlockWeights[];
  /** Output GroupNorm. */
  convNormOut: GroupNormWeights;
  /** Output conv. */
  convOut: Conv2dWeights;
}

/**
 * Options of {@linkcode UNet2DConditionModel.load}.
 *
 * @example
 * ```ts
 * import { UNet2DConditionModel, type UNetLoadOptions } from "@texforce/core/adapters";
 * const o: UNetLoadOptions = { variant: "fp16" };
 * const unet = await UNet2DConditionModel.load("sd15", o);
 * ```
 */
export interface UNetLoadOptions {
  /** Weight variant, e.g. `fp16` (`diffusion_pytorch_model.fp16.safetensors`). */
  variant?: string;
}

/**
 * A UNet's config and weights as plain values (each tensor as its shape and values), which
 * structured cloning can send to a worker (`UNet2DConditionModel.snapshot` / `fromSnapshot`).
 *
 * @example
 * ```ts
 * import type { UNet2DConditionModel, UNetSnapshot } from "./unet_2d_condition.ts";
 * declare const unet: UNet2DConditionModel;
 * const s: UNetSnapshot = unet.snapshot();
 * console.log(s.config.inChannels);
 * ```
 */
export interface UNetSnapshot {
  /** The validated config. */
  config: UNetConfig;
  /** Where the weights came from. */
  source: string;
  /** The weight tree, tensors as `{ shape, dtype, values, tensor: true }`. */
  weights: unknown;
}

/** Parameters a UNet may have for sample workers to pay by default (each holds a copy). */
const SAMPLE_WORKERS_MAX_PARAMETERS = 64 << 20;

/**
 * A Stable Diffusion UNet.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { UNet2DConditionModel } from "@texforce/core/adapters";
 * const unet = await UNet2DConditionModel.load("stable-diffusion-v1-5");
 * const eps = unet.forward(tf.randomNormal([1, 64, 64, 4]), [999], tf.randomNormal([1, 77, 768]));
 * unet.dispose();
 * ```
 */
export class UNet2DConditionModel {
  /** The validated config. */
  readonly config: UNetConfig;
  /** Where the weights came from. */
  readonly source: string;
  /** Weight keys of the file that the model did not use (empty for a matching checkpoint). */
  readonly unusedWeights: string[];
  /**
   * Queries per attention chunk (0: all at once). Bounds the [B, heads, Lq, Lk] score matrix,
   * e.g. 1024 at 64×64 latents, and makes the backward pass recompute the attention
   * probabilities instead of keeping them (about 1 GiB per self-attention layer at 64×64,
   * batch 2); results and gradients do not change.
   */
  attentionSlice = 0;
  /**
   * Recompute each down, mid and up block's activations in the backward pass instead of keeping
   * them (gradients reach the sample and encoder states, not the UNet's weights): roughly a
   * third more compute for a tape that holds only block inputs. Default: the
   * `recomputeBlocks` switch of {@linkcode setWebgpuKernels} (off).
   */
  recomputeBlocks: boolean = webgpuKernels().recomputeBlocks;
  #w: UNetWeights;
  #linears: LinearRegistry;
  #workers: SampleWorkers | null = null;
  /** {@linkcode forwardShare}'s recorded kernel calls by shape and mode (null: not replayable). */
  #replays = new Map<string, KernelReplay | null | "seen">();

  private constructor(
    config: UNetConfig,
    source: string,
    w: UNetWeights,
    linears: LinearRegistry,
    unused: string[],
  ) {
    this.config = config;
    this.source = source;
    this.#w = w;
    this.#linears = linears;
    this.unusedWeights = unused;
    // The frozen weights' kernel-ready copies (packed linears, flipped conv filters) are made
    // once here instead of in every call: at batch 2 remaking them was ~370 of the forward +
    // backward pass's ~3300 kernels.
    keepFrozenCopies(w);
  }

  /**
   * Load from a diffusers `unet/` folder (`config.json` + safetensors) or from a pipeline folder
   * holding one.
   *
   * @example
   * ```ts
   * import { UNet2DConditionModel } from "@texforce/core/adapters";
   * const unet = await UNet2DConditionModel.load("sd15/unet", { variant: "fp16" });
   * ```
   */
  static async load(path: string, options: UNetLoadOptions = {}): Promise<UNet2DConditionModel> {
    let dir = path;
    try {
      await Deno.stat(join(path, "config.json"));
    } catch {
      dir = join(path, "unet");
    }
    const configFile = join(dir, "config.json");
    const raw = await readJsonFile<Record<string, unknown>>(configFile);
    if (raw._class_name !== undefined && raw._class_name !== "UNet2DConditionModel") {
      throw new Error(
        `${configFile}: field '_class_name' = ${
          JSON.stringify(raw._class_name)
        } is not supported ` +
          "(supported: UNet2DConditionModel)",
      );
    }
    const config = parseUNetConfig(raw, configFile);
    const source = await openWeights(dir, { variant: options.variant });
    try {
      return await UNet2DConditionModel.fromReader(config, new WeightReader(source));
    } finally {
      source.close();
    }
  }

  /**
   * Build from a config and a weight reader (any {@linkcode WeightReader}, e.g. one that makes
   * random weights for benchmarks).
   *
   * @example
   * ```ts
   * import { openWeights } from "@texforce/core";
   * import { parseUNetConfig, UNet2DConditionModel, WeightReader } from "@texforce/core/adapters";
   * const cfg = parseUNetConfig(JSON.parse(await Deno.readTextFile("unet/config.json")));
   * const unet = await UNet2DConditionModel.fromReader(cfg, new WeightReader(await openWeights("unet")));
   * ```
   */
  static async fromReader(config: UNetConfig, r: WeightReader): Promise<UNet2DConditionModel> {
    const c = config;
    const reg: LinearRegistry = new Map();
    const boc = c.blockOutChannels;
    const n = boc.length;
    const settings: BlockSettings = {
      tembChannels: c.timeEmbedDim,
      groups: c.normNumGroups,
      eps: c.normEps,
      outputScaleFactor: c.resnetOutScaleFactor,
    };
    const attnOf = (i: number) => ({
      heads: c.numAttentionHeads[i],
      crossAttentionDim: c.crossAttentionDim[i],
      layers: c.transformerLayersPerBlock[i],
    });
    const convInPad = (c.convInKernel - 1) / 2;
    const w: Partial<UNetWeights> = {
      timeEmbedding: await loadTimestepEmbedding(
        r.child("time_embedding"),
        boc[0],
        c.timeEmbedDim,
        reg,
      ),
      convIn: await loadConv2d(r, "conv_in", c.inChannels, boc[0], c.convInKernel, 1, convInPad),
      down: [],
      up: [],
    };
    let out = boc[0];
    for (let i = 0; i < n; i++) {
      const inC = out;
      out = boc[i];
      w.down!.push(
        await loadDownBlock(
          r.child(`down_blocks.${i}`),
          inC,
          out,
          c.layersPerBlock[i],
          c.downBlockTypes[i] === "CrossAttnDownBlock2D" ? attnOf(i) : null,
          i < n - 1,
          c.downsamplePadding,
          settings,
          reg,
        ),
      );
    }
    if (c.midBlock) {
      w.mid = await loadMidBlock(r.child("mid_block"), boc[n - 1], attnOf(n - 1), {
        ...settings,
        outputScaleFactor: c.midBlockScaleFactor,
      }, reg);
    }
    // Up blocks mirror the down path: per-block settings are read reversed.
    const rev = <T>(xs: T[]) => [...xs].reverse();
    const rboc = rev(boc);
    const rHeads = rev(c.numAttentionHeads);
    const rCross = rev(c.crossAttentionDim);
    const rLayers = rev(c.layersPerBlock);
    const rTl = rev(c.transformerLayersPerBlock);
    out = rboc[0];
    for (let i = 0; i < n; i++) {
      const prev = out;
      out = rboc[i];
      const inC = rboc[Math.min(i + 1, n - 1)];
      w.up!.push(
        await loadUpBlock(
          r.child(`up_blocks.${i}`),
          inC,
          out,
          prev,
          rLayers[i] + 1,
          c.upBlockTypes[i] === "CrossAttnUpBlock2D"
            ? { heads: rHeads[i], crossAttentionDim: rCross[i], layers: rTl[i] }
            : null,
          i < n - 1,
          settings,
          reg,
        ),
      );
    }
    w.convNormOut = await loadGroupNorm(r, "conv_norm_out", boc[0], c.normNumGroups, c.normEps);
    w.convOut = await loadConv2d(
      r,
      "conv_out",
      boc[0],
      c.outChannels,
      c.convOutKernel,
      1,
      (c.convOutKernel - 1) / 2,
    );
    const unused = r.source.keys().filter((k) => k.startsWith(r.prefix) && !r.used.has(k));
    return new UNet2DConditionModel(config, r.source.path, w as UNetWeights, reg, unused);
  }

  /**
   * Predict the noise (or v / x₀, per the scheduler's prediction type) for `sample` [B, H, W, C]
   * at `timesteps` (one for all, or one per sample) given `encoderHiddenStates` [B, L, D].
   * Returns [B, H, W, outChannels]. Differentiable with respect to `sample` and the states.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { UNet2DConditionModel } from "@texforce/core/adapters";
   * declare const unet: UNet2DConditionModel;
   * const eps = unet.forward(tf.randomNormal([2, 64, 64, 4]), [999, 421], tf.randomNormal([2, 77, 768]));
   * ```
   */
  forward(
    sample: Tensor4D,
    timesteps: number | number[] | Tensor,
    encoderHiddenStates: Tensor3D,
  ): Tensor4D {
    const c = this.config;
    const b = sample.shape[0];
    let ts: number[];
    if (typeof timesteps === "number") ts = [timesteps];
    else if (Array.isArray(timesteps)) ts = timesteps;
    else ts = Array.from(timesteps.dataSync());
    if (ts.length === 1) ts = Array(b).fill(ts[0]);
    if (ts.length !== b) {
      throw new Error(`UNet.forward: ${ts.length} timesteps for a batch of ${b}`);
    }
    if (sample.shape[3] !== c.inChannels) {
      throw new Error(
        `UNet.forward: sample has ${sample.shape[3]} channels, the UNet takes ${c.inChannels}`,
      );
    }
    if (encoderHiddenStates.shape[0] !== b) {
      throw new Error(
        `UNet.forward: encoder states have batch ${encoderHiddenStates.shape[0]}, the sample ${b}`,
      );
    }
    if (this.#workers && b > 1 && tf.getBackend() === "wasm") {
      return this.#workers.forward(
        sample,
        ts,
        encoderHiddenStates,
        this.attentionSlice,
        (x, t, s) => this.forwardShare(x, t, s),
      );
    }
    return this.#forwardHere(sample, ts, encoderHiddenStates);
  }

  /**
   * The forward of a share of a batch whose sample takes no gradient, only the encoder states
   * do (the sample workers' calls, on this thread and in each worker): inputs as checked by
   * {@linkcode forward}, one timestep per sample. On wasm its kernel calls are recorded once
   * per shape and then replayed without tfjs' engine around each (adapters/wasm/
   * kernel_replay.ts), bit for bit the same; `TEXFORCE_KERNEL_REPLAY=off` runs them through
   * the engine.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { UNet2DConditionModel } from "./unet_2d_condition.ts";
   * declare const unet: UNet2DConditionModel;
   * const eps = unet.forwardShare(tf.zeros([1, 16, 16, 4]), [999], tf.zeros([1, 77, 32]));
   * ```
   */
  forwardShare(sample: Tensor4D, ts: number[], encoderHiddenStates: Tensor3D): Tensor4D {
    if (tf.getBackend() !== "wasm" || kernelReplaySetting() === "off") {
      return this.#forwardHere(sample, ts, encoderHiddenStates);
    }
    const tape = tapeOn();
    const key = [
      sample.shape,
      encoderHiddenStates.shape,
      this.attentionSlice,
      this.recomputeBlocks,
      tape,
      wasmThreadsToShare(),
      wasmKernelsVersion(),
    ].join("|");
    return tf.tidy(() => {
      const tEmb = this.#timestepInput(ts);
      const inputs = [sample, tEmb, encoderHiddenStates];
      const replay = this.#replayFor(key, inputs, tape);
      if (!replay) return this.#body(sample, tEmb, encoderHiddenStates);
      if (!tape) return replay.forward(inputs).output as Tensor4D;
      const f = tf.customGrad((s, save) => {
        const { output, saved } = replay.forward([sample, tEmb, s as Tensor3D]);
        (save as tf.GradSaveFunc)(saved);
        return {
          value: output,
          gradFunc: (dy: tf.Tensor | tf.Tensor[], kept: tf.Tensor[]) =>
            replay.backward(dy as tf.Tensor, kept),
        };
      });
      return f(encoderHiddenStates) as Tensor4D;
    });
  }

  // The recorded calls for `key`, or null to run through the engine: a shape's first call, and
  // any whose calls could not be recorded. The second call records them (a pass of their own,
  // whose results are dropped) and replays them; later ones replay.
  #replayFor(key: string, inputs: Tensor[], tape: boolean): KernelReplay | null {
    const known = this.#replays.get(key);
    if (known === null) return null;
    // A shape's first call runs through the engine unrecorded: the kernels it registers on
    // first use are then there to be recorded.
    if (known === undefined) {
      this.#replays.set(key, "seen");
      return null;
    }
    if (known !== "seen" && known.usable()) return known;
    if (known !== "seen") known.dispose();
    const region = ([x, e, s]: Tensor[]) => this.#body(x as Tensor4D, e as Tensor2D, s as Tensor3D);
    // The recording's own pass: its gradient and output are dropped (a tape outside it sees
    // nothing of it).
    let r: KernelReplay | string;
    try {
      if (!tape) r = KernelReplay.recordForward(inputs, region);
      else {
        const [b, h, w] = inputs[0].shape;
        const dy = tf.zeros([b, h, w, this.config.outChannels]);
        try {
          r = KernelReplay.recordGradient(inputs, region, dy);
        } finally {
          dy.dispose();
        }
      }
    } catch (e) {
      // The call itself then runs through the engine, and fails there if it must.
      r = `recording failed: ${e instanceof Error ? e.message : String(e)}`;
    }
    if (typeof r === "string") {
      if (kernelReplaySetting() === "verbose") {
        console.error(`UNet forwardShare: not replayed (${key}): ${r}`);
      }
      this.#replays.set(key, null);
      return null;
    }
    this.#replays.set(key, r);
    return r;
  }

  #dropReplays(): void {
    for (const r of this.#replays.values()) if (r instanceof KernelReplay) r.dispose();
    this.#replays.clear();
  }

  #timestepInput(ts: number[]): Tensor2D {
    const c = this.config;
    return sinusoidalTimestepEmbedding(ts, c.blockOutChannels[0], c.flipSinToCos, c.freqShift);
  }

  // The forward on this thread's backend (inputs checked, one timestep per sample).
  #forwardHere(sample: Tensor4D, ts: number[], encoderHiddenStates: Tensor3D): Tensor4D {
    return tf.tidy(() => this.#body(sample, this.#timestepInput(ts), encoderHiddenStates));
  }

  // The forward from the sinusoidal timestep embedding on: kernel calls alone, the same for
  // any values of a shape (what kernel_replay.ts records).
  #body(sample: Tensor4D, tEmb: Tensor2D, encoderHiddenStates: Tensor3D): Tensor4D {
    const w = this.#w;
    const c = this.config;
    const slice = this.attentionSlice;
    return tf.tidy(() => {
      // Every ResNet block activates the embedding by the same SiLU first: done once here.
      const emb = silu(timestepEmbedding(w.timeEmbedding, tEmb)) as Tensor2D;
      let x: Tensor4D = c.centerInputSample ? tf.sub(tf.mul(sample, 2), 1) : sample;
      x = conv2d(x, w.convIn);
      const skips: Tensor4D[] = [x];
      // With recomputeBlocks, each block keeps only its inputs for the backward pass and runs
      // again there (see adapters/nn/recompute.ts).
      const block = this.recomputeBlocks
        ? (f: (...xs: Tensor[]) => Tensor[], xs: Tensor[]) => recomputed(f, xs)
        : (f: (...xs: Tensor[]) => Tensor[], xs: Tensor[]) => f(...xs);
      const states = encoderHiddenStates;
      for (const d of w.down) {
        const [hidden, ...r] = block((xx, e, ctx) => {
          const o = downBlock(d, xx as Tensor4D, e as Tensor2D, ctx as Tensor3D, slice);
          return [o.hidden, ...o.skips];
        }, [x, emb, states]);
        x = hidden as Tensor4D;
        skips.push(...(r as Tensor4D[]));
      }
      if (w.mid) {
        const mid = w.mid;
        x = block(
          (xx, e, ctx) => [midBlock(mid, xx as Tensor4D, e as Tensor2D, ctx as Tensor3D, slice)],
          [x, emb, states],
        )[0] as Tensor4D;
      }
      for (const u of w.up) {
        const mine = skips.splice(skips.length - u.resnets.length, u.resnets.length);
        const next = skips[skips.length - 1];
        const size: [number, number] | undefined = u.upsampler && next
          ? [next.shape[1], next.shape[2]]
          : undefined;
        x = block(
          (xx, e, ctx, ...sk) => [
            upBlock(
              u,
              xx as Tensor4D,
              sk as Tensor4D[],
              e as Tensor2D,
              ctx as Tensor3D,
              slice,
              size,
            ),
          ],
          [x, emb, states, ...mine],
        )[0] as Tensor4D;
      }
      x = groupNormThenSilu(x, w.convNormOut) as Tensor4D;
      return conv2d(x, w.convOut);
    });
  }

  /**
   * Merge a LoRA into the weights: W += scale · alpha/r · up·down on every layer it targets.
   * Returns the number of layers changed; merging again with −scale removes it.
   *
   * @example
   * ```ts
   * import { loadUNetLora, type UNet2DConditionModel } from "@texforce/core/adapters";
   * declare const unet: UNet2DConditionModel;
   * const n = unet.mergeLora(await loadUNetLora("lora.safetensors"), 0.7);
   * ```
   */
  mergeLora(lora: UNetLora, scale = 1): number {
    // The workers' copies would keep the old weights, and recorded calls read them.
    this.stopSampleWorkers();
    this.#dropReplays();
    // Merging replaces linear weights: their copies go with them, the new ones get theirs.
    const linears = [...this.#linears.values()];
    releaseFrozenCopies(linears);
    try {
      return mergeUNetLora(this.#linears, lora, scale);
    } finally {
      keepFrozenCopies(linears);
    }
  }

  /**
   * Module paths of the linear (and 1×1 conv) layers a LoRA may target.
   *
   * @example
   * ```ts
   * import type { UNet2DConditionModel } from "@texforce/core/adapters";
   * declare const unet: UNet2DConditionModel;
   * console.log(unet.linearLayerNames().filter((n) => n.endsWith("attn2.to_k")).length);
   * ```
   */
  linearLayerNames(): string[] {
    return [...this.#linears.keys()];
  }

  /**
   * This model's config and weights as plain values, for {@linkcode fromSnapshot} in a worker.
   * Trainable weights (variables) are refused: a copy would not follow their updates.
   *
   * @example
   * ```ts
   * import type { UNet2DConditionModel } from "./unet_2d_condition.ts";
   * declare const unet: UNet2DConditionModel;
   * const copy = await UNet2DConditionModel.fromSnapshot(unet.snapshot());
   * ```
   */
  snapshot(): UNetSnapshot {
    const walk = (o: unknown, at: string): unknown => {
      if (o instanceof tf.Variable) {
        throw new Error(`UNet.snapshot: '${at}' is trainable; a copy would not follow it`);
      }
      if (o instanceof tf.Tensor) {
        return { shape: o.shape, dtype: o.dtype, values: o.dataSync(), tensor: true };
      }
      if (Array.isArray(o)) return o.map((v, i) => walk(v, `${at}[${i}]`));
      if (o && typeof o === "object") {
        return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, walk(v, `${at}.${k}`)]));
      }
      return o;
    };
    return { config: this.config, source: this.source, weights: walk(this.#w, "weights") };
  }

  /**
   * A model from a {@linkcode snapshot} (in a worker: on that thread's backend).
   *
   * @example
   * ```ts
   * import { UNet2DConditionModel, type UNetSnapshot } from "./unet_2d_condition.ts";
   * declare const s: UNetSnapshot;
   * const unet = await UNet2DConditionModel.fromSnapshot(s);
   * ```
   */
  static fromSnapshot(s: UNetSnapshot): Promise<UNet2DConditionModel> {
    const walk = (o: unknown): unknown => {
      if (Array.isArray(o)) return o.map(walk);
      if (o && typeof o === "object") {
        const t = o as {
          tensor?: boolean;
          shape: number[];
          dtype: tf.DataType;
          values: Float32Array;
        };
        if (t.tensor === true) return tf.tensor(t.values, t.shape, t.dtype);
        return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, walk(v)]));
      }
      return o;
    };
    const w = walk(s.weights) as UNetWeights;
    return Promise.resolve(new UNet2DConditionModel(s.config, s.source, w, new Map(), []));
  }

  /**
   * Share the samples of later calls (batches of 2 or more, on the wasm backend) between this
   * thread and `count` module workers, each with its own single-threaded wasm backend and a
   * copy of the weights (adapters/unet/_sample_workers.ts): at small batches a threaded
   * backend keeps only one core busy, whole samples keep them all. This thread's share runs
   * with its kernels held on this thread, beside the workers'. Outputs and gradients into the
   * encoder states are bitwise those of the model's own call. A tape may hold one such forward
   * at a time (the trainer's PPO step has one). `mergeLora` and `dispose` stop the workers.
   * Returns how many run.
   *
   * @example
   * ```ts
   * import type { UNet2DConditionModel } from "./unet_2d_condition.ts";
   * declare const unet: UNet2DConditionModel;
   * await unet.startSampleWorkers(1); // two shares: this thread's and the worker's
   * ```
   */
  async startSampleWorkers(count: number): Promise<number> {
    this.stopSampleWorkers();
    const n = Math.floor(count);
    if (!(n >= 1)) return 0;
    this.#workers = await SampleWorkers.start(this.snapshot(), n);
    return n;
  }

  /**
   * Whether sample workers pay by default for this model on `threads` cores: two cores at
   * least, and few enough parameters that a copy per worker is cheap (64 M; SD 1.5's UNet has
   * 860 M).
   *
   * @example
   * ```ts
   * import type { UNet2DConditionModel } from "./unet_2d_condition.ts";
   * declare const unet: UNet2DConditionModel;
   * if (unet.sampleWorkersPay(2)) await unet.startSampleWorkers(1);
   * ```
   */
  sampleWorkersPay(threads: number): boolean {
    return threads >= 2 && this.numParameters() <= SAMPLE_WORKERS_MAX_PARAMETERS;
  }

  /**
   * Start the sample workers the environment asks for (stopping any running):
   * `TEXFORCE_SAMPLE_WORKERS=off` none,
   * `=N` N (beside this thread); unset, one per wasm thread but this one where
   * {@linkcode sampleWorkersPay} (the running backend must be wasm with two threads or more).
   * Returns how many run.
   *
   * @example
   * ```ts
   * import type { UNet2DConditionModel } from "./unet_2d_condition.ts";
   * declare const unet: UNet2DConditionModel;
   * console.log(await unet.startDefaultSampleWorkers());
   * ```
   */
  async startDefaultSampleWorkers(): Promise<number> {
    // The shares' switch too is read here, so that a bad value stops a run before its calls.
    kernelReplaySetting();
    const asked = Deno.env.get("TEXFORCE_SAMPLE_WORKERS");
    if (asked === "off" || asked === "0") {
      this.stopSampleWorkers();
      return 0;
    }
    if (asked !== undefined) {
      const n = Number(asked);
      if (!Number.isInteger(n) || n < 0) {
        throw new Error(
          `TEXFORCE_SAMPLE_WORKERS must be off or a whole number of workers (got '${asked}')`,
        );
      }
      return await this.startSampleWorkers(n);
    }
    const threads = tf.getBackend() === "wasm" ? wasmThreadsInUse() : 0;
    if (!this.sampleWorkersPay(threads)) {
      this.stopSampleWorkers();
      return 0;
    }
    return await this.startSampleWorkers(threads - 1);
  }

  /**
   * How many sample workers run (0: none).
   *
   * @example
   * ```ts
   * import type { UNet2DConditionModel } from "./unet_2d_condition.ts";
   * declare const unet: UNet2DConditionModel;
   * console.log(unet.sampleWorkers);
   * ```
   */
  get sampleWorkers(): number {
    return this.#workers?.size ?? 0;
  }

  /**
   * Stop the sample workers, if any; later calls run on this thread's backend.
   *
   * @example
   * ```ts
   * import type { UNet2DConditionModel } from "./unet_2d_condition.ts";
   * declare const unet: UNet2DConditionModel;
   * unet.stopSampleWorkers();
   * ```
   */
  stopSampleWorkers(): void {
    this.#workers?.dispose();
    this.#workers = null;
  }

  /**
   * Number of parameters.
   *
   * @example
   * ```ts
   * import type { UNet2DConditionModel } from "@texforce/core/adapters";
   * declare const unet: UNet2DConditionModel;
   * console.log(unet.numParameters());
   * ```
   */
  numParameters(): number {
    let n = 0;
    const walk = (o: unknown): void => {
      if (o instanceof tf.Tensor) n += o.size;
      else if (o && typeof o === "object") { for (const v of Object.values(o)) walk(v); }
    };
    walk(this.#w);
    return n;
  }

  /**
   * Release the weights.
   *
   * @example
   * ```ts
   * import type { UNet2DConditionModel } from "@texforce/core/adapters";
   * declare const unet: UNet2DConditionModel;
   * unet.dispose();
   * ```
   */
  dispose(): void {
    this.stopSampleWorkers();
    this.#dropReplays();
    releaseFrozenCopies(this.#w);
    tf.dispose(this.#w as unknown as tf.TensorContainer);
    this.#linears.clear();
  }
}

// TEXFORCE_KERNEL_REPLAY: on (unset), off (forwardShare's kernels through tfjs' engine, for
// comparing) or verbose (on, and why a shape's calls could not be recorded, on stderr).
function kernelReplaySetting(): "on" | "off" | "verbose" {
  const v = Deno.env.get("TEXFORCE_KERNEL_REPLAY") ?? "on";
  if (v === "on" || v === "off" || v === "verbose") return v;
  throw new Error(`TEXFORCE_KERNEL_REPLAY must be on, off or verbose (got '${v}')`);
}
