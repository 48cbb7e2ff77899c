/**
 * Products with a constant right-hand side on the wasm backend, `x · w (+ bias)`, by texforce's
 * own register-blocked WebAssembly SIMD kernel (gemm_simd_wat.ts) instead of XNNPACK's: `w` is
 * packed once into panels of 8 columns ({@linkcode packWeight}), then every product reads it in
 * order. The bias is added in the kernel (its accumulators start there), not by a second pass.
 *
 * Why: tfjs 4.22's XNNPACK build has no relaxed-SIMD (FMA) kernels; on this project's 2-core
 * AMD EPYC it multiplies CLIP's 154 × 768 · 768 × 3072 at 10–20 GFLOP/s on one thread, this
 * kernel at 33–49, and such products are three quarters of the text encoder's forward and
 * backward.
 * With the threaded build, the panels are shared with texforce's own workers
 * (_gemm_threads.ts); every output is computed the same way whichever thread takes it.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { registerWasmKernels, type WasmKernelArgs } from "./_kernel_registry.ts";
import type { Tensor, Tensor1D, Tensor2D } from "../../core/tensor_types.ts";
import { heapOffset, type WasmHeapBackend } from "./_wasm_heap.ts";
import { GEMM_PANEL_COLUMNS } from "./gemm_simd_wat.ts";
import { useWasmKernel } from "./kernel_options.ts";
import { gemmSimdFor, runGemmPanels } from "./_gemm_threads.ts";

const PACK = "TexforceWasmPack";
const MATMUL = "TexforceWasmPackedMatMul";

function packKernel(args: WasmKernelArgs): tf.TensorInfo {
  const backend = args.backend as WasmHeapBackend;
  const { w } = args.inputs;
  const transposed = (args.attrs as { transposed: boolean }).transposed;
  const [k, n] = w.shape;
  const out = backend.makeOutput([k * n], "float32");
  const g = gemmSimdFor(backend, "packedMatMul");
  (transposed ? g.pack_transposed : g.pack)(
    heapOffset(backend, w),
    k,
    n,
    n,
    heapOffset(backend, out),
  );
  return out;
}

function matMulKernel(args: WasmKernelArgs): tf.TensorInfo {
  const backend = args.backend as WasmHeapBackend;
  const { x, packed, bias } = args.inputs;
  const n = (args.attrs as { n: number }).n;
  const k = x.shape[x.shape.length - 1];
  const m = k === 0 ? 0 : x.shape.reduce((a, b) => a * b, 1) / k;
  const out = backend.makeOutput([...x.shape.slice(0, -1), n], "float32");
  const g = gemmSimdFor(backend, "packedMatMul");
  runGemmPanels(backend, g, {
    m,
    n,
    k,
    a: heapOffset(backend, x),
    b: heapOffset(backend, packed),
    bias: bias ? heapOffset(backend, bias) : 0,
    c: heapOffset(backend, out),
  });
  return out;
}

const KERNELS = [[PACK, packKernel], [MATMUL, matMulKernel]] as const;

/**
 * The packed product's kernel function (`{ x, packed, bias? }`, attribute `n`), for composite
 * kernels that call it directly on the heap instead of through tfjs' engine.
 *
 * @example
 * ```ts
 * import { packedProductKernel } from "./packed_matmul.ts";
 * // inside a kernel: const y = packedProductKernel({ inputs: { x, packed }, backend, attrs: { n } });
 * console.log(typeof packedProductKernel);
 * ```
 */
export const packedProductKernel = matMulKernel;

/**
 * A constant matrix packed for {@linkcode packedMatMul}: `[k, n]` as panels of 8 columns.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { packWeight } from "@texforce/core/adapters";
 * // on the wasm backend:
 * const p = packWeight(tf.ones([16, 8]) as tf.Tensor2D);
 * p.dispose();
 * ```
 */
export class PackedWeight {
  /**
   * @param panels `[n / 8][k][8]` flattened.
   * @param k Rows (the product's inner dimension).
   * @param n Columns.
   */
  constructor(readonly panels: Tensor1D, readonly k: number, readonly n: number) {}

  /** Release the panels. */
  dispose(): void {
    this.panels.dispose();
  }
}

/** A frozen linear layer in kernel-ready form: w packed, wᵀ packed (its input gradient), bias. */
export interface PackedProjection {
  /** w [in, out] packed. */
  w: PackedWeight;
  /** w packed transposed. */
  wT: PackedWeight;
  /** [out], if the layer has one. */
  bias?: Tensor1D;
}

/**
 * Whether a {@linkcode PackedProjection} maps `k` inputs to `n` outputs (w, wᵀ and bias agree).
 *
 * @example
 * ```ts
 * import { type PackedProjection, projectionFits } from "./packed_matmul.ts";
 * declare const p: PackedProjection;
 * console.log(projectionFits(p, 32, 64));
 * ```
 */
export function projectionFits(p: PackedProjection, k: number, n: number): boolean {
  return p.w.k === k && p.w.n === n && p.wT.k === n && p.wT.n === k &&
    (!p.bias || p.bias.shape[0] === n);
}

/**
 * Whether {@linkcode packedMatMul} takes a right-hand side of `n` columns now: the
 * `packedMatmul` switch is on, the backend is wasm and `n` is a multiple of 8.
 *
 * @example
 * ```ts
 * import { packedMatMulFits } from "@texforce/core/adapters";
 * console.log(packedMatMulFits(768));
 * ```
 */
export function packedMatMulFits(n: number): boolean {
  return n % GEMM_PANEL_COLUMNS === 0 && useWasmKernel("packedMatmul");
}

/**
 * Pack `w` [k, n] (or, with `transposed`, `wᵀ` [n, k], for products `dy · wᵀ`) for
 * {@linkcode packedMatMul}. The result is a new tensor (keep or dispose it like any other).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { packWeight } from "@texforce/core/adapters";
 * // on the wasm backend:
 * const p = packWeight(tf.ones([16, 8]) as tf.Tensor2D);
 * console.log(p.k, p.n); // 16 8
 * ```
 */
export function packWeight(w: Tensor2D, transposed = false): PackedWeight {
  const [rows, cols] = w.shape;
  const [k, n] = transposed ? [cols, rows] : [rows, cols];
  if (tf.getBackend() !== "wasm" || n % GEMM_PANEL_COLUMNS !== 0 || w.dtype !== "float32") {
    throw new Error(
      `packWeight: needs a float32 matrix on wasm whose product has a multiple of ` +
        `${GEMM_PANEL_COLUMNS} columns (got ${w.dtype} [${w.shape}]${
          transposed ? " transposed" : ""
        } on ${tf.getBackend()})`,
    );
  }
  registerWasmKernels(KERNELS);
  const panels = tf.engine().runKernel(PACK, { w }, { transposed } as never) as Tensor1D;
  return new PackedWeight(panels, k, n);
}

/**
 * `x · w (+ bias)` for x [.., k] (leading axes are rows) and a packed `w` (no gradient: it is a
 * building block for layers that define their own, such as `constLinear`).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { packedMatMul, packWeight } from "@texforce/core/adapters";
 * // on the wasm backend:
 * const w = packWeight(tf.ones([4, 8]) as tf.Tensor2D);
 * const y = packedMatMul(tf.ones([3, 4]) as tf.Tensor2D, w, tf.zeros([8]) as tf.Tensor1D);
 * console.log(y.shape); // [3, 8]
 * ```
 */
export function packedMatMul<T extends Tensor>(x: T, w: PackedWeight, bias?: Tensor1D): T {
  if (
    x.rank < 1 || x.shape[x.rank - 1] !== w.k || x.dtype !== "float32" ||
    (bias && bias.shape[0] !== w.n)
  ) {
    throw new Error(
      `packedMatMul: ${x.dtype} x [${x.shape}] does not fit a packed [${w.k}, ${w.n}] weight` +
        (bias ? ` with bias [${bias.shape}]` : ""),
    );
  }
  registerWasmKernels(KERNELS);
  const inputs: tf.NamedTensorMap = bias ? { x, packed: w.panels, bias } : { x, packed: w.panels };
  return tf.engine().runKernel(MATMUL, inputs, { n: w.n } as never) as T;
}
