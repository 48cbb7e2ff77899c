// The UNet timed block by block ("streamed"): each segment (stem, down blocks, mid block, up
// blocks, head) gets its own random weights, is timed on random inputs of the shapes it sees in
// the full model, and is released before the next. The sum over segments is the model's time;
// only one segment's weights are resident at once, which is what lets SD 1.5 (3.4 GiB of fp32
// weights, plus XNNPACK's packed copies of the conv filters) be timed inside wasm32's 4 GiB heap.
// Values never change the work done, so random inputs and output gradients time like real ones.
import * as tf from "@tensorflow/tfjs";
import { conv2d, loadConv2d } from "../adapters/nn/conv2d.ts";
import { groupNorm, loadGroupNorm } from "../adapters/nn/group_norm.ts";
import type { WeightReader } from "../adapters/nn/weight_reader.ts";
import type { UNetConfig } from "../adapters/unet/unet_config.ts";
import { RandomWeightReader } from "../adapters/unet/random_weight_reader.ts";
import {
  downBlock,
  loadDownBlock,
  loadMidBlock,
  loadUpBlock,
  midBlock,
  upBlock,
} from "../adapters/unet/unet_blocks.ts";
import { SeededNoise } from "../core/seeded_noise.ts";

/** One segment of the UNet: how to build it and run it on its differentiable inputs. */
interface Segment {
  name: string;
  /** Shapes of the differentiable inputs (the last one is the encoder states, when used). */
  inputs: number[][];
  build(r: WeightReader): Promise<unknown>;
  run(w: unknown, xs: tf.Tensor[]): tf.Tensor[];
}

/**
 * Segments of a UNet for `batch` latents of side `latent`, with `ctxLen` encoder tokens; the
 * time embedding they share is a random input, released by `dispose`.
 */
export function unetSegments(
  c: UNetConfig,
  batch: number,
  latent: number,
  ctxLen: number,
  slice: number,
): { segments: Segment[]; dispose(): void } {
  const B = batch;
  const boc = c.blockOutChannels;
  const n = boc.length;
  const settings = {
    tembChannels: c.timeEmbedDim,
    groups: c.normNumGroups,
    eps: c.normEps,
    outputScaleFactor: 1,
  };
  const attnOf = (i: number) => ({
    heads: c.numAttentionHeads[i],
    crossAttentionDim: c.crossAttentionDim[i],
    layers: c.transformerLayersPerBlock[i],
  });
  const ctxShape = [B, ctxLen, c.crossAttentionDim[0]];
  const gen = new SeededNoise(3);
  // Made here, outside the segments' tidy scopes, so it outlives them.
  const emb = gen.normal([B, c.timeEmbedDim]) as tf.Tensor2D;
  const temb = () => emb;
  const noCtx = emb as unknown as tf.Tensor3D;
  const segs: Segment[] = [];
  segs.push({
    name: "stem (conv_in)",
    inputs: [[B, latent, latent, c.inChannels]],
    build: (r) =>
      loadConv2d(r, "conv_in", c.inChannels, boc[0], c.convInKernel, 1, (c.convInKernel - 1) / 2),
    run: (w, [x]) => [conv2d(x as tf.Tensor4D, w as never)],
  });
  let side = latent;
  let ch = boc[0];
  const skips: [number, number][] = [[side, ch]];
  for (let k = 0; k < n; k++) {
    const inC = ch;
    ch = boc[k];
    // Copied: `build` runs later, after the loops below have moved `ch` on.
    const outC = ch;
    const cross = c.downBlockTypes[k] === "CrossAttnDownBlock2D";
    const s = side;
    segs.push({
      name: `down_blocks.${k}`,
      inputs: cross ? [[B, s, s, inC], ctxShape] : [[B, s, s, inC]],
      build: (r) =>
        loadDownBlock(
          r.child(`down_blocks.${k}`),
          inC,
          outC,
          c.layersPerBlock[k],
          cross ? attnOf(k) : null,
          k < n - 1,
          c.downsamplePadding,
          settings,
        ),
      run: (w, [x, ctx]) =>
        downBlock(w as never, x as tf.Tensor4D, temb(), ctx as tf.Tensor3D, slice).skips,
    });
    for (let j = 0; j < c.layersPerBlock[k]; j++) skips.push([side, ch]);
    if (k < n - 1) {
      side /= 2;
      skips.push([side, ch]);
    }
  }
  const midSide = side;
  const midCh = ch;
  segs.push({
    name: "mid_block",
    inputs: [[B, midSide, midSide, midCh], ctxShape],
    build: (r) => loadMidBlock(r.child("mid_block"), midCh, attnOf(n - 1), settings),
    run: (
      w,
      [x, ctx],
    ) => [midBlock(w as never, x as tf.Tensor4D, temb(), ctx as tf.Tensor3D, slice)],
  });
  const rboc = [...boc].reverse();
  const rLayers = [...c.layersPerBlock].reverse();
  const rHeads = [...c.numAttentionHeads].reverse();
  const rCross = [...c.crossAttentionDim].reverse();
  const rTl = [...c.transformerLayersPerBlock].reverse();
  for (let i = 0; i < n; i++) {
    const prev = ch;
    ch = rboc[i];
    const out = ch;
    const inC = rboc[Math.min(i + 1, n - 1)];
    const layers = rLayers[i] + 1;
    const mine = skips.splice(skips.length - layers, layers);
    const next = skips[skips.length - 1];
    const s = side;
    const size: [number, number] | undefined = i < n - 1 && next ? [next[0], next[0]] : undefined;
    const cross = c.upBlockTypes[i] === "CrossAttnUpBlock2D";
    segs.push({
      name: `up_blocks.${i}`,
      inputs: [
        [B, s, s, prev],
        ...mine.map(([ss, cc]) => [B, ss, ss, cc]),
        ...(cross ? [ctxShape] : []),
      ],
      build: (r) =>
        loadUpBlock(
          r.child(`up_blocks.${i}`),
          inC,
          out,
          prev,
          layers,
          cross ? { heads: rHeads[i], crossAttentionDim: rCross[i], layers: rTl[i] } : null,
          i < n - 1,
          settings,
        ),
      run: (
        w,
        xs,
      ) => [
        upBlock(
          w as never,
          xs[0] as tf.Tensor4D,
          xs.slice(1, 1 + layers) as tf.Tensor4D[],
          temb(),
          (cross ? xs[1 + layers] : noCtx) as tf.Tensor3D,
          slice,
          size,
        ),
      ],
    });
    if (size) side = size[0];
  }
  segs.push({
    name: "head (norm, conv_out)",
    inputs: [[B, latent, latent, boc[0]]],
    build: async (r) => ({
      norm: await loadGroupNorm(r, "conv_norm_out", boc[0], c.normNumGroups, c.normEps),
      conv: await loadConv2d(
        r,
        "conv_out",
        boc[0],
        c.outChannels,
        c.convOutKernel,
        1,
        (c.convOutKernel - 1) / 2,
      ),
    }),
    run: (w, [x]) => {
      const { norm, conv } = w as { norm: never; conv: never };
      const h = groupNorm(x, norm);
      return [conv2d(tf.mul(h, tf.sigmoid(h)) as tf.Tensor4D, conv)];
    },
  });
  return { segments: segs, dispose: () => emb.dispose() };
}

/**
 * Number of segments of a UNet config (stem, down blocks, mid, up blocks, head).
 */
export function segmentCount(c: UNetConfig): number {
  return 2 * c.blockOutChannels.length + 3;
}

/** Timings of one segment. */
export interface SegmentTiming {
  /** Segment name. */
  name: string;
  /** Parameters. */
  parameters: number;
  /** Timed forward runs (ms). */
  forwardMs: number[];
  /** Timed forward + backward runs (ms), into every input (incl. the encoder states). */
  backwardMs: number[];
}

const count = (o: unknown): number =>
  o instanceof tf.Tensor
    ? o.size
    : o && typeof o === "object"
    ? Object.values(o).reduce((a: number, v) => a + count(v), 0)
    : 0;

/** Time each segment: forward at `latent`, forward + backward at `bwdLatent` (0 = skip). */
export async function timeSegments(
  c: UNetConfig,
  opts: {
    batch: number;
    latent: number;
    bwdLatent: number;
    warmup: number;
    runs: number;
    slice: number;
    /** Time only this segment (index), e.g. in a child process. */
    only?: number;
  },
  log: (s: string) => void,
): Promise<SegmentTiming[]> {
  const gen = new SeededNoise(11);
  const fwd = unetSegments(c, opts.batch, opts.latent, 77, opts.slice);
  const bwd = opts.bwdLatent ? unetSegments(c, opts.batch, opts.bwdLatent, 77, opts.slice) : null;
  const fwdSegs = fwd.segments;
  const bwdSegs = bwd?.segments ?? [];
  const out: SegmentTiming[] = [];
  const time = async (f: () => tf.Tensor[]): Promise<number[]> => {
    const ms: number[] = [];
    for (let i = 0; i < opts.warmup + opts.runs; i++) {
      const s = performance.now();
      const ys = f();
      await Promise.all(ys.map((y) => y.data()));
      tf.dispose(ys);
      if (i >= opts.warmup) ms.push(performance.now() - s);
    }
    return ms;
  };
  for (let k = 0; k < fwdSegs.length; k++) {
    if (opts.only !== undefined && k !== opts.only) continue;
    const seg = fwdSegs[k];
    const w = await seg.build(new RandomWeightReader(k + 1));
    const xs = seg.inputs.map((s) => gen.normal(s));
    const forwardMs = await time(() => tf.tidy(() => seg.run(w, xs)));
    tf.dispose(xs);
    let backwardMs: number[] = [];
    if (bwdSegs.length) {
      const bseg = bwdSegs[k];
      const bx = bseg.inputs.map((s) => gen.normal(s));
      // Random output gradients: Σ out·r has ∂/∂out = r.
      const rs = tf.tidy(() => bseg.run(w, bx).map((y) => gen.normal(y.shape)));
      const grads = tf.grads((...inputs: tf.Tensor[]) =>
        tf.stack(bseg.run(w, inputs).map((y, i) => tf.sum(tf.mul(y, rs[i])))).sum()
      );
      backwardMs = await time(() => grads(bx));
      tf.dispose([...bx, ...rs]);
    }
    const parameters = count(w);
    tf.dispose(w as tf.TensorContainer);
    const med = (a: number[]) =>
      a.length ? [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)].toFixed(0) : "-";
    log(
      `  ${seg.name}: ${(parameters / 1e6).toFixed(1)}M params, forward ${
        med(forwardMs)
      } ms, forward+backward ${med(backwardMs)} ms`,
    );
    out.push({ name: seg.name, parameters, forwardMs, backwardMs });
  }
  fwd.dispose();
  bwd?.dispose();
  return out;
}
