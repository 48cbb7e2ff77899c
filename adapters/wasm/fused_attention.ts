/**
 * Attention's core, softmax(q kᵀ · scale + mask) v over heads, as one differentiable op on the
 * wasm backend: the products on texforce's SIMD kernel, tfjs' Softmax, and the softmax gradient
 * `scale · P ⊙ (dP − rowsum(dP ⊙ P))` as one kernel.
 *
 * Why: tfjs' composition (scale, softmax, their gradients) ran about 20 kernels per attention
 * forward + backward, among them broadcasting multiplies over the [.., Lq, Lk] probabilities
 * (1.9 ms each for the tiny UNet's 2 × 2 × 256 × 256 at batch 2), and the head split and merge
 * cost a reshape and a transpose per operand each way. Here forward and backward are one kernel
 * each: every head's columns are read and written in place through the product's row strides,
 * and the per-kernel cost of tfjs' engine (a few µs each, which at batch 2 is much of the time)
 * is paid once. The scale is applied to q (Lq × d values instead of Lq × Lk scores), and folded
 * into the score gradient, from which both q's and k's gradients follow (d(s·q) = dS·k;
 * dk = dSᵀ·(s·q) = (s·dS)ᵀ·q).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { registerWasmKernels, type WasmKernelArgs } from "./_kernel_registry.ts";
import { heapMemory, heapOffset, type WasmHeapBackend } from "./_wasm_heap.ts";
import type { Tensor } from "../../core/tensor_types.ts";
import { gemmSimdFor, runHeadPhase } from "./_gemm_threads.ts";
import { HEAD_PHASE, type HeadDims, newPhase, PHASE, setPhaseScale } from "./_attention_heads.ts";
import { useWasmKernel } from "./kernel_options.ts";
import { activationSimdFor } from "./_activation_simd.ts";

/** Whether a mask of `shape` is one [lq, lk] matrix (any leading axes of size 1). */
const isOneMatrix = (shape: number[], lq: number, lk: number): boolean =>
  shape.length >= 2 && shape.at(-2) === lq && shape.at(-1) === lk &&
  shape.slice(0, -2).every((v) => v === 1);

const ATTENTION = "TexforceWasmAttention";
const ATTENTION_GRAD = "TexforceWasmAttentionGrad";

interface AttentionAttrs {
  heads: number;
  scale: number;
}

/** The shapes of one call: the phase's (heads, lengths, widths) and the batch. */
interface AttentionDims extends HeadDims {
  b: number;
}

function dimsOf(q: tf.TensorInfo, v: tf.TensorInfo, lk: number, heads: number): AttentionDims {
  const [b, lq, dAll] = q.shape;
  const dvAll = v.shape[2];
  return { b, heads, lq, lk, dAll, d: dAll / heads, dvAll, dv: dvAll / heads };
}

/**
 * Scratch buffers on the heap for one kernel call, freed together. Offsets are bytes; views of
 * the heap are taken after every allocation (the heap may grow on one).
 */
class Scratch {
  readonly #ptrs: number[] = [];
  constructor(readonly backend: WasmHeapBackend) {}
  alloc(values: number): number {
    const p = this.backend.wasm._malloc(4 * Math.max(values, 1));
    this.#ptrs.push(p);
    return p;
  }
  free(): void {
    for (const p of this.#ptrs) this.backend.wasm._free(p);
  }
}

/**
 * Forward: `out` [B, Lq, Dv] and the probabilities [B, heads, Lq, Lk] (kept for the gradient).
 * Each head's columns are read and written in place (row strides), so there is no head split
 * or merge; the scale is applied to q as tfjs' Multiply would (float32 products), so the
 * values are those of the composition this kernel replaced, bit for bit. The (sample, head)
 * pairs' products are shared over the threads (_attention_heads.ts) where that pays.
 */
function attentionKernel(args: WasmKernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WasmHeapBackend;
  const { q, k, v, mask } = args.inputs;
  const { heads, scale } = args.attrs as unknown as AttentionAttrs;
  const { b, lq, lk, dAll, d, dvAll, dv } = dimsOf(q, v, k.shape[1], heads);
  const out = backend.makeOutput([b, lq, dvAll], "float32");
  const scores = backend.makeOutput([b, heads, lq, lk], "float32");
  const g = gemmSimdFor(backend, "fusedAttention");
  const simd = activationSimdFor(backend);
  const s = new Scratch(backend);
  const pairs = b * heads;
  let probs: tf.TensorInfo;
  try {
    // The scaled queries of all heads, [B, Lq, D], read per head through the row stride.
    const qs = s.alloc(b * lq * dAll);
    const [qo, ko, vo, so, oo] = [q, k, v, scores, out].map((t) => heapOffset(backend, t));
    const sc = Math.fround(scale);
    const dims = { heads, lq, lk, dAll, d, dvAll, dv };
    const qk = newPhase(HEAD_PHASE.scores, dims);
    [qk[PHASE.q], qk[PHASE.k], qk[PHASE.p]] = [qs, ko, so];
    if (simd) simd.scale(qo, qs, b * lq * dAll, sc);
    else {
      const heap = new Float32Array(heapMemory(backend)!.buffer);
      for (let j = qo >> 2, o = qs >> 2, e = j + b * lq * dAll; j < e; j++) {
        heap[o++] = Math.fround(heap[j] * sc);
      }
    }
    runHeadPhase(backend, g, qk, pairs);
    if (mask && simd && mask.dtype === "float32" && isOneMatrix(mask.shape, lq, lk)) {
      // One [Lq, Lk] mask for every batch entry and head: a SIMD add per score matrix.
      const mo = heapOffset(backend, mask);
      for (let j = 0; j < pairs; j++) {
        simd.add(so + 4 * j * lq * lk, mo, so + 4 * j * lq * lk, lq * lk);
      }
    } else if (mask) {
      // A fresh view: the phase's scratch allocation may have grown (and, unshared, detached)
      // the heap.
      const grown = new Float32Array(heapMemory(backend)!.buffer);
      addBroadcast(
        grown,
        so >> 2,
        [b, heads, lq, lk],
        backend.typedArrayFromHeap(mask),
        mask.shape,
      );
    }
    probs = softmaxKernel(backend, scores);
    const output = newPhase(HEAD_PHASE.output, dims);
    [output[PHASE.v], output[PHASE.p], output[PHASE.out]] = [vo, heapOffset(backend, probs), oo];
    runHeadPhase(backend, g, output, pairs);
  } finally {
    s.free();
    backend.disposeData(scores.dataId);
  }
  return [out, probs];
}

/** x[i] += m[broadcast i] for x of `shape` at `xo` (float32 sums, as tfjs' Add). */
function addBroadcast(
  heap: Float32Array,
  xo: number,
  shape: number[],
  m: Float32Array,
  mShape: number[],
): void {
  // The mask's strides over x's axes, 0 where it broadcasts (its shape right-aligned).
  const rank = shape.length;
  const strides = new Array<number>(rank).fill(0);
  for (let ax = rank - 1, st = 1, mi = mShape.length - 1; mi >= 0; ax--, mi--) {
    if (mShape[mi] !== 1) strides[ax] = st;
    st *= mShape[mi];
  }
  const [n0, n1, n2, n3] = shape;
  const [s0, s1, s2, s3] = strides;
  let x = xo;
  for (let a = 0; a < n0; a++) {
    for (let c = 0; c < n1; c++) {
      for (let r = 0; r < n2; r++) {
        const base = a * s0 + c * s1 + r * s2;
        for (let j = 0; j < n3; j++, x++) heap[x] = heap[x] + m[base + j * s3];
      }
    }
  }
}

/** tfjs' own wasm Softmax over the last axis, called directly (no engine round trip). */
function softmaxKernel(backend: WasmHeapBackend, logits: tf.TensorInfo): tf.TensorInfo {
  const kernel = tf.getKernel("Softmax", "wasm");
  if (!kernel) throw new Error("fusedAttention: the wasm backend has no Softmax kernel");
  return kernel.kernelFunc({
    inputs: { logits },
    attrs: { dim: logits.shape.length - 1 },
    backend: backend as unknown as tf.KernelBackend,
  }) as tf.TensorInfo;
}

/**
 * Gradient: dq, dk, dv from dy [B, Lq, Dv] and the saved q, k, v and probabilities. The score
 * gradient is `scale · P ⊙ (dP − rowsum(dP ⊙ P))`; with it dq = dS · k, dk = dSᵀ · q and
 * dv = Pᵀ · dy, head by head (each (sample, head) pair on one thread, _attention_heads.ts),
 * each written into its columns in place.
 */
function attentionGradKernel(args: WasmKernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WasmHeapBackend;
  const { dy, q, k, v, probs } = args.inputs;
  const { heads, scale } = args.attrs as unknown as AttentionAttrs;
  const { b, lq, lk, dAll, d, dvAll, dv } = dimsOf(q, v, k.shape[1], heads);
  const [dq, dk, dvT] = [q, k, v].map((t) => backend.makeOutput(t.shape, "float32"));
  const g = gemmSimdFor(backend, "fusedAttention");
  const phase = newPhase(HEAD_PHASE.grad, { heads, lq, lk, dAll, d, dvAll, dv });
  const offsets = [dy, q, k, v, probs, dq, dk, dvT].map((t) => heapOffset(backend, t));
  [
    phase[PHASE.dy],
    phase[PHASE.q],
    phase[PHASE.k],
    phase[PHASE.v],
    phase[PHASE.p],
    phase[PHASE.dq],
    phase[PHASE.dk],
    phase[PHASE.dvOut],
  ] = offsets;
  setPhaseScale(phase, scale);
  runHeadPhase(backend, g, phase, b * heads);
  return [dq, dk, dvT];
}

const KERNELS = [[ATTENTION, attentionKernel], [ATTENTION_GRAD, attentionGradKernel]] as const;

/**
 * The attention core's kernel functions (forward: `[out, probs]`; backward: `[dq, dk, dv]`),
 * for composite kernels that call them directly on the heap instead of through tfjs' engine
 * (fused_attention_block.ts).
 *
 * @example
 * ```ts
 * import { attentionKernels } from "./fused_attention.ts";
 * // inside a kernel: const [out, probs] = attentionKernels.forward({ inputs: { q, k, v }, backend, attrs });
 * console.log(Object.keys(attentionKernels));
 * ```
 */
export const attentionKernels = {
  forward: attentionKernel,
  backward: attentionGradKernel,
} as const;

/**
 * Whether {@linkcode fusedAttention} takes these tensors now: the `fusedAttention` and
 * `packedMatmul` switches are on, the backend is wasm, and q [B, Lq, D], k [B, Lk, D] and
 * v [B, Lk, Dv] are float32 with `heads` dividing D and Dv.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedAttentionFits } from "@texforce/core/adapters";
 * const q = tf.ones([1, 4, 8]);
 * console.log(fusedAttentionFits(q, q, q, 2));
 * ```
 */
export function fusedAttentionFits(q: Tensor, k: Tensor, v: Tensor, heads: number): boolean {
  if (!useWasmKernel("fusedAttention") || !useWasmKernel("packedMatmul")) return false;
  if (![q, k, v].every((t) => t.rank === 3 && t.dtype === "float32")) return false;
  const [[b, , d], [bk, lk, dk], [bv, lv, dv]] = [q.shape, k.shape, v.shape] as number[][];
  return b === bk && b === bv && d === dk && lk === lv && Number.isInteger(heads) && heads > 0 &&
    d % heads === 0 && dv % heads === 0;
}

/**
 * Multi-head softmax(q kᵀ · scale + mask) v for q [B, Lq, D], k [B, Lk, D], v [B, Lk, Dv] with
 * `heads` heads (`mask`, additive and constant, broadcasts to the [B, heads, Lq, Lk] scores),
 * differentiable in q, k and v: one node on the tape, the head split and merge inside it.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fusedAttention } from "@texforce/core/adapters";
 * // on the wasm backend:
 * const q = tf.ones([1, 4, 8]);
 * const y = fusedAttention(q, q, q, 2, 1 / Math.sqrt(4)); // [1, 4, 8]
 * ```
 */
export function fusedAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  heads: number,
  scale: number,
  mask?: Tensor,
): Tensor {
  if (!fusedAttentionFits(q, k, v, heads)) {
    throw new Error(
      `fusedAttention: needs float32 q [B, Lq, D], k [B, Lk, D], v [B, Lk, Dv] with ${heads} ` +
        `heads dividing D and Dv, on wasm with the fusedAttention and packedMatmul switches on ` +
        `(got [${q.shape}], [${k.shape}], [${v.shape}] on ${tf.getBackend()})`,
    );
  }
  registerWasmKernels(KERNELS);
  const attrs = { heads, scale } as never;
  const f = tf.customGrad((qq, kk, vv, save) => {
    const qkv = { q: qq as Tensor, k: kk as Tensor, v: vv as Tensor };
    const inputs = mask ? { ...qkv, mask } : qkv;
    const [value, probs] = tf.engine().runKernel(ATTENTION, inputs, attrs) as Tensor[];
    (save as tf.GradSaveFunc)([qkv.q, qkv.k, qkv.v, probs]);
    probs.dispose();
    return {
      value,
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]): Tensor[] => {
        const [sq, sk, sv, sp] = saved;
        return tf.engine().runKernel(
          ATTENTION_GRAD,
          { dy: dy as Tensor, q: sq, k: sk, v: sv, probs: sp },
          attrs,
        ) as Tensor[];
      },
    };
  });
  return f(q, k, v) as Tensor;
}
