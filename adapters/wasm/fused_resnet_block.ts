/**
 * A ResNet block with frozen weights, `skip(x) + conv₂(SiLU(norm₂(conv₁(SiLU(norm₁(x))) + t)))`
 * (diffusers' `ResnetBlock2D` with output scale 1; `t` the time projection per sample and
 * channel, `skip` a 1×1 convolution or the identity), as one kernel forward and one backward
 * on the wasm backend. Where the time projection is frozen and packed, the kernel takes the
 * (activated) time embedding and makes `t` itself with the packed product.
 *
 * Why: as tfjs ops it is six to seven nodes forward and about ten ops backward (gradient
 * convolutions, norm gradients, reshapes, an accumulation), each 25–60 µs of engine bookkeeping
 * beyond its kernel (see fused_feed_forward.ts), and the projection one more node per block. The
 * kernels here call the same kernel functions (fused_norm.ts, tfjs' FusedConv2D and Conv2D with
 * the flipped filters conv2d.ts keeps, the packed product, the SIMD Add) in the same order on
 * the same inputs, so x's gradient and the output are bitwise those of the ops one by one. The
 * time projection's gradient (a sum over positions, needed only when something upstream of `t`
 * is differentiated) is summed here in float64, then multiplied by the packed Wᵀ.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { registerWasmKernels, type WasmKernelArgs } from "./_kernel_registry.ts";
import { directAdd, directProduct, freeInfos, runWasmKernel } from "./_direct_kernels.ts";
import { heapOffset, type WasmHeapBackend } from "./_wasm_heap.ts";
import { activationSimdFor } from "./_activation_simd.ts";
import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from "../../core/tensor_types.ts";
import { useWasmKernel } from "./kernel_options.ts";
import { normKernels } from "./fused_norm.ts";
import { type PackedProjection, projectionFits } from "./packed_matmul.ts";

const BLOCK = "TexforceWasmResnetBlock";
const BLOCK_GRAD = "TexforceWasmResnetBlockGrad";

interface BlockAttrs {
  groups1: number;
  eps1: number;
  groups2: number;
  eps2: number;
  /** conv₁'s and conv₂'s kernel size (odd; stride 1, padding (k − 1) / 2). */
  k1: number;
  k2: number;
  time: boolean;
  /** The time input is the embedding [B, T], projected here by the block's packed weights. */
  project: boolean;
  /** T, when projecting. */
  embedWidth: number;
  shortcut: boolean;
}

type Pad4 = [[number, number], [number, number], [number, number], [number, number]];

const samePad = (k: number): Pad4 | "valid" => {
  const p = (k - 1) / 2;
  return p === 0 ? "valid" : [[0, 0], [p, p], [p, p], [0, 0]];
};

// conv2d.ts's attributes for the forward (FusedConv2D) and the input gradient (Conv2D with the
// flipped filter, stride 1): a same-size convolution's input gradient pads by (k − 1) / 2 too.
const convAttrs = (k: number) => ({
  strides: [1, 1],
  pad: samePad(k),
  dataFormat: "NHWC",
  dilations: [1, 1],
  activation: "linear",
});
const gradAttrs = (k: number) => ({
  strides: [1, 1],
  pad: samePad(k),
  dataFormat: "NHWC",
  dilations: [1, 1],
});

function conv(
  backend: WasmHeapBackend,
  x: tf.TensorInfo,
  filter: tf.TensorInfo,
  bias: tf.TensorInfo | undefined,
  k: number,
): tf.TensorInfo {
  const inputs: Record<string, tf.TensorInfo> = bias ? { x, filter, bias } : { x, filter };
  return runWasmKernel("FusedConv2D", backend, inputs, convAttrs(k));
}

const normAttrs = (groups: number, eps: number) => normKernels.groupAttrs(groups, eps, true);

// h[b, p, c] += t[b, c], in place on the block's own intermediate: one SIMD pass
// (activation_simd.wat) where the channels come in fours, else a JS loop (float64 sums of two
// float32 values round to the float32 sum). Both are tfjs' broadcasting Add bit for bit.
function addPerSample(backend: WasmHeapBackend, h: tf.TensorInfo, t: tf.TensorInfo): void {
  const [b, hh, ww, c] = h.shape;
  const p = hh * ww;
  const simd = c % 4 === 0 ? activationSimdFor(backend) : null;
  if (simd) return simd.add_per_sample(heapOffset(backend, h), heapOffset(backend, t), b, p, c);
  const hs = backend.typedArrayFromHeap(h);
  const ts = backend.typedArrayFromHeap(t);
  for (let bi = 0, o = 0; bi < b; bi++) {
    const row = bi * c;
    for (let i = 0; i < p; i++) for (let ch = 0; ch < c; ch++, o++) hs[o] += ts[row + ch];
  }
}

// Outputs: [the block's output, norm₁'s statistics, norm₂'s input, norm₂'s statistics].
function blockKernel(args: WasmKernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WasmHeapBackend;
  const { x, t, wt, bt, g1, b1, f1, c1, g2, b2, f2, c2, fs, cs } = args.inputs;
  const a = args.attrs as unknown as BlockAttrs;
  // The time projection of the embedding, by the product the layer's own node would run.
  const tp = a.time && a.project ? directProduct(backend, t, wt, bt, f1.shape[3]) : t;
  const [n1, st1] = normKernels.forward({
    inputs: { x, gamma: g1, beta: b1 },
    backend,
    attrs: normAttrs(a.groups1, a.eps1),
  });
  const h = conv(backend, n1, f1, c1, a.k1);
  freeInfos(backend, n1);
  if (a.time) addPerSample(backend, h, tp);
  if (a.time && a.project) freeInfos(backend, tp);
  const [n2, st2] = normKernels.forward({
    inputs: { x: h, gamma: g2, beta: b2 },
    backend,
    attrs: normAttrs(a.groups2, a.eps2),
  });
  const y = conv(backend, n2, f2, c2, a.k2);
  freeInfos(backend, n2);
  const skip = a.shortcut ? conv(backend, x, fs, cs, 1) : x;
  const out = directAdd(backend, skip, y);
  freeInfos(backend, y);
  if (a.shortcut) freeInfos(backend, skip);
  return [out, st1, h, st2];
}

// x's two gradients apart, [norm₁'ᵀ(conv₁ᵀ(norm₂'ᵀ(conv₂ᵀ(dy)))), dt (with t), skip'ᵀ(dy) (with a
// shortcut convolution)], dt = Σ over positions of norm₂'ᵀ(..).
function blockGradKernel(args: WasmKernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WasmHeapBackend;
  const { dy, x, st1, h, st2, g1, b1, g2, b2, f1r, f2r, fsr, wtT } = args.inputs;
  const a = args.attrs as unknown as BlockAttrs;
  const dn2 = runWasmKernel("Conv2D", backend, { x: dy, filter: f2r }, gradAttrs(a.k2));
  const [dh, dg2, db2] = normKernels.backward({
    inputs: { dy: dn2, x: h, stats: st2, gamma: g2, beta: b2 },
    backend,
    attrs: normAttrs(a.groups2, a.eps2),
  });
  freeInfos(backend, dn2, dg2, db2);
  const dn1 = runWasmKernel("Conv2D", backend, { x: dh, filter: f1r }, gradAttrs(a.k1));
  let dt = a.time ? sumPositions(backend, dh) : null;
  if (dt && a.project) {
    const dProjected = dt;
    dt = directProduct(backend, dProjected, wtT, undefined, a.embedWidth);
    freeInfos(backend, dProjected);
  }
  freeInfos(backend, dh);
  const [dxNorm, dg1, db1] = normKernels.backward({
    inputs: { dy: dn1, x, stats: st1, gamma: g1, beta: b1 },
    backend,
    attrs: normAttrs(a.groups1, a.eps1),
  });
  freeInfos(backend, dn1, dg1, db1);
  const out = [dxNorm];
  if (dt) out.push(dt);
  if (a.shortcut) out.push(runWasmKernel("Conv2D", backend, { x: dy, filter: fsr }, gradAttrs(1)));
  return out;
}

// [B, H, W, C] → [B, C]: Σ over H and W.
function sumPositions(backend: WasmHeapBackend, d: tf.TensorInfo): tf.TensorInfo {
  const [b, hh, ww, c] = d.shape;
  const out = backend.makeOutput([b, c], "float32");
  const ds = backend.typedArrayFromHeap(d);
  const os = backend.typedArrayFromHeap(out);
  const acc = new Float64Array(c);
  for (let bi = 0, o = 0; bi < b; bi++) {
    acc.fill(0);
    for (let i = 0; i < hh * ww; i++) for (let ch = 0; ch < c; ch++, o++) acc[ch] += ds[o];
    os.set(acc, bi * c);
  }
  return out;
}

const KERNELS = [[BLOCK, blockKernel], [BLOCK_GRAD, blockGradKernel]] as const;

/** A GroupNorm of {@linkcode FusedResnetBlockParts}. */
export interface ResnetNormPart {
  /** γ [C]. */
  gamma: Tensor1D;
  /** β [C]. */
  beta: Tensor1D;
  /** Groups. */
  groups: number;
  /** Epsilon. */
  eps: number;
}

/** A stride-1 same-size convolution of {@linkcode FusedResnetBlockParts}. */
export interface ResnetConvPart {
  /** [k, k, in, out]. */
  filter: Tensor4D;
  /** The input gradient's filter: spatially flipped, in and out swapped ([k, k, out, in]). */
  flipped: Tensor4D;
  /** [out], if the layer has one. */
  bias?: Tensor1D;
}

/** The frozen weights {@linkcode fusedResnetBlock} takes. */
export interface FusedResnetBlockParts {
  norm1: ResnetNormPart;
  conv1: ResnetConvPart;
  norm2: ResnetNormPart;
  conv2: ResnetConvPart;
  /** A 1×1 convolution of the input (when the channels change), else the identity. */
  shortcut?: ResnetConvPart;
  /**
   * The time projection [T, Cout], packed: with it the block takes the time embedding [B, T]
   * and projects it inside its kernel (one tape node fewer per block); without it, the
   * projection t [B, Cout] itself.
   */
  time?: PackedProjection;
}

const convFits = (c: ResnetConvPart, cin: number, cout: number, square?: number) => {
  const [k, kw, i, o] = c.filter.shape;
  const [fk, fkw, fo, fi] = c.flipped.shape;
  return k === kw && k % 2 === 1 && (square === undefined || k === square) && i === cin &&
    o === cout && fk === k && fkw === k && fo === cout && fi === cin &&
    (!c.bias || c.bias.shape[0] === cout);
};

/**
 * Whether {@linkcode fusedResnetBlock} takes x [B, H, W, Cin] (and the time input: the
 * embedding [B, T] where the parts hold the time projection, else the projection t [B, Cout])
 * with these weights now: the `fusedResnetBlock` and `fusedNorm` switches are on (and
 * `packedMatmul` to project the embedding),
 * the backend is wasm, the tensors are float32 and the shapes chain.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedResnetBlockFits, type FusedResnetBlockParts } from "./fused_resnet_block.ts";
 * declare const parts: FusedResnetBlockParts;
 * console.log(fusedResnetBlockFits(tf.ones([2, 8, 8, 32]) as tf.Tensor4D, parts));
 * ```
 */
export function fusedResnetBlockFits(
  x: Tensor4D,
  p: FusedResnetBlockParts,
  t?: Tensor2D,
): boolean {
  if (!useWasmKernel("fusedResnetBlock") || !useWasmKernel("fusedNorm")) return false;
  if (x.rank !== 4 || x.dtype !== "float32") return false;
  const [b, , , cin] = x.shape;
  const cout = p.conv1.filter.shape[3];
  const normFits = (n: ResnetNormPart, c: number) =>
    n.gamma.shape[0] === c && n.beta.shape[0] === c && c % n.groups === 0;
  return normFits(p.norm1, cin) && convFits(p.conv1, cin, cout) && normFits(p.norm2, cout) &&
    convFits(p.conv2, cout, cout) &&
    (p.shortcut ? convFits(p.shortcut, cin, cout, 1) : cin === cout) &&
    (!t || (t.rank === 2 && t.dtype === "float32" && t.shape[0] === b &&
      (p.time
        // Projecting inside takes the packed product, as the layer's own node would.
        ? useWasmKernel("packedMatmul") && projectionFits(p.time, t.shape[1], cout)
        : t.shape[1] === cout)));
}

/**
 * `skip(x) + conv₂(SiLU(norm₂(conv₁(SiLU(norm₁(x))) + t)))` for x [B, H, W, Cin] and the
 * time projection t [B, Cout] (optional; with `p.time`, `t` is the embedding [B, T] and the
 * projection `t · W + b` is made inside), differentiable in `x` and `t` (the weights are
 * constants): one node on the tape.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedResnetBlock, type FusedResnetBlockParts } from "@texforce/core/adapters";
 * declare const parts: FusedResnetBlockParts; // a frozen block's weights and flipped filters
 * const y = fusedResnetBlock(tf.ones([2, 8, 8, 32]) as tf.Tensor4D, parts); // [2, 8, 8, 32]
 * ```
 */
export function fusedResnetBlock(x: Tensor4D, p: FusedResnetBlockParts, t?: Tensor2D): Tensor4D {
  if (!fusedResnetBlockFits(x, p, t)) {
    throw new Error(
      `fusedResnetBlock: needs a float32 x [B, H, W, Cin]${
        t ? (p.time ? ` and a time embedding [B, ${p.time.w.k}]` : " and t [B, Cout]") : ""
      } on ` +
        `wasm with the fusedResnetBlock and fusedNorm switches on, odd square same-size ` +
        `convolutions and a 1×1 shortcut where the channels change (got x [${x.shape}]${
          t ? `, t [${t.shape}]` : ""
        }, conv₁ [${p.conv1.filter.shape}], conv₂ [${p.conv2.filter.shape}] on ${tf.getBackend()})`,
    );
  }
  registerWasmKernels(KERNELS);
  const attrs = {
    groups1: p.norm1.groups,
    eps1: p.norm1.eps,
    groups2: p.norm2.groups,
    eps2: p.norm2.eps,
    k1: p.conv1.filter.shape[0],
    k2: p.conv2.filter.shape[0],
    time: t !== undefined,
    project: t !== undefined && p.time !== undefined,
    embedWidth: p.time?.w.k ?? 0,
    shortcut: p.shortcut !== undefined,
  } as never;
  const weights: tf.NamedTensorMap = {
    g1: p.norm1.gamma,
    b1: p.norm1.beta,
    f1: p.conv1.filter,
    g2: p.norm2.gamma,
    b2: p.norm2.beta,
    f2: p.conv2.filter,
  };
  if (p.conv1.bias) weights.c1 = p.conv1.bias;
  if (p.conv2.bias) weights.c2 = p.conv2.bias;
  if (p.shortcut) {
    weights.fs = p.shortcut.filter;
    if (p.shortcut.bias) weights.cs = p.shortcut.bias;
  }
  if (t && p.time) {
    weights.wt = p.time.w.panels;
    if (p.time.bias) weights.bt = p.time.bias;
  }
  const flipped: tf.NamedTensorMap = {
    g1: p.norm1.gamma,
    b1: p.norm1.beta,
    g2: p.norm2.gamma,
    b2: p.norm2.beta,
    f1r: p.conv1.flipped,
    f2r: p.conv2.flipped,
  };
  if (p.shortcut) flipped.fsr = p.shortcut.flipped;
  if (t && p.time) flipped.wtT = p.time.wT.panels;
  const forward = (xx: Tensor, tt: Tensor | undefined, save: tf.GradSaveFunc): Tensor => {
    const inputs = tt ? { x: xx, t: tt, ...weights } : { x: xx, ...weights };
    const [out, ...saved] = tf.engine().runKernel(BLOCK, inputs, attrs) as Tensor[];
    save([xx, ...saved]);
    tf.dispose(saved);
    return out;
  };
  // [the skip's gradient, the norm path's, t's]: x enters twice (skip, norm) so that tfjs adds
  // its two gradients into x's total one at a time, in the order its own pass did (the skip's
  // first); an identity skip passes dy on (a copy: tfjs disposes accumulated gradients).
  const backward = (dy: Tensor, saved: Tensor[]): Tensor[] => {
    const [sx, st1, h, st2] = saved;
    const [dxNorm, ...rest] = tf.engine().runKernel(
      BLOCK_GRAD,
      { dy, x: sx, st1, h, st2, ...flipped },
      attrs,
    ) as Tensor[];
    const dt = t ? rest.shift() : undefined;
    const dSkip = p.shortcut ? rest[0] : tf.clone(dy);
    return dt ? [dSkip, dxNorm, dt] : [dSkip, dxNorm];
  };
  if (!t) {
    const f = tf.customGrad((forSkip, _forNorm, save) => ({
      value: forward(forSkip as Tensor, undefined, save as tf.GradSaveFunc),
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]) => backward(dy as Tensor, saved),
    }));
    return f(x, x) as Tensor4D;
  }
  const f = tf.customGrad((forSkip, _forNorm, tt, save) => ({
    value: forward(forSkip as Tensor, tt as Tensor, save as tf.GradSaveFunc),
    gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]) => backward(dy as Tensor, saved),
  }));
  return f(x, x, t) as Tensor4D;
}
