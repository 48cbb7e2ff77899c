// The shared-memory tiled GEMM core behind tiledMatMul and the implicit-GEMM convolution: each
// workgroup of 16 × 16 threads computes a 64 × 64 block of C = A·B, each thread a 4 × 4
// sub-block in registers, streaming 64 × 16 slices of A and B through workgroup memory. The
// operands are never materialised as matrices: the caller supplies WGSL functions
// `readA(bt, row, kk)` and `readB(bt, kk, col)` returning one element (0 outside), so a
// transposed operand or a convolution's im2col view are just other index maps.
import type { WgslProgram } from "./_program.ts";
import { wgslProgram } from "./_program.ts";

/** Output tile side. */
export const GEMM_TILE = 64;
/** Inner-dimension slice per step. */
const TK = 16;

/** How one operand is read. */
export interface GemmOperand {
  /** WGSL body of the read function (parameters `bt`, then row/kk or kk/col), returning f32. */
  read: string;
  /**
   * Whether consecutive kk are consecutive in memory (row-major A, transposed B), so threads
   * of a slot load along kk; otherwise along rows/columns.
   */
  contiguousK: boolean;
}

/** Program for C [batch, m, n] = A·B (+ bias over n), with `uniforms` fields appended. */
export function gemmProgram(p: {
  key: string;
  batch: number;
  m: number;
  n: number;
  a: GemmOperand;
  b: GemmOperand;
  bias: boolean;
  /** Extra uniform fields after `m : i32, n : i32, k : i32,`. */
  uniforms?: string;
}): WgslProgram {
  const slot = (contiguousK: boolean) =>
    contiguousK ? "let r = e / 16; let kk0 = e % 16;" : "let r = e % 64; let kk0 = e / 64;";
  const code = `
    fn readA(bt : i32, row : i32, kk : i32) -> f32 { ${p.a.read} }
    fn readB(bt : i32, kk : i32, col : i32) -> f32 { ${p.b.read} }
    // asub[kk * 16 + i] holds rows 4i..4i+3 of column kk of the A slice; bsub likewise for B.
    var<workgroup> asub : array<vec4<f32>, ${TK * 16}>;
    var<workgroup> bsub : array<vec4<f32>, ${TK * 16}>;
    fn main() {
      let tx = i32(localId.x) % 16;
      let ty = i32(localId.x) / 16;
      let tid = i32(localId.x);
      let row0 = i32(workgroupId.y) * ${GEMM_TILE};
      let col0 = i32(workgroupId.x) * ${GEMM_TILE};
      let bt = i32(workgroupId.z);
      var acc : array<vec4<f32>, 4>;
      for (var i = 0; i < 4; i++) { acc[i] = vec4<f32>(0.0); }
      for (var k0 = 0; k0 < uniforms.k; k0 += ${TK}) {
        for (var s = 0; s < 4; s++) {
          let e = tid + s * 256;
          {
            ${slot(p.a.contiguousK)}
            let row = row0 + r;
            let kk = k0 + kk0;
            var v = 0.0;
            if (row < uniforms.m && kk < uniforms.k) { v = readA(bt, row, kk); }
            asub[kk0 * 16 + r / 4][r % 4] = v;
          }
          {
            ${slot(p.b.contiguousK)}
            let col = col0 + r;
            let kk = k0 + kk0;
            var v = 0.0;
            if (col < uniforms.n && kk < uniforms.k) { v = readB(bt, kk, col); }
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
              result[cOff + row * uniforms.n + col] = acc[i][j]${p.bias ? " + bias[col]" : ""};
            }
          }
        }
      }
    }`;
  return wgslProgram({
    key: p.key,
    outputSize: p.batch * p.m * p.n,
    dispatch: [Math.ceil(p.n / GEMM_TILE), Math.ceil(p.m / GEMM_TILE), p.batch],
    workgroupSize: 256,
    inputs: p.bias ? ["a", "b", "bias"] : ["a", "b"],
    uniforms: "m : i32, n : i32, k : i32," + (p.uniforms ?? ""),
    code,
  });
}
