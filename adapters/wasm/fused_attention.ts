/**
 * Attention's core, softmax(q kᵀ · scale + mask) v over heads, as one differentiable op on the
 * wasm backend: the products on texforce's SIMD kernel, tfjs' Softmax, and the softmax gradient
 * `scale · P ⊙ (dP − rowsum(dP ⊙ P))` as one kernel.
 *
 * Why: tfjs' composition (scale, softmax, their gradients) ran about 20 kernels per attention
 * forward + backward, among them broadcasting multiplies over the [.., Lq, Lk] probabilities
 * (1.9 ms each for the tiny UNet's 2 × 2 × 256 × 256 at batch 2), plus a tape node for each of
 * the head split's reshapes and transposes; here it is one tape node. The scale is applied to q (Lq × d values instead of Lq × Lk scores), and folded into
 * the score gradient, from which both q's and k's gradients follow (d(s·q) = dS·k; dk = dSᵀ·(s·q)
 * = (s·dS)ᵀ·q).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { registerWasmKernels, type WasmKernelArgs } from "./_kernel_registry.ts";
import type { WasmHeapBackend } from "./_wasm_heap.ts";
import type { Tensor } from "../../core/tensor_types.ts";
import { simdProductValue } from "./simd_product.ts";
import { useWasmKernel } from "./kernel_options.ts";

const SOFTMAX_GRAD = "TexforceWasmSoftmaxGrad";

/** scale · P ⊙ (dP − rowsum(dP ⊙ P)) over the last axis. */
function softmaxGradKernel(args: WasmKernelArgs): tf.TensorInfo {
  const backend = args.backend as WasmHeapBackend;
  const { p, dp } = args.inputs;
  const scale = (args.attrs as { scale: number }).scale;
  const out = backend.makeOutput(p.shape, "float32");
  // Views after the allocation (the heap may have grown).
  const [pv, dv, ov] = [p, dp, out].map((t) => backend.typedArrayFromHeap(t));
  const n = p.shape[p.shape.length - 1];
  for (let r = 0; r < pv.length; r += n) {
    let dot = 0;
    for (let j = r; j < r + n; j++) dot += dv[j] * pv[j];
    for (let j = r; j < r + n; j++) ov[j] = scale * pv[j] * (dv[j] - dot);
  }
  return out;
}

const KERNELS = [[SOFTMAX_GRAD, softmaxGradKernel]] as const;

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

/** [B, L, H·d] → [B, H, L, d] (and back with `merge`), no tape node of its own. */
function splitHeads(t: Tensor, heads: number): Tensor {
  const [b, l, d] = t.shape;
  if (heads === 1) return t.reshape([b, 1, l, d]);
  const x = t.reshape([b, l, heads, d / heads]);
  const y = tf.transpose(x, [0, 2, 1, 3]);
  x.dispose();
  return y;
}

function mergeHeads(t: Tensor): Tensor {
  const [b, h, l, d] = t.shape;
  if (h === 1) return t.reshape([b, l, d]);
  const x = tf.transpose(t, [0, 2, 1, 3]);
  const y = x.reshape([b, l, h * d]);
  x.dispose();
  return y;
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
  const f = tf.customGrad((qq, kk, vv, save) => {
    const [qh, kh, vh] = [qq, kk, vv].map((t) => splitHeads(t as Tensor, heads));
    const qs = tf.mul(qh, scale);
    let scores = simdProductValue(qs, kh, false, true);
    qs.dispose();
    if (mask) {
      const masked = tf.add(scores, mask);
      scores.dispose();
      scores = masked;
    }
    const probs = tf.softmax(scores);
    scores.dispose();
    (save as tf.GradSaveFunc)([qh, kh, vh, probs]);
    const oh = simdProductValue(probs, vh, false, false);
    const value = mergeHeads(oh);
    tf.dispose([qh, kh, vh, probs, oh]);
    return {
      value,
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]): Tensor[] => {
        const d = splitHeads(dy as Tensor, heads);
        const [sq, sk, sv, sp] = saved;
        const dp = simdProductValue(d, sv, false, true);
        const ds = tf.engine().runKernel(SOFTMAX_GRAD, { p: sp, dp }, { scale } as never) as Tensor;
        const grads = [
          simdProductValue(ds, sk, false, false),
          simdProductValue(ds, sq, true, false),
          simdProductValue(sp, d, true, false),
        ];
        const merged = grads.map(mergeHeads);
        tf.dispose([d, dp, ds, ...grads]);
        return merged;
      },
    };
  });
  return f(q, k, v) as Tensor;
}
