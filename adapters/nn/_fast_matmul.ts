// 2-D matrix products whose gradients use only untransposed matMuls.
//
// tfjs' wasm backend runs a matMul on XNNPACK only when neither side is transposed and there is
// no batch dimension; every other form falls back to a scalar loop about 10× slower. The stock
// gradient of `a·b` is `dy·bᵀ` and `aᵀ·dy`, i.e. exactly those slow forms, which made the
// backward pass of the CLIP text encoder ten times its forward. Rewriting `dy·bᵀ` as
// `(b·dyᵀ)ᵀ` and `aᵀ·dy` with an explicit transpose keeps every product on the fast path; the
// extra transposes are cheap on every backend.
import * as tf from "@tensorflow/tfjs";
import type { Tensor, Tensor1D, Tensor2D } from "../../core/tensor_types.ts";
import { tiledConstLinear, tiledMatMul } from "../webgpu/tiled_matmul.ts";
import { useWebgpuKernel } from "../webgpu/kernel_options.ts";
import { wasmBatchMatMulIsFast } from "../../core/backend.ts";
import { packedMatMul, packedMatMulFits, packWeight } from "../wasm/packed_matmul.ts";
import { copiesOf, WeightCopies } from "./weight_copies.ts";
import { simdProduct, simdProductFits } from "../wasm/simd_product.ts";

// On webgpu, products with at least this many rows go to texforce's tiled kernel; thinner ones
// (time embeddings, a handful of rows) would leave most of a 64-row tile idle.
const TILED_MIN_ROWS = 32;

type CustomGradFunc = Parameters<typeof tf.customGrad>[0];

/**
 * `dy · bᵀ` for `y = a · b` (a [m, k], b [k, n]) in the cheaper of two forms: `(b · dyᵀ)ᵀ`
 * moves dy twice (transpose, XNNPACK's packing of the right-hand side) and the [k, m] product
 * once; `dy · bᵀ` (the wasm BatchMatMul transposes b explicitly) moves b twice. Big frozen
 * weights against few rows (CLIP: 154 rows, 768 × 3072) favour the first; small matrices
 * against many rows (LoRA factors, the tiny UNet's 32 × 32 projections over 512 positions) the
 * second, by 5–20× in moved values.
 */
function inputGradient(dy: Tensor2D, b: Tensor2D): Tensor2D {
  const [k, n] = b.shape;
  const m = dy.shape[0];
  // Other backends transpose inside their matMul for free.
  if (tf.getBackend() !== "wasm") return tf.matMul(dy, b, false, true);
  if (wasmBatchMatMulIsFast() && 2 * k * n < 2 * m * n + k * m) {
    return tf.matMul(dy, b, false, true);
  }
  return tf.transpose(tf.matMul(b, tf.transpose(dy)));
}

/**
 * `aᵀ · dy` for `y = a · b` (a [m, k], dy [m, n]). On wasm, XNNPACK packs the right-hand side
 * of every product whose right-hand tensor it has not seen (a fresh operator each time): packing
 * a wide dy is the dominant cost when `a` is thin (LoRA's rank-16 activations: `16×154 ·
 * 154×768` took 1.2 ms for 3.8 MFLOP), so there `(dyᵀ · a)ᵀ` packs the thin `a` instead and
 * pays two transposes (0.2 ms).
 */
function weightGradient(a: Tensor2D, dy: Tensor2D): Tensor2D {
  const k = a.shape[1];
  const n = dy.shape[1];
  if (tf.getBackend() === "wasm" && wasmBatchMatMulIsFast() && 4 * k < n) {
    return tf.transpose(tf.matMul(tf.transpose(dy), a));
  }
  return tf.matMul(tf.transpose(a), dy);
}

/** `a · b` (2-D) with gradients for both inputs computed from untransposed products. */
const matMul2dStock: (a: Tensor2D, b: Tensor2D) => Tensor2D = tf.customGrad(
  ((a: Tensor2D, b: Tensor2D, save: tf.GradSaveFunc) => {
    save([a, b]);
    return {
      value: tf.matMul(a, b),
      gradFunc: (dy: Tensor2D, saved: Tensor[]) => {
        const [sa, sb] = saved as [Tensor2D, Tensor2D];
        return [inputGradient(dy, sb), weightGradient(sa, dy)];
      },
    };
  }) as unknown as CustomGradFunc,
) as unknown as (a: Tensor2D, b: Tensor2D) => Tensor2D;

/**
 * `a · b` (2-D; `a · bᵀ` with `transposeB`) with gradients for both inputs: texforce's SIMD
 * product on wasm, its tiled kernel on webgpu, else products whose gradients are untransposed.
 */
export function matMul2d(a: Tensor2D, b: Tensor2D, transposeB = false): Tensor2D {
  if (simdProductFits(a, b)) return simdProduct(a, b, false, transposeB) as Tensor2D;
  const rhs = transposeB ? tf.transpose(b) : b;
  if (useWebgpuKernel("tiledMatmul") && a.shape[0] >= TILED_MIN_ROWS) {
    return tiledMatMul(a, rhs) as Tensor2D;
  }
  return matMul2dStock(a, rhs);
}

/** A frozen linear layer's product, and the release of what it cached. */
export interface ConstLinear {
  /** `x` [.., in] → [.., out]: leading axes are rows. */
  <T extends Tensor>(x: T): T;
  /** Dispose the cached copies of the weight, if any were made. */
  dispose(): void;
}

/**
 * `x · w (+ bias)` for a constant weight `w` [in, out]: the gradient flows to `x` only (no
 * wasted weight gradient). On wasm the forward and the input gradient `dy · wᵀ` run on
 * texforce's packed SIMD kernel (`packedMatMul`, bias added in the kernel) where the widths are
 * multiples of 8, else on XNNPACK in the cheaper of `dy · wᵀ` and `(w · dyᵀ)ᵀ`. With
 * `cacheWeights` (for weights used many times, such as a text encoder's) the packed or
 * transposed copies of `w` are made once and kept (within a per-process budget) until
 * `dispose()`; without, they are made per call.
 */
export function constLinear(
  w: Tensor2D,
  bias?: Tensor1D,
  options: { cacheWeights?: boolean } = {},
): ConstLinear {
  const copies = options.cacheWeights ? new WeightCopies(w, true) : copiesOf(w);
  const stock = constLinearStock(w, bias, copies);
  const tiled = tiledConstLinear(w, bias);
  const [k, n] = w.shape;
  const f = (<T extends Tensor>(x: T): T => {
    const rows = k === 0 ? 0 : x.size / k;
    if (!useWebgpuKernel("tiledMatmul") || rows < TILED_MIN_ROWS) return stock(x);
    return tf.tidy(() =>
      tiled(x.reshape([rows, k]) as Tensor2D).reshape([...x.shape.slice(0, -1), n]) as T
    );
  }) as ConstLinear;
  f.dispose = () => {
    if (options.cacheWeights) copies.dispose();
  };
  return f;
}

/**
 * Make the copies of a frozen linear weight `w` [in, out] that {@linkcode constLinear} uses on
 * the current backend (packed w and wᵀ for texforce's wasm product), kept in `copies`.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { prepareLinearCopies } from "./_fast_matmul.ts";
 * import { keepCopies } from "./weight_copies.ts";
 * const w = tf.ones([32, 64]) as tf.Tensor2D;
 * prepareLinearCopies(w, keepCopies(w));
 * ```
 */
export function prepareLinearCopies(w: Tensor2D, copies: WeightCopies): void {
  const [k, n] = w.shape;
  if (packedMatMulFits(n)) copies.prepare("packed", () => packWeight(w));
  if (packedMatMulFits(k)) copies.prepare("packedT", () => packWeight(w, true));
  else if (tf.getBackend() === "wasm") copies.prepare("transposed", () => tf.transpose(w));
}

// Inputs of any rank ≥ 2 are rows over their leading axes: the packed kernel takes them as they
// are, the other products after a reshape to 2-D inside the custom gradient (so the tape holds
// one node per layer, not three).
function constLinearStock(
  w: Tensor2D,
  bias: Tensor1D | undefined,
  copies: WeightCopies,
): <T extends Tensor>(x: T) => T {
  const [k, n] = w.shape;
  const rowsOf = (t: Tensor, width: number) => t.reshape([-1, width]) as Tensor2D;
  return tf.customGrad(
    ((x: Tensor) => {
      const lead = x.shape.slice(0, -1);
      let value: Tensor;
      if (packedMatMulFits(n)) {
        value = copies.with("packed", () => packWeight(w), (p) => packedMatMul(x, p, bias));
      } else {
        const y = tf.matMul(rowsOf(x, k), w);
        value = (bias ? tf.add(y, bias) : y).reshape([...lead, n]);
      }
      return {
        value,
        gradFunc: (dy: Tensor) => {
          if (packedMatMulFits(k)) {
            return copies.with("packedT", () => packWeight(w, true), (p) => packedMatMul(dy, p));
          }
          const dy2 = rowsOf(dy, n);
          const dx = !copies.cache || tf.getBackend() !== "wasm"
            ? inputGradient(dy2, w)
            // A kept wᵀ makes `dy · wᵀ` an untransposed product whose packed right-hand side
            // XNNPACK keeps (its operator cache is keyed by the tensor), as in the forward.
            : copies.with("transposed", () => tf.transpose(w), (wT) => tf.matMul(dy2, wT));
          return dx.reshape([...lead, k]);
        },
      };
    }) as unknown as CustomGradFunc,
  ) as unknown as <T extends Tensor>(x: T) => T;
}

/** Products of a batch of 2-D matrices, one untransposed 2-D matMul each. */
function matMulEach(a: Tensor, b: Tensor): Tensor {
  // split + concat: tfjs-wasm's unstack and stack copy several times slower.
  const n = a.shape[0];
  const [m, p] = [a.shape[1] as number, b.shape[2] as number];
  const as = tf.split(a, n, 0);
  const bs = tf.split(b, n, 0);
  const ys = as.map((x, i) =>
    tf.matMul(
      x.reshape(x.shape.slice(1)) as Tensor2D,
      bs[i].reshape(bs[i].shape.slice(1)) as Tensor2D,
    )
      .reshape([1, m, p])
  );
  const out = tf.concat(ys, 0);
  tf.dispose([...as, ...bs, ...ys]);
  return out;
}

/** `a · b` for [n, m, k] · [n, k, p] on tfjs-wasm, with gradients from the same 2-D products. */
const batchMatMulWasm: (a: Tensor, b: Tensor) => Tensor = tf.customGrad(
  ((a: Tensor, b: Tensor, save: tf.GradSaveFunc) => {
    save([a, b]);
    return {
      value: matMulEach(a, b),
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sa, sb] = saved;
        const t = (x: Tensor) => tf.transpose(x, [0, 2, 1]);
        return [matMulEach(dy, t(sb)), matMulEach(t(sa), dy)];
      },
    };
  }) as unknown as CustomGradFunc,
) as unknown as (a: Tensor, b: Tensor) => Tensor;

/**
 * Batched `op(a) · op(b)` over the last two axes (leading axes equal, rank ≥ 3), like
 * `tf.matMul(a, b, transposeA, transposeB)`. On tfjs-wasm, whose batched and transposed
 * products miss XNNPACK, it transposes explicitly and multiplies each matrix of the batch with
 * an untransposed 2-D matMul, forward and backward: about 2–5× faster for attention's shapes
 * despite the extra copies. Other backends run the stock batched product.
 */
export function batchMatMul(
  a: Tensor,
  b: Tensor,
  transposeA = false,
  transposeB = false,
): Tensor {
  if (simdProductFits(a, b)) return simdProduct(a, b, transposeA, transposeB);
  // core/_wasm_kernels.ts's BatchMatMul already runs every shape on XNNPACK, without copies.
  if (tf.getBackend() !== "wasm" || wasmBatchMatMulIsFast()) {
    return tf.matMul(a, b, transposeA, transposeB);
  }
  return tf.tidy(() => {
    const lead = a.shape.slice(0, -2);
    const flat = (x: Tensor, transpose: boolean) => {
      const [r, c] = x.shape.slice(-2);
      const x3 = x.reshape([-1, r, c]);
      return transpose ? tf.transpose(x3, [0, 2, 1]) : x3;
    };
    const y = batchMatMulWasm(flat(a, transposeA), flat(b, transposeB));
    return y.reshape([...lead, ...y.shape.slice(-2)]);
  });
}
