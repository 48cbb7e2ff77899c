/**
 * A transformer block's attention part with frozen weights, `h + W_o·attn(W_q·n, W_k·c, W_v·c)
 * + b_o` with `n = LayerNorm(h)` and `c = n` (self-attention) or the encoder states (cross),
 * as one kernel forward and one backward on the wasm backend.
 *
 * Why: as tfjs ops it is seven nodes forward (LayerNorm, three projections, the attention core,
 * the output projection, the residual add) and about twelve ops backward, each 25–60 µs of
 * engine bookkeeping beyond its kernel (see fused_feed_forward.ts). The kernels here call the
 * same kernel functions in the same order on the same inputs, and the gradients reaching n and
 * the encoder states are summed in the order tfjs' backward pass summed them (values, then
 * keys, then queries), so the results are bitwise those of the ops one by one.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { registerWasmKernels, type WasmKernelArgs } from "./_kernel_registry.ts";
import { directAdd, directProduct, freeInfos } from "./_direct_kernels.ts";
import type { WasmHeapBackend } from "./_wasm_heap.ts";
import type { Tensor, Tensor1D } from "../../core/tensor_types.ts";
import { useWasmKernel } from "./kernel_options.ts";
import { normKernels } from "./fused_norm.ts";
import { attentionKernels } from "./fused_attention.ts";
import { type PackedProjection, projectionFits } from "./packed_matmul.ts";

const BLOCK = "TexforceWasmAttentionBlock";
const BLOCK_GRAD = "TexforceWasmAttentionBlockGrad";

interface BlockAttrs {
  eps: number;
  heads: number;
  scale: number;
  /** Width of the projections (heads · head width). */
  inner: number;
  /** Channels of h. */
  channels: number;
  /** Keys and values from the encoder states (an input) instead of n. */
  cross: boolean;
  /** Width of the keys' and values' source (C for self-attention). */
  contextDim: number;
}

// Outputs: [h + attention, the LayerNorm's statistics, q, k, v, the probabilities].
function blockKernel(args: WasmKernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WasmHeapBackend;
  const { h, gamma, beta, wq, wk, wv, wo, bq, bk, bv, bo, context } = args.inputs;
  const { eps, heads, scale, inner, channels, cross } = args.attrs as unknown as BlockAttrs;
  const [n, stats] = normKernels.forward({
    inputs: { x: h, gamma, beta },
    backend,
    attrs: normKernels.layerAttrs(eps),
  });
  const source = cross ? context : n;
  const q = directProduct(backend, n, wq, bq, inner);
  const k = directProduct(backend, source, wk, bk, inner);
  const v = directProduct(backend, source, wv, bv, inner);
  freeInfos(backend, n);
  const [a, probs] = attentionKernels.forward({
    inputs: { q, k, v },
    backend,
    attrs: { heads, scale },
  });
  const o = directProduct(backend, a, wo, bo, channels);
  freeInfos(backend, a);
  const out = directAdd(backend, h, o);
  freeInfos(backend, o);
  return [out, stats, q, k, v, probs];
}

// dh = dy + LayerNorm'ᵀ(dn), dn = (dnᵥ + dnₖ) + dn_q for self-attention (tfjs' order: the
// projections' nodes backward, values first); with cross-attention dn = dn_q and the encoder
// states' two gradients are returned apart (values', keys'), for tfjs to add in that order.
function blockGradKernel(args: WasmKernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WasmHeapBackend;
  const { dy, h, stats, q, k, v, probs, gamma, beta, wqT, wkT, wvT, woT } = args.inputs;
  const { eps, heads, scale, inner, channels, cross, contextDim } = args
    .attrs as unknown as BlockAttrs;
  const da = directProduct(backend, dy, woT, undefined, inner);
  const [dq, dk, dv] = attentionKernels.backward({
    inputs: { dy: da, q, k, v, probs },
    backend,
    attrs: { heads, scale },
  });
  freeInfos(backend, da);
  const dv0 = directProduct(backend, dv, wvT, undefined, contextDim);
  const dk0 = directProduct(backend, dk, wkT, undefined, contextDim);
  const dq0 = directProduct(backend, dq, wqT, undefined, channels);
  freeInfos(backend, dq, dk, dv);
  let dn = dq0;
  if (!cross) {
    const vk = directAdd(backend, dv0, dk0);
    dn = directAdd(backend, vk, dq0);
    freeInfos(backend, vk, dv0, dk0, dq0);
  }
  const [dhNorm, dGamma, dBeta] = normKernels.backward({
    inputs: { dy: dn, x: h, stats, gamma, beta },
    backend,
    attrs: normKernels.layerAttrs(eps),
  });
  freeInfos(backend, dn, dGamma, dBeta);
  const dh = directAdd(backend, dy, dhNorm);
  freeInfos(backend, dhNorm);
  return cross ? [dh, dv0, dk0] : [dh];
}

const KERNELS = [[BLOCK, blockKernel], [BLOCK_GRAD, blockGradKernel]] as const;

/** The frozen weights {@linkcode fusedAttentionBlock} takes, in kernel-ready form. */
export interface FusedAttentionBlockParts {
  /** LayerNorm γ [C]. */
  gamma: Tensor1D;
  /** LayerNorm β [C]. */
  beta: Tensor1D;
  /** LayerNorm epsilon. */
  eps: number;
  /** Query projection [C, inner]. */
  q: PackedProjection;
  /** Key projection [C or the encoder width, inner]. */
  k: PackedProjection;
  /** Value projection [C or the encoder width, inner]. */
  v: PackedProjection;
  /** Output projection [inner, C]. */
  out: PackedProjection;
  /** Heads. */
  heads: number;
}

/**
 * Whether {@linkcode fusedAttentionBlock} takes `h` [B, L, C] (and `context` [B, Lc, Dc] for
 * cross-attention) with these weights now: the switches (`fusedAttentionBlock`, `fusedNorm`,
 * `packedMatmul`, `fusedAttention`) are on, the backend is wasm, the tensors are float32 and
 * the shapes chain.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedAttentionBlockFits, type FusedAttentionBlockParts } from "./fused_attention_block.ts";
 * declare const parts: FusedAttentionBlockParts;
 * console.log(fusedAttentionBlockFits(tf.ones([2, 16, 32]), parts));
 * ```
 */
export function fusedAttentionBlockFits(
  h: Tensor,
  p: FusedAttentionBlockParts,
  context?: Tensor,
): boolean {
  if (
    !useWasmKernel("fusedAttentionBlock") || !useWasmKernel("fusedNorm") ||
    !useWasmKernel("packedMatmul") || !useWasmKernel("fusedAttention")
  ) return false;
  if (h.rank !== 3 || h.dtype !== "float32") return false;
  const c = h.shape[2] as number;
  const source = context ?? h;
  if (source.rank !== 3 || source.dtype !== "float32" || source.shape[0] !== h.shape[0]) {
    return false;
  }
  const dc = source.shape[2] as number;
  const inner = p.q.w.n;
  return p.gamma.shape[0] === c && p.beta.shape[0] === c && Number.isInteger(p.heads) &&
    p.heads > 0 && inner % p.heads === 0 && projectionFits(p.q, c, inner) &&
    projectionFits(p.k, dc, inner) && projectionFits(p.v, dc, inner) &&
    projectionFits(p.out, inner, c);
}

/**
 * `h + W_o·attn(W_q·n, W_k·c, W_v·c) + b_o` with `n = LayerNorm(h)` and `c = context ?? n`, for
 * h [B, L, C], differentiable in `h` and `context` (the weights are constants): one node on
 * the tape.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedAttentionBlock, type FusedAttentionBlockParts } from "@texforce/core/adapters";
 * declare const parts: FusedAttentionBlockParts; // packed copies of a frozen block's weights
 * const y = fusedAttentionBlock(tf.ones([2, 16, 32]), parts); // self-attention, [2, 16, 32]
 * ```
 */
export function fusedAttentionBlock(
  h: Tensor,
  p: FusedAttentionBlockParts,
  context?: Tensor,
): Tensor {
  if (!fusedAttentionBlockFits(h, p, context)) {
    throw new Error(
      `fusedAttentionBlock: needs float32 h [B, L, C]${
        context ? " and context [B, Lc, Dc]" : ""
      } ` +
        `on wasm with the fusedAttentionBlock, fusedNorm, packedMatmul and fusedAttention ` +
        `switches on, and projections that chain (got h [${h.shape}]${
          context ? `, context [${context.shape}]` : ""
        }, W_q [${p.q.w.k}, ${p.q.w.n}], W_k [${p.k.w.k}, ${p.k.w.n}], W_o [${p.out.w.k}, ` +
        `${p.out.w.n}] on ${tf.getBackend()})`,
    );
  }
  registerWasmKernels(KERNELS);
  const inner = p.q.w.n;
  const attrs = {
    eps: p.eps,
    heads: p.heads,
    scale: 1 / Math.sqrt(inner / p.heads),
    inner,
    channels: h.shape[2],
    cross: context !== undefined,
    contextDim: context?.shape[2] ?? h.shape[2],
  } as never;
  const weights: tf.NamedTensorMap = {
    gamma: p.gamma,
    beta: p.beta,
    wq: p.q.w.panels,
    wk: p.k.w.panels,
    wv: p.v.w.panels,
    wo: p.out.w.panels,
  };
  for (const [name, x] of [["bq", p.q], ["bk", p.k], ["bv", p.v], ["bo", p.out]] as const) {
    if (x.bias) weights[name] = x.bias;
  }
  const transposed = {
    gamma: p.gamma,
    beta: p.beta,
    wqT: p.q.wT.panels,
    wkT: p.k.wT.panels,
    wvT: p.v.wT.panels,
    woT: p.out.wT.panels,
  };
  const forward = (hh: Tensor, ctx: Tensor | undefined, save: tf.GradSaveFunc) => {
    const inputs = ctx ? { h: hh, context: ctx, ...weights } : { h: hh, ...weights };
    const [out, ...saved] = tf.engine().runKernel(BLOCK, inputs, attrs) as Tensor[];
    save([hh, ...saved]);
    tf.dispose(saved);
    return out;
  };
  const backward = (dy: Tensor, saved: Tensor[]): Tensor[] => {
    const [sh, stats, q, k, v, probs] = saved;
    return tf.engine().runKernel(
      BLOCK_GRAD,
      { dy, h: sh, stats, q, k, v, probs, ...transposed },
      attrs,
    ) as Tensor[];
  };
  if (!context) {
    const f = tf.customGrad((hh, save) => ({
      value: forward(hh as Tensor, undefined, save as tf.GradSaveFunc),
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]) => backward(dy as Tensor, saved)[0],
    }));
    return f(h) as Tensor;
  }
  // The encoder states enter twice (values' and keys' inputs) so that tfjs adds their two
  // gradients into the states' total one at a time, in the order its own pass did.
  const f = tf.customGrad((hh, forValues, _forKeys, save) => ({
    value: forward(hh as Tensor, forValues as Tensor, save as tf.GradSaveFunc),
    gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]) => backward(dy as Tensor, saved),
  }));
  return f(h, context, context) as Tensor;
}
