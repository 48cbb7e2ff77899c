/**
 * Matrix products of two computed tensors on the wasm backend — `op(a) · op(b)` over the last
 * two axes with equal leading (batch) axes, `op` an optional transpose — by texforce's SIMD
 * kernel (gemm_simd_wat.ts), with gradients for both inputs from the same kernel.
 *
 * Why: the products of attention (QKᵀ, P·V per head) and of LoRA (rank-16 factors) are small
 * and many; XNNPACK in tfjs 4.22 builds and packs a fresh operator for each matrix (every right
 * hand side is new), and its transposed and batched forms miss its fast path, so these ran at
 * 2–5 GFLOP/s. Here each matrix's right-hand side is packed into panels in one pass (transposed
 * on the way when asked) and multiplied by the register-blocked kernel, all batch entries in one
 * tfjs kernel. Columns need not come in eights: the last panel is padded with zeros and the
 * padding dropped.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { registerWasmKernels, type WasmKernelArgs } from "./_kernel_registry.ts";
import type { Tensor } from "../../core/tensor_types.ts";
import { heapOffset, type WasmHeapBackend } from "./_wasm_heap.ts";
import { gemmSimdFor, paddedColumns, runGemmUnpadded } from "./_gemm_threads.ts";
import { useWasmKernel } from "./kernel_options.ts";

const PRODUCT = "TexforceWasmProduct";

interface ProductAttrs {
  transposeA: boolean;
  transposeB: boolean;
}

/** [batch, m, k, n] of `op(a) · op(b)`. */
function dims(a: number[], b: number[], { transposeA, transposeB }: ProductAttrs): number[] {
  const [ar, ac] = a.slice(-2);
  const [br, bc] = b.slice(-2);
  const batch = a.slice(0, -2).reduce((x, v) => x * v, 1);
  return [batch, transposeA ? ac : ar, transposeA ? ar : ac, transposeB ? br : bc];
}

/**
 * Whether `aᵀ · b` (a [k, m], b [k, n]) is better taken as `(bᵀ · a)ᵀ`: transposing b [k, n]
 * and the [n, m] result instead of a [k, m], with a packed as the right-hand side. That pays
 * when m is much larger than n, as in LoRA's weight gradient `dyᵀ · h` (m = 768 features, n = 16
 * ranks, k = 154 tokens): a 118 K-value transpose becomes two of 2.5 K and 12 K, and the product's
 * 96 column panels (2 before) can be shared between threads. Every output is the same chain of
 * multiply-adds over k in order either way, so the values are bitwise the same.
 */
function transposedRoute(m: number, k: number, n: number): boolean {
  return k * m > k * n + n * m;
}

function productKernel(args: WasmKernelArgs): tf.TensorInfo {
  const backend = args.backend as WasmHeapBackend;
  const { a, b } = args.inputs;
  const attrs = args.attrs as unknown as ProductAttrs;
  const [batch, m, k, n] = dims(a.shape, b.shape, attrs);
  const out = backend.makeOutput([...a.shape.slice(0, -2), m, n], "float32");
  if (batch * m * n === 0) return out;
  const g = gemmSimdFor(backend, "simdProduct");
  const { _malloc: malloc, _free: free } = backend.wasm;
  const swapped = attrs.transposeA && !attrs.transposeB && transposedRoute(m, k, n);
  // The product run: [rows, cols] = [m, n], or [n, m] when swapped.
  const [rows, cols] = swapped ? [n, m] : [m, n];
  const padded = paddedColumns(cols);
  const packed = malloc(4 * Math.max(k, 1) * padded);
  const cPad = padded === cols ? 0 : malloc(4 * rows * padded);
  // The left operand transposed ([rows, k]), and the swapped product before its transpose.
  const left = attrs.transposeA ? malloc(4 * rows * k) : 0;
  const result = swapped ? malloc(4 * rows * cols) : 0;
  try {
    // Offsets after the allocations (tensor data does not move; the heap may grow).
    const [ao, bo, co] = [heapOffset(backend, a), heapOffset(backend, b), heapOffset(backend, out)];
    for (let i = 0; i < batch; i++) {
      const ai = ao + 4 * i * m * k;
      const bi = bo + 4 * i * k * n;
      const ci = co + 4 * i * m * n;
      if (swapped) {
        // (bᵀ · a)ᵀ: bᵀ [n, k] times a [k, m] packed, then the [n, m] result transposed.
        g.transpose(bi, k, n, left);
        g.pack(ai, k, m, m, packed);
        runGemmUnpadded(
          backend,
          g,
          { m: n, n: m, k, a: left, b: packed, bias: 0, c: result },
          cPad,
        );
        g.transpose(result, n, m, ci);
        continue;
      }
      if (left) g.transpose(ai, k, m, left);
      if (attrs.transposeB) g.pack_transposed(bi, n, k, k, packed);
      else g.pack(bi, k, n, n, packed);
      runGemmUnpadded(backend, g, { m, n, k, a: left || ai, b: packed, bias: 0, c: ci }, cPad);
    }
  } finally {
    free(packed);
    if (cPad) free(cPad);
    if (left) free(left);
    if (result) free(result);
  }
  return out;
}

const KERNELS = [[PRODUCT, productKernel]] as const;

/**
 * `op(a) · op(b)` by the SIMD kernel, not differentiable (for gradient functions of fused ops
 * that call the product themselves); the operands must fit ({@linkcode simdProductFits}).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { simdProductValue } from "./simd_product.ts";
 * // on the wasm backend:
 * const y = simdProductValue(tf.ones([2, 3, 4]), tf.ones([2, 5, 4]), false, true);
 * ```
 */
export function simdProductValue(
  a: Tensor,
  b: Tensor,
  transposeA: boolean,
  transposeB: boolean,
): Tensor {
  registerWasmKernels(KERNELS);
  return tf.engine().runKernel(PRODUCT, { a, b }, { transposeA, transposeB } as never) as Tensor;
}

const run = simdProductValue;

/**
 * Whether {@linkcode simdProduct} takes these operands now: the `packedMatmul` switch is on, the
 * backend is wasm, both are float32 of the same rank ≥ 2 with the same leading axes.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { simdProductFits } from "@texforce/core/adapters";
 * console.log(simdProductFits(tf.ones([2, 3, 4]), tf.ones([2, 4, 5])));
 * ```
 */
export function simdProductFits(a: Tensor, b: Tensor): boolean {
  const r = a.shape.length;
  return useWasmKernel("packedMatmul") && r >= 2 && b.shape.length === r &&
    a.dtype === "float32" && b.dtype === "float32" &&
    a.shape.slice(0, -2).every((v, i) => v === b.shape[i]);
}

/**
 * `op(a) · op(b)` over the last two axes (like `tf.matMul(a, b, transposeA, transposeB)`
 * without broadcasting), with gradients for a and b, on the wasm backend's SIMD kernel.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { simdProduct } from "@texforce/core/adapters";
 * // on the wasm backend:
 * const y = simdProduct(tf.ones([2, 3, 4]), tf.ones([2, 5, 4]), false, true);
 * console.log(y.shape); // [2, 3, 5]
 * ```
 */
export function simdProduct(
  a: Tensor,
  b: Tensor,
  transposeA = false,
  transposeB = false,
): Tensor {
  const [ar, ac] = a.shape.slice(-2);
  const [br, bc] = b.shape.slice(-2);
  const inner = [transposeA ? ar : ac, transposeB ? bc : br];
  if (tf.getBackend() !== "wasm" || !simdProductFits(a, b) || inner[0] !== inner[1]) {
    throw new Error(
      `simdProduct: needs float32 operands of equal leading axes on wasm whose inner sizes ` +
        `match (got ${a.dtype} [${a.shape}]${transposeA ? "ᵀ" : ""} · ${b.dtype} [${b.shape}]${
          transposeB ? "ᵀ" : ""
        } on ${tf.getBackend()})`,
    );
  }
  registerWasmKernels(KERNELS);
  const f = tf.customGrad((x, y, save) => {
    (save as tf.GradSaveFunc)([x as Tensor, y as Tensor]);
    return {
      value: run(x as Tensor, y as Tensor, transposeA, transposeB),
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]): Tensor[] => {
        const d = dy as Tensor;
        const [sa, sb] = saved;
        if (!transposeA && !transposeB) return [run(d, sb, false, true), run(sa, d, true, false)];
        if (!transposeA) return [run(d, sb, false, false), run(d, sa, true, false)];
        if (!transposeB) return [run(sb, d, false, true), run(sa, d, false, false)];
        return [run(sb, d, true, true), run(d, sa, true, true)];
      },
    };
  });
  return f(a, b) as Tensor;
}
