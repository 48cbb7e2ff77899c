// The shared-memory tiled GEMM core behind tiledMatMul and the implicit-GEMM convolution: each
// workgroup of 16 × 16 threads computes a T × T block of C = A·B (T = 64 or 128), each thread a
// T/16 × T/16 sub-block in registers, streaming T × 16 slices of A and B through workgroup
// memory (8 or 16 KiB). The
// operands are never materialised as matrices: the caller supplies WGSL functions
// `readA(bt, row, kk)` and `readB(bt, kk, col)` returning one element (0 outside), so a
// transposed operand or a convolution's im2col view are just other index maps.
import type { WgslProgram } from "./_program.ts";
import { wgslProgram } from "./_program.ts";

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
  /** Output tile side: 64 (4 × 4 per thread) or 128 (8 × 8 per thread). */
  tile: 64 | 128;
  /**
   * Stage the operand slices in workgroup memory as f16 (half the bytes; needs the device
   * feature `shader-f16`), multiplying and accumulating in f32 all the same.
   */
  f16?: boolean;
}): WgslProgram {
  const f16 = p.f16 ?? false;
  const el = f16 ? "f16" : "f32";
  const T = p.tile;
  const u = T / 16; // outputs per thread along each axis
  const q = u / 4; // vec4s per thread along each axis
  const slot = (contiguousK: boolean) =>
    contiguousK ? "let r = e / 16; let kk0 = e % 16;" : `let r = e % ${T}; let kk0 = e / ${T};`;
  // acc[i * q + jv] holds row i, columns 4·jv..4·jv+3 of the thread's block.
  const widen = (e: string) => f16 ? `vec4<f32>(${e})` : e;
  const fma: string[] = [];
  for (let iv = 0; iv < q; iv++) {
    for (let c = 0; c < 4; c++) {
      for (let jv = 0; jv < q; jv++) {
        fma.push(`acc[${(iv * 4 + c) * q + jv}] += a${iv}.${"xyzw"[c]} * b${jv};`);
      }
    }
  }
  const reads = [
    ...Array.from(
      { length: q },
      (_, i) => `let a${i} = ${widen(`asub[kk * ${T / 4} + ty * ${q} + ${i}]`)};`,
    ),
    ...Array.from(
      { length: q },
      (_, j) => `let b${j} = ${widen(`bsub[kk * ${T / 4} + tx * ${q} + ${j}]`)};`,
    ),
  ];
  const inner = [...reads, ...fma].join("\n          ");
  // `enable f16;` must open the module: the device wrapper of f16.ts moves it there, ahead of
  // the preamble tfjs puts before this code.
  const code = `${f16 ? "enable f16;" : ""}
    fn readA(bt : i32, row : i32, kk : i32) -> f32 { ${p.a.read} }
    fn readB(bt : i32, kk : i32, col : i32) -> f32 { ${p.b.read} }
    // asub[kk * T/4 + i] holds rows 4i..4i+3 of column kk of the A slice; bsub likewise for B.
    var<workgroup> asub : array<vec4<${el}>, ${TK * T / 4}>;
    var<workgroup> bsub : array<vec4<${el}>, ${TK * T / 4}>;
    fn main() {
      let tx = i32(localId.x) % 16;
      let ty = i32(localId.x) / 16;
      let tid = i32(localId.x);
      let row0 = i32(workgroupId.y) * ${T};
      let col0 = i32(workgroupId.x) * ${T};
      let bt = i32(workgroupId.z);
      var acc : array<vec4<f32>, ${u * q}>;
      for (var i = 0; i < ${u * q}; i++) { acc[i] = vec4<f32>(0.0); }
      for (var k0 = 0; k0 < uniforms.k; k0 += ${TK}) {
        for (var s = 0; s < ${(T * TK) / 256}; s++) {
          let e = tid + s * 256;
          {
            ${slot(p.a.contiguousK)}
            let row = row0 + r;
            let kk = k0 + kk0;
            var v = 0.0;
            if (row < uniforms.m && kk < uniforms.k) { v = readA(bt, row, kk); }
            asub[kk0 * ${T / 4} + r / 4][r % 4] = ${el}(v);
          }
          {
            ${slot(p.b.contiguousK)}
            let col = col0 + r;
            let kk = k0 + kk0;
            var v = 0.0;
            if (col < uniforms.n && kk < uniforms.k) { v = readB(bt, kk, col); }
            bsub[kk0 * ${T / 4} + r / 4][r % 4] = ${el}(v);
          }
        }
        workgroupBarrier();
        for (var kk = 0; kk < ${TK}; kk++) {
          ${inner}
        }
        workgroupBarrier();
      }
      let cOff = bt * uniforms.m * uniforms.n;
      for (var i = 0; i < ${u}; i++) {
        let row = row0 + ty * ${u} + i;
        if (row < uniforms.m) {
          for (var j = 0; j < ${u}; j++) {
            let col = col0 + tx * ${u} + j;
            if (col < uniforms.n) {
              let v = acc[i * ${q} + j / 4][j % 4];
              result[cOff + row * uniforms.n + col] = v${p.bias ? " + bias[col]" : ""};
            }
          }
        }
      }
    }`;
  return wgslProgram({
    key: `${p.key}_t${T}${f16 ? "_f16" : ""}`,
    outputSize: p.batch * p.m * p.n,
    dispatch: [Math.ceil(p.n / T), Math.ceil(p.m / T), p.batch],
    workgroupSize: 256,
    inputs: p.bias ? ["a", "b", "bias"] : ["a", "b"],
    uniforms: "m : i32, n : i32, k : i32," + (p.uniforms ?? ""),
    code,
  });
}
