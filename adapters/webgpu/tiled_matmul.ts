/**
 * Matrix product as a WebGPU compute shader with shared-memory tiles: each workgroup of 16 × 16
 * threads computes a 64 × 64 block of the output, each thread a 4 × 4 sub-block held in
 * registers, streaming 64 × 16 slices of both operands through workgroup memory. Either operand
 * may be transposed (read in place, no copy), so the gradients are the same kernel:
 * for C = A·B, dA = dC·Bᵀ and dB = Aᵀ·dC.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Tensor, Tensor1D, Tensor2D } from "../../core/tensor_types.ts";
import {
  registerWebgpuKernel,
  runKernel,
  type WebGPUBackendLike,
  wgslProgram,
} from "./_program.ts";

const KERNEL = "TexforceTiledMatMul";
const TILE = 64;
const TK = 16;

function matMulKernel(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: unknown;
  attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const backend = args.backend as WebGPUBackendLike;
  const { a, b, bias } = args.inputs as Record<string, tf.TensorInfo | undefined>;
  const { transposeA, transposeB } = args.attrs as unknown as {
    transposeA: boolean;
    transposeB: boolean;
  };
  const batch = a!.shape.length === 3 ? a!.shape[0] : 1;
  const [ar, ac] = a!.shape.slice(-2);
  const [br, bc] = b!.shape.slice(-2);
  const m = transposeA ? ac : ar;
  const k = transposeA ? ar : ac;
  const n = transposeB ? br : bc;
  // Element (row, kk) of op(A) and (kk, col) of op(B), as flat indices within one batch.
  const aIndex = transposeA ? "kk * uniforms.m + row" : "row * uniforms.k + kk";
  const bIndex = transposeB ? "col * uniforms.k + kk" : "kk * uniforms.n + col";
  // Map a thread's load slot to tile coordinates so that consecutive threads read consecutive
  // addresses of the operand as it is stored.
  const aSlot = transposeA
    ? "let r = e % 64; let kk0 = e / 64;"
    : "let r = e / 16; let kk0 = e % 16;";
  const bSlot = transposeB
    ? "let r = e / 16; let kk0 = e % 16;"
    : "let r = e % 64; let kk0 = e / 64;";
  const code = `
    // asub[kk * 16 + i] holds rows 4i..4i+3 of column kk of the A slice; bsub likewise for B.
    var<workgroup> asub : array<vec4<f32>, ${TK * 16}>;
    var<workgroup> bsub : array<vec4<f32>, ${TK * 16}>;
    fn main() {
      let tx = i32(localId.x) % 16;
      let ty = i32(localId.x) / 16;
      let tid = i32(localId.x);
      let row0 = i32(workgroupId.y) * ${TILE};
      let col0 = i32(workgroupId.x) * ${TILE};
      let bt = i32(workgroupId.z);
      let aOff = bt * uniforms.m * uniforms.k;
      let bOff = bt * uniforms.k * uniforms.n;
      var acc : array<vec4<f32>, 4>;
      for (var i = 0; i < 4; i++) { acc[i] = vec4<f32>(0.0); }
      for (var k0 = 0; k0 < uniforms.k; k0 += ${TK}) {
        for (var s = 0; s < 4; s++) {
          let e = tid + s * 256;
          {
            ${aSlot}
            let row = row0 + r;
            let kk = k0 + kk0;
            var v = 0.0;
            if (row < uniforms.m && kk < uniforms.k) { v = a[aOff + ${aIndex}]; }
            asub[kk0 * 16 + r / 4][r % 4] = v;
          }
          {
            ${bSlot}
            let col = col0 + r;
            let kk = k0 + kk0;
            var v = 0.0;
            if (col < uniforms.n && kk < uniforms.k) { v = b[bOff + ${bIndex}]; }
            bsub[kk0 * 16 + r / 4][r % 4] = v;
          }
        }
        workgroupBarrier();
        for (var kk = 0; kk < ${TK}; kk++) {
          let av = asub[kk * 16 + ty];
          let bv = bsub[kk * 16 + tx];
          acc[0] += av.x * bv;
          acc[1] += av.y * bv;
          acc[2] += av.z * bv;
          acc[3] += av.w * bv;
        }
        workgroupBarrier();
      }
      let cOff = bt * uniforms.m * uniforms.n;
      for (var i = 0; i < 4; i++) {
        let row = row0 + ty * 4 + i;
        if (row < uniforms.m) {
          for (var j = 0; j < 4; j++) {
            let col = col0 + tx * 4 + j;
            if (col < uniforms.n) {
              ${
    bias
      ? "result[cOff + row * uniforms.n + col] = acc[i][j] + bias[col];"
      : "result[cOff + row * uniforms.n + col] = acc[i][j];"
  }
            }
          }
        }
      }
    }`;
  const program = wgslProgram({
    key: `texforceTiledMatMul_${transposeA}_${transposeB}_${bias ? "bias" : ""}`,
    outputSize: batch * m * n,
    dispatch: [Math.ceil(n / TILE), Math.ceil(m / TILE), batch],
    workgroupSize: 256,
    inputs: bias ? ["a", "b", "bias"] : ["a", "b"],
    uniforms: "m : i32, n : i32, k : i32,",
    code,
  });
  const inputs = bias ? [a!, b!, bias] : [a!, b!];
  const flat = backend.runWebGPUProgram(program, inputs, "float32", [
    { type: "int32", data: [m] },
    { type: "int32", data: [n] },
    { type: "int32", data: [k] },
  ]);
  // Same buffer, the product's shape (as tfjs' own reshape does).
  return {
    dataId: flat.dataId,
    shape: a!.shape.length === 3 ? [batch, m, n] : [m, n],
    dtype: "float32",
  };
}

function register(): void {
  registerWebgpuKernel(KERNEL, matMulKernel as unknown as tf.KernelFunc);
}

function checkShapes(a: Tensor, b: Tensor, transposeA: boolean, transposeB: boolean): void {
  const ka = transposeA ? a.shape[a.rank - 2] : a.shape[a.rank - 1];
  const kb = transposeB ? b.shape[b.rank - 1] : b.shape[b.rank - 2];
  const ranksOk = (a.rank === 2 && b.rank === 2) ||
    (a.rank === 3 && b.rank === 3 && a.shape[0] === b.shape[0]);
  if (!ranksOk || ka !== kb) {
    throw new Error(
      `tiledMatMul: expected 2-D operands or 3-D ones with equal batch and matching inner ` +
        `sizes; got ${a.shape}${transposeA ? "ᵀ" : ""} · ${b.shape}${transposeB ? "ᵀ" : ""}`,
    );
  }
}

/** The product alone, no gradient (the kernel). */
function product(a: Tensor, b: Tensor, transposeA: boolean, transposeB: boolean, bias?: Tensor) {
  register();
  const inputs: Record<string, Tensor> = { a, b };
  if (bias) inputs.bias = bias;
  return runKernel(KERNEL, inputs, { transposeA, transposeB });
}

/**
 * `op(a) · op(b)` for 2-D operands (or 3-D with equal batch) on the webgpu backend, with
 * gradients for both operands from the same kernel with transposes. Same result as
 * `tf.matMul(a, b, transposeA, transposeB)` up to float rounding.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { tiledMatMul } from "@texforce/core/adapters";
 * const c = tiledMatMul(tf.ones([2048, 2048]), tf.ones([2048, 2048])); // on webgpu
 * ```
 */
export function tiledMatMul(
  a: Tensor,
  b: Tensor,
  transposeA = false,
  transposeB = false,
): Tensor {
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`tiledMatMul: needs the webgpu backend (active: ${tf.getBackend()})`);
  }
  checkShapes(a, b, transposeA, transposeB);
  const f = tf.customGrad((aa, bb, save) => {
    const [at, bt] = [aa, bb] as Tensor[];
    (save as tf.GradSaveFunc)([at, bt]);
    return {
      value: product(at, bt, transposeA, transposeB),
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]): Tensor[] => {
        const [sa, sb] = saved;
        const g = dy as Tensor;
        if (!transposeA && !transposeB) {
          return [product(g, sb, false, true), product(sa, g, true, false)];
        }
        if (transposeA && !transposeB) {
          return [product(sb, g, false, true), product(sa, g, false, false)];
        }
        if (!transposeA && transposeB) {
          return [product(g, sb, false, false), product(g, sa, true, false)];
        }
        return [product(sb, g, true, true), product(g, sa, true, true)];
      },
    };
  });
  return f(a, b) as Tensor;
}

/**
 * `x · w (+ bias)` for a frozen weight `w` [in, out] on webgpu: the tiled kernel forward (bias
 * added in the kernel) and for the gradient to `x`, `dy · wᵀ`; no weight gradient.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { tiledConstLinear } from "@texforce/core/adapters";
 * const f = tiledConstLinear(tf.ones([320, 640]) as tf.Tensor2D);
 * const y = f(tf.ones([4096, 320]) as tf.Tensor2D); // on webgpu
 * ```
 */
export function tiledConstLinear(w: Tensor2D, bias?: Tensor1D): (x: Tensor2D) => Tensor2D {
  return (x: Tensor2D): Tensor2D => {
    checkShapes(x, w, false, false);
    const f = tf.customGrad((xx) => ({
      value: product(xx as Tensor, w, false, false, bias),
      gradFunc: (dy: Tensor | Tensor[]) => product(dy as Tensor, w, false, true),
    }));
    return f(x) as Tensor2D;
  };
}
