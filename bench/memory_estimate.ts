/**
 * `deno task bench memory_estimate [--tiny] [--latent 64] [--batch 2]`: an ESTIMATE, from tensor
 * sizes, of what one TexForce training timestep (UNet forward + backward into the encoder
 * states, fp32) holds on the GPU: the weights, the tensors the gradient tape keeps at the end of
 * the forward pass, and the largest transient of the backward pass, for three paths: stock
 * tfjs ops, texforce's WebGPU kernels, and those plus per-block recomputation. No tensor is
 * allocated; it walks the UNet config and counts, per layer, the feature-map-sized tensors each
 * tfjs op saves for its gradient (the counts are in {@linkcode perBlock}). `--tiny` also prints
 * the sizes measured by `bench/gpu_kernels.ts --tiny` on lavapipe (same config, 16×16, batch 2),
 * which the counts were checked against.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseUNetConfig, type UNetConfig } from "../adapters/unet/unet_2d_condition.ts";
import { SD15_UNET, TINY_UNET } from "./_unet_bench.ts";
import { formatBytes } from "./_peak_rss.ts";

/** Paths compared. */
export type MemoryPath = "stock" | "texforce" | "texforce+recompute";

/**
 * Feature-map-sized tensors the tape keeps per layer, by path (S: one tensor of the layer's
 * [B, H, W, C] size), read off the implementation:
 * - GroupNorm stock: moments' centred copy, x − mean, the normalised, ×γ, +β (5 S); SiLU adds
 *   σ(x) and the product (2 S). Fused kernel: its output only (1 S; the input is shared).
 * - LayerNorm (stock in both): 5 S.
 * - Self-attention stock: q, k, v, their head transposes, the output transpose (7 S) and two
 *   score-sized matrices (QKᵀ kept by the scale's Mul, the softmax output). Tiled kernel: q, k,
 *   v and the output (4 S) and the row log-sum-exp.
 * - GEGLU feed-forward: projection (8 S), its two halves (8 S), exact GELU's four temporaries and
 *   result (20 S), the gated product (4 S), the output (1 S).
 */
export const perBlock = {
  groupNormSilu: { stock: 7, texforce: 1 },
  groupNorm: { stock: 5, texforce: 1 },
  layerNorm: 5,
  selfAttention: { stock: 7, texforce: 4 },
  feedForward: 41,
} as const;

interface Estimate {
  weights: number;
  tape: number;
  /** The part of `tape` that is attention score matrices (counted exactly). */
  scores: number;
  transient: number;
  /** The part of `transient` that is a recomputed block's own tape (recompute path). */
  recomputedBlock: number;
}

/**
 * tf.memory().numBytes at the end of the forward pass measured by `bench/gpu_kernels.ts --tiny`
 * on lavapipe (tiny config, 16×16, batch 2: weights, inputs and tape).
 */
// Re-measured 2026-12-01 after the stride-2 downsampling convs moved onto the implicit-GEMM
// kernel (a frozen conv3x3 keeps no input for a filter gradient): texforce 72.6 → 64.6 MiB.
const TINY_MEASURED: Record<MemoryPath, number> = {
  stock: 118.4 * 2 ** 20,
  texforce: 64.6 * 2 ** 20,
  "texforce+recompute": 10.8 * 2 ** 20,
};

function unetParameters(c: UNetConfig): number {
  // Counted like diffusers' modules (weights and biases), per level.
  let p = 0;
  const conv = (i: number, o: number, k: number) => i * o * k * k + o;
  const lin = (i: number, o: number, bias = true) => i * o + (bias ? o : 0);
  const norm = (ch: number) => 2 * ch;
  const temb = c.timeEmbedDim;
  const resnet = (i: number, o: number) =>
    norm(i) + conv(i, o, 3) + lin(temb, o) + norm(o) + conv(o, o, 3) +
    (i !== o ? conv(i, o, 1) : 0);
  const transformer = (ch: number, ctx: number) =>
    norm(ch) + 2 * conv(ch, ch, 1) +
    3 * norm(ch) + 3 * lin(ch, ch, false) + lin(ch, ch) + lin(ch, ch, false) +
    2 * lin(ctx, ch, false) + lin(ch, ch) + lin(ch, 8 * ch) + lin(4 * ch, ch);
  const boc = c.blockOutChannels;
  p += conv(c.inChannels, boc[0], c.convInKernel) + lin(boc[0], temb) + lin(temb, temb);
  let ch = boc[0];
  boc.forEach((o, i) => {
    for (let j = 0; j < c.layersPerBlock[i]; j++) {
      p += resnet(j === 0 ? ch : o, o);
      if (c.downBlockTypes[i] === "CrossAttnDownBlock2D") {
        p += transformer(o, c.crossAttentionDim[i]);
      }
    }
    ch = o;
    if (i < boc.length - 1) p += conv(o, o, 3);
  });
  const top = boc[boc.length - 1];
  p += 2 * resnet(top, top) + transformer(top, c.crossAttentionDim[boc.length - 1]);
  const rev = [...boc].reverse();
  let prev = top;
  rev.forEach((o, i) => {
    const skipCh = (j: number) => {
      const level = boc.length - 1 - i;
      if (j < c.layersPerBlock[level]) return boc[level];
      return level > 0 ? boc[level - 1] : boc[0];
    };
    for (let j = 0; j <= c.layersPerBlock[boc.length - 1 - i]; j++) {
      p += resnet((j === 0 ? prev : o) + skipCh(j), o);
      if (c.upBlockTypes[i] === "CrossAttnUpBlock2D") {
        p += transformer(o, c.crossAttentionDim[boc.length - 1 - i]);
      }
    }
    prev = o;
    if (i < boc.length - 1) p += conv(o, o, 3);
  });
  p += norm(boc[0]) + conv(boc[0], c.outChannels, c.convOutKernel);
  return p;
}

/** Bytes for one path at `latent`² and `batch`. */
export function estimateUNetStep(
  c: UNetConfig,
  latent: number,
  batch: number,
  path: MemoryPath,
): Estimate {
  const f = 4;
  const mine = path !== "stock";
  const ctxLen = 77;
  const boc = c.blockOutChannels;
  const levels = boc.length;
  const side = (level: number) => latent / 2 ** level;
  const size = (level: number, ch: number) => batch * side(level) ** 2 * ch;
  // Tape per layer, in floats.
  const resnet = (level: number, i: number, o: number) =>
    (mine ? 1 : perBlock.groupNormSilu.stock) * size(level, i) +
    (mine ? 1 : perBlock.groupNormSilu.stock) * size(level, o) +
    4 * size(level, o) + (i !== o ? size(level, o) : 0);
  let scores = 0;
  const transformer = (level: number, ch: number, heads: number) => {
    const s = size(level, ch);
    const l = side(level) ** 2;
    if (!mine) scores += 2 * batch * heads * l * l + 2 * batch * heads * l * ctxLen;
    const attn = mine
      ? perBlock.selfAttention.texforce * s + batch * heads * l
      : perBlock.selfAttention.stock * s + 2 * batch * heads * l * l;
    const cross = mine ? 2 * s : 4 * s + 2 * batch * heads * l * ctxLen;
    return (mine ? 1 : perBlock.groupNorm.stock) * s + 2 * s + // norm, proj_in, proj_out
      3 * perBlock.layerNorm * s + attn + cross + 3 * 2 * s + // out projections and residuals
      perBlock.feedForward * s + s;
  };
  // Each block's tape (for recomputation: its inputs and outputs only, plus the largest
  // block's tape, live while it is recomputed).
  const blocks: { tape: number; io: number }[] = [];
  let ch = boc[0];
  const skips: { level: number; ch: number }[] = [{ level: 0, ch }];
  for (let i = 0; i < levels; i++) {
    const o = boc[i];
    let tape = 0;
    let io = size(i, ch);
    for (let j = 0; j < c.layersPerBlock[i]; j++) {
      tape += resnet(i, j === 0 ? ch : o, o);
      if (c.downBlockTypes[i] === "CrossAttnDownBlock2D") {
        tape += transformer(i, o, c.numAttentionHeads[i]);
      }
      skips.push({ level: i, ch: o });
      io += size(i, o);
    }
    if (i < levels - 1) {
      tape += size(i + 1, o);
      skips.push({ level: i + 1, ch: o });
      io += size(i + 1, o);
    }
    ch = o;
    blocks.push({ tape, io });
  }
  const top = levels - 1;
  const midTape = 2 * resnet(top, boc[top], boc[top]) +
    transformer(top, boc[top], c.numAttentionHeads[top]);
  blocks.push({ tape: midTape, io: 2 * size(top, boc[top]) });
  let prev = boc[top];
  for (let i = 0; i < levels; i++) {
    const level = top - i;
    const o = boc[level];
    let tape = 0;
    let io = size(level, prev);
    for (let j = 0; j <= c.layersPerBlock[level]; j++) {
      const skip = skips.pop()!;
      const inCh = (j === 0 ? prev : o) + skip.ch;
      tape += size(level, inCh) + resnet(level, inCh, o); // concat, resnet
      io += size(level, skip.ch);
      if (c.upBlockTypes[i] === "CrossAttnUpBlock2D") {
        tape += transformer(level, o, c.numAttentionHeads[level]);
      }
    }
    if (level > 0) tape += 2 * size(level - 1, o); // nearest upsample, conv
    io += size(level > 0 ? level - 1 : 0, o);
    prev = o;
    blocks.push({ tape, io });
  }
  const outTape = (mine ? 1 : perBlock.groupNormSilu.stock) * size(0, boc[0]) + 2 * size(0, 4);
  const tapeFull = blocks.reduce((a, b) => a + b.tape, 0) + outTape;
  const largest = Math.max(...blocks.map((b) => b.tape));
  const tape = path === "texforce+recompute"
    ? blocks.reduce((a, b) => a + b.io, 0) + outTape
    : tapeFull;
  // Backward transients: the gradient of the largest layer's tensors in flight (stock: the
  // score matrix's gradient and softmax backward temporaries, 3 score-sized matrices at the
  // top level); with recomputation also the recomputed block's own tape.
  const l0 = side(0) ** 2;
  const scoreTransient = mine ? 0 : 3 * batch * c.numAttentionHeads[0] * l0 * l0;
  const transient = scoreTransient + 8 * size(0, boc[0]) +
    (path === "texforce+recompute" ? largest : 0);
  if (path === "texforce+recompute") scores = 0;
  return {
    weights: unetParameters(c) * f,
    tape: tape * f,
    scores: scores * f,
    transient: transient * f,
    recomputedBlock: (path === "texforce+recompute" ? largest : 0) * f,
  };
}

/**
 * Print the estimate.
 *
 * @example
 * ```ts
 * import memoryEstimate from "./memory_estimate.ts";
 * memoryEstimate(["--tiny"]);
 * ```
 */
export default function memoryEstimate(args: string[]): void {
  const { values } = parseArgs({
    args,
    options: {
      tiny: { type: "boolean", default: false },
      latent: { type: "string" },
      batch: { type: "string", default: "2" },
    },
  });
  const raw = values.tiny ? TINY_UNET : SD15_UNET;
  const c = parseUNetConfig(raw, "<estimate config>");
  const latent = Number(values.latent ?? c.sampleSize);
  const batch = Number(values.batch);
  console.log(
    `ESTIMATE (from tensor sizes, not measured): UNet ${values.tiny ? "tiny" : "SD 1.5"}, ` +
      `${latent}×${latent} latents (${latent * 8}² images), batch ${batch}, fp32, one forward + ` +
      `backward into the encoder states`,
  );
  console.log("| path | weights | tape at end of forward | backward transient | peak |");
  console.log("| --- | ---: | ---: | ---: | ---: |");
  const paths: MemoryPath[] = ["stock", "texforce", "texforce+recompute"];
  // The per-op counts miss tensors tfjs keeps only for their shapes (e.g. Add and Mean save
  // their inputs): scale the feature-map part of the tape by what the tiny model measured.
  const tiny = parseUNetConfig(TINY_UNET, "<tiny>");
  const scale = (path: MemoryPath) => {
    const e = estimateUNetStep(tiny, 16, 2, path);
    return (TINY_MEASURED[path] - e.weights - e.scores) / (e.tape - e.scores);
  };
  for (const calibrated of [false, true]) {
    console.log(
      calibrated
        ? "\ncalibrated (feature-map tape × measured/counted on the tiny model, lavapipe):"
        : "\ncounted:",
    );
    console.log("| path | weights | tape at end of forward | backward transient | peak |");
    console.log("| --- | ---: | ---: | ---: | ---: |");
    for (const path of paths) {
      const e = estimateUNetStep(c, latent, batch, path);
      const k = calibrated ? scale(path) : 1;
      const tape = e.scores + (e.tape - e.scores) * k;
      // The recomputed block's tape is a texforce tape: it scales like one.
      const transient = e.transient +
        e.recomputedBlock * ((calibrated ? scale("texforce") : 1) - 1);
      console.log(
        `| ${path}${calibrated ? ` (×${k.toFixed(2)})` : ""} | ${formatBytes(e.weights)} | ${
          formatBytes(tape)
        } | ${formatBytes(transient)} | ${formatBytes(e.weights + tape + transient)} |`,
      );
    }
  }
}

if (import.meta.main) memoryEstimate(Deno.args);
