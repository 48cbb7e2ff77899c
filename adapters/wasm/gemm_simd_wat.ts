/**
 * The WebAssembly text of texforce's float32 matrix product for the wasm backend: `C = A · B
 * (+ bias)` with A [m, k] row-major and B packed in panels of 8 columns (`[n / 8][k][8]`), so
 * the 8 values of one k are one 32-byte load. The body is register-blocked 6 rows × 8 columns:
 * 12 accumulators, two B vectors and one broadcast A value fill 15 of x64's 16 vector
 * registers, and every multiply-add is one `f32x4.relaxed_madd` (a fused multiply-add where the
 * CPU has one). Tiles of 1–5 rows take the last rows. The k loop takes 4 steps an iteration
 * (loads at constant offsets from the row pointers), then the rest one by one: each output is
 * still one chain of multiply-adds over k in order, so results do not depend on the unrolling or
 * on how the panels are shared between threads.
 *
 * Measured on this project's 2-core AMD EPYC (one thread, alternating kernels call by call):
 * unrolling took CLIP's shapes (154 × 768 · 768 × 3072, 154 × 3072 · 3072 × 768, 154 × 768 ·
 * 768 × 768) and attention's 77 × 64 · 64 × 80 from 29–41 to 33–49 GFLOP/s (1.16–1.19×, same
 * bits; up to 51 when the VM runs fast), where XNNPACK's wasm SIMD kernel in tfjs 4.22 reaches
 * 10–20 (it has no relaxed-SIMD build and no FMA). Packing A into row blocks as well gained less
 * (1.03–1.09×).
 *
 * Written as a generator because the tiles are fully unrolled; `build_simd.ts` compiles it.
 *
 * @module
 */

/** Rows of the main tile. */
export const GEMM_TILE_ROWS = 6;
/** Columns of a panel (two v128 vectors). */
export const GEMM_PANEL_COLUMNS = 8;
/** k steps per iteration of the tiles' inner loop. */
export const GEMM_K_UNROLL = 4;

/**
 * Columns of a product padded to whole panels.
 *
 * @example
 * ```ts
 * import { paddedColumns } from "./gemm_simd_wat.ts";
 * console.log(paddedColumns(77)); // 80
 * ```
 */
export const paddedColumns = (n: number): number =>
  Math.ceil(n / GEMM_PANEL_COLUMNS) * GEMM_PANEL_COLUMNS;

/** The exports of gemm_simd_wat.ts. */
export interface GemmSimd {
  gemm(
    m: number,
    n: number,
    k: number,
    a: number,
    lda: number,
    b: number,
    bias: number,
    c: number,
    ldc: number,
    p0: number,
    p1: number,
  ): void;
  pack(w: number, k: number, n: number, ldw: number, out: number): void;
  pack_transposed(w: number, k: number, n: number, ldw: number, out: number): void;
  transpose(src: number, rows: number, cols: number, dst: number): void;
  unpad(src: number, m: number, padded: number, n: number, dst: number, ldd: number): void;
  softmax_grad(
    p: number,
    dp: number,
    ds: number,
    rows: number,
    n: number,
    ldp: number,
    scale: number,
  ): void;
}

/** One product's operands (byte offsets in the heap). */
export interface GemmJob {
  m: number;
  n: number;
  k: number;
  a: number;
  /** Values between A's rows (default k). */
  lda?: number;
  b: number;
  bias: number;
  c: number;
  /** Values between C's rows (default n). */
  ldc?: number;
}

function tile(rows: number): string {
  const acc = (r: number, h: number) => `$c${r}_${h}`;
  const out: string[] = [];
  out.push(
    `(func $tile${rows} (param $a i32) (param $lda i32) (param $k i32) (param $b i32)` +
      ` (param $bias i32) (param $c i32) (param $ldc i32)`,
  );
  for (let r = 0; r < rows; r++) out.push(`(local ${acc(r, 0)} v128) (local ${acc(r, 1)} v128)`);
  for (let r = 1; r < rows; r++) out.push(`(local $a${r} i32)`);
  out.push(
    `(local $b0 v128) (local $b1 v128) (local $av v128) (local $z0 v128) (local $z1 v128) (local $blocks i32)`,
  );
  // Accumulators start at the bias (or zero).
  out.push(`(if (local.get $bias) (then
    (local.set $z0 (v128.load (local.get $bias)))
    (local.set $z1 (v128.load offset=16 (local.get $bias)))))`);
  for (let r = 0; r < rows; r++) {
    out.push(`(local.set ${acc(r, 0)} (local.get $z0)) (local.set ${acc(r, 1)} (local.get $z1))`);
    if (r > 0) {
      out.push(
        `(local.set $a${r} (i32.add (local.get $a) (i32.mul (local.get $lda) (i32.const ${r}))))`,
      );
    }
  }
  const row = (r: number) => r === 0 ? "$a" : `$a${r}`;
  // One k step at `u` steps past the pointers (constant load offsets).
  const step = (u: number) => {
    const s = [
      `(local.set $b0 (v128.load offset=${32 * u} (local.get $b)))`,
      `(local.set $b1 (v128.load offset=${32 * u + 16} (local.get $b)))`,
    ];
    for (let r = 0; r < rows; r++) {
      s.push(`(local.set $av (v128.load32_splat offset=${4 * u} (local.get ${row(r)})))`);
      for (let h = 0; h < 2; h++) {
        s.push(
          `(local.set ${acc(r, h)} (f32x4.relaxed_madd (local.get $av) (local.get $b${h})` +
            ` (local.get ${acc(r, h)})))`,
        );
      }
    }
    return s.join("\n    ");
  };
  // Move every pointer `steps` k steps on.
  const advance = (steps: number) => {
    const s = Array.from(
      { length: rows },
      (_, r) => `(local.set ${row(r)} (i32.add (local.get ${row(r)}) (i32.const ${4 * steps})))`,
    );
    s.push(`(local.set $b (i32.add (local.get $b) (i32.const ${32 * steps})))`);
    return s.join("\n    ");
  };
  // k in blocks of GEMM_K_UNROLL steps, then the rest one by one: the same multiply-adds in the
  // same order, with a quarter of the pointer updates and loop branches.
  const unrolled = Array.from({ length: GEMM_K_UNROLL }, (_, u) => step(u)).join("\n    ");
  out.push(`(local.set $blocks (i32.div_u (local.get $k) (i32.const ${GEMM_K_UNROLL})))
  (local.set $k (i32.rem_u (local.get $k) (i32.const ${GEMM_K_UNROLL})))
  (if (local.get $blocks) (then (loop $kb
    ${unrolled}
    ${advance(GEMM_K_UNROLL)}
    (br_if $kb (local.tee $blocks (i32.sub (local.get $blocks) (i32.const 1)))))))
  (if (local.get $k) (then (loop $kl
    ${step(0)}
    ${advance(1)}
    (br_if $kl (local.tee $k (i32.sub (local.get $k) (i32.const 1)))))))`);
  for (let r = 0; r < rows; r++) {
    out.push(`(v128.store (local.get $c) (local.get ${acc(r, 0)}))`);
    out.push(`(v128.store offset=16 (local.get $c) (local.get ${acc(r, 1)}))`);
    if (r < rows - 1) out.push(`(local.set $c (i32.add (local.get $c) (local.get $ldc)))`);
  }
  out.push(`)`);
  return out.join("\n  ");
}

const TILE_CALL =
  `(local.get $ap) (local.get $lda) (local.get $k) (local.get $bp) (local.get $biasp)` +
  ` (local.get $cp) (local.get $ldc)`;

/**
 * The module's text: exports `gemm(m, n, k, a, lda, b, bias, c, ldc, p0, p1)` (byte offsets,
 * row strides in values: A's rows `lda` apart, C's `ldc`, so a head's columns of a wider
 * matrix can be read and written in place; n a multiple of 8; panels p0 ≤ p < p1 of C; bias 0
 * for none), `pack(w, k, n, ldw, out)` (w [k, n], rows `ldw` apart, into panels, the last
 * padded with zeros), `pack_transposed(w, k, n, ldw, out)` (wᵀ [n, k] into panels, for
 * `dy · wᵀ`), `transpose(src, rows, cols, dst)` and `unpad(src, m, padded, n, dst, ldd)` (rows
 * of a product with padded panels into rows of n, `ldd` apart) and
 * `softmax_grad(p, dp, ds, rows, n, ldp, scale)` (the attention's softmax gradient,
 * `ds = scale · p ⊙ (dp − rowsum(dp ⊙ p))`, dp's rows `ldp` apart); memory imported as
 * `env.memory` (shared; `build_simd.ts` also makes a plain-memory build).
 *
 * @example
 * ```ts
 * import { gemmSimdWat } from "./gemm_simd_wat.ts";
 * console.log(gemmSimdWat().includes("relaxed_madd"));
 * ```
 */
export function gemmSimdWat(): string {
  const tiles = Array.from({ length: GEMM_TILE_ROWS }, (_, i) => tile(i + 1));
  const tail = Array.from(
    { length: GEMM_TILE_ROWS - 1 },
    (_, i) =>
      `(if (i32.eq (local.get $rest) (i32.const ${i + 1})) (then (call $tile${
        i + 1
      } ${TILE_CALL})))`,
  );
  return `(module
  (import "env" "memory" (memory 1 65536 shared))
  ${tiles.join("\n  ")}
  (func (export "gemm") (param $m i32) (param $n i32) (param $k i32) (param $a i32)
    (param $lda_rows i32) (param $b i32) (param $bias i32) (param $c i32) (param $ldc_rows i32)
    (param $p0 i32) (param $p1 i32)
    (local $p i32) (local $i i32) (local $lda i32) (local $ldc i32) (local $ap i32) (local $bp i32)
    (local $biasp i32) (local $cp i32) (local $rest i32)
    ;; Row strides in bytes; a panel of B is k rows of 8 values.
    (local.set $lda (i32.shl (local.get $lda_rows) (i32.const 2)))
    (local.set $ldc (i32.shl (local.get $ldc_rows) (i32.const 2)))
    (local.set $p (local.get $p0))
    (block $done (loop $panels
      (br_if $done (i32.ge_u (local.get $p) (local.get $p1)))
      (local.set $bp (i32.add (local.get $b) (i32.mul (local.get $p) (i32.shl (local.get $k) (i32.const 5)))))
      (local.set $biasp (select (i32.add (local.get $bias) (i32.shl (local.get $p) (i32.const 5)))
        (i32.const 0) (local.get $bias)))
      (local.set $ap (local.get $a))
      (local.set $cp (i32.add (local.get $c) (i32.shl (local.get $p) (i32.const 5))))
      (local.set $i (i32.const 0))
      (block $rows_done (loop $rows
        (br_if $rows_done (i32.gt_u (i32.add (local.get $i) (i32.const ${GEMM_TILE_ROWS})) (local.get $m)))
        (call $tile${GEMM_TILE_ROWS} ${TILE_CALL})
        (local.set $ap (i32.add (local.get $ap) (i32.mul (local.get $lda) (i32.const ${GEMM_TILE_ROWS}))))
        (local.set $cp (i32.add (local.get $cp) (i32.mul (local.get $ldc) (i32.const ${GEMM_TILE_ROWS}))))
        (local.set $i (i32.add (local.get $i) (i32.const ${GEMM_TILE_ROWS})))
        (br $rows)))
      (local.set $rest (i32.sub (local.get $m) (local.get $i)))
      ${tail.join("\n      ")}
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $panels))))
  (func (export "pack") (param $w i32) (param $k i32) (param $n i32) (param $ldw i32) (param $out i32)
    (local $p i32) (local $kk i32) (local $l i32) (local $src i32) (local $cols i32)
    ;; Panels of 8 columns; a last, narrower one is padded with zeros.
    (block $done (loop $panels
      (br_if $done (i32.ge_u (local.get $p) (local.get $n)))
      (local.set $cols (i32.sub (local.get $n) (local.get $p)))
      (local.set $src (i32.add (local.get $w) (i32.shl (local.get $p) (i32.const 2))))
      (local.set $kk (local.get $k))
      (block $rows_done (loop $rows
        (br_if $rows_done (i32.eqz (local.get $kk)))
        (if (i32.ge_u (local.get $cols) (i32.const 8))
          (then
            (v128.store (local.get $out) (v128.load (local.get $src)))
            (v128.store offset=16 (local.get $out) (v128.load offset=16 (local.get $src))))
          (else
            (v128.store (local.get $out) (v128.const i32x4 0 0 0 0))
            (v128.store offset=16 (local.get $out) (v128.const i32x4 0 0 0 0))
            (local.set $l (i32.const 0))
            (block $lanes_done (loop $lanes
              (br_if $lanes_done (i32.ge_u (local.get $l) (local.get $cols)))
              (f32.store (i32.add (local.get $out) (i32.shl (local.get $l) (i32.const 2)))
                (f32.load (i32.add (local.get $src) (i32.shl (local.get $l) (i32.const 2)))))
              (local.set $l (i32.add (local.get $l) (i32.const 1)))
              (br $lanes)))))
        (local.set $out (i32.add (local.get $out) (i32.const 32)))
        (local.set $src (i32.add (local.get $src) (i32.shl (local.get $ldw) (i32.const 2))))
        (local.set $kk (i32.sub (local.get $kk) (i32.const 1)))
        (br $rows)))
      (local.set $p (i32.add (local.get $p) (i32.const 8)))
      (br $panels))))
  (func (export "pack_transposed") (param $w i32) (param $k i32) (param $n i32) (param $ldw i32)
    (param $out i32)
    (local $p i32) (local $j i32) (local $l i32) (local $row i32)
    ;; out[(p / 8) n + j][l] = w[p + l][j]: wᵀ [n, k] in panels of 8 of its k columns, the last
    ;; padded with zeros.
    (block $done (loop $cols
      (br_if $done (i32.ge_u (local.get $p) (local.get $k)))
      (local.set $j (i32.const 0))
      (block $js_done (loop $js
        (br_if $js_done (i32.ge_u (local.get $j) (local.get $n)))
        (local.set $l (i32.const 0))
        (block $lanes_done (loop $lanes
          (br_if $lanes_done (i32.ge_u (local.get $l) (i32.const 8)))
          (local.set $row (i32.add (local.get $p) (local.get $l)))
          (f32.store
            (local.get $out)
            (if (result f32) (i32.lt_u (local.get $row) (local.get $k))
              (then (f32.load (i32.add (local.get $w)
                (i32.shl (i32.add (i32.mul (local.get $row) (local.get $ldw)) (local.get $j)) (i32.const 2)))))
              (else (f32.const 0))))
          (local.set $out (i32.add (local.get $out) (i32.const 4)))
          (local.set $l (i32.add (local.get $l) (i32.const 1)))
          (br $lanes)))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $js)))
      (local.set $p (i32.add (local.get $p) (i32.const 8)))
      (br $cols))))
  (func (export "transpose") (param $src i32) (param $rows i32) (param $cols i32) (param $dst i32)
    (local $r i32) (local $c i32) (local $s i32)
    ;; dst [cols, rows] = src [rows, cols]ᵀ, reading src in order.
    (block $done (loop $rs
      (br_if $done (i32.ge_u (local.get $r) (local.get $rows)))
      (local.set $s (i32.add (local.get $src) (i32.shl (i32.mul (local.get $r) (local.get $cols)) (i32.const 2))))
      (local.set $c (i32.const 0))
      (block $cs_done (loop $cs
        (br_if $cs_done (i32.ge_u (local.get $c) (local.get $cols)))
        (f32.store
          (i32.add (local.get $dst) (i32.shl (i32.add (i32.mul (local.get $c) (local.get $rows)) (local.get $r)) (i32.const 2)))
          (f32.load (i32.add (local.get $s) (i32.shl (local.get $c) (i32.const 2)))))
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (br $cs)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rs))))
  (func (export "unpad") (param $src i32) (param $m i32) (param $padded i32) (param $n i32) (param $dst i32)
    (param $ldd i32)
    ;; Rows of n values out of rows of \`padded\` values, into rows \`ldd\` values apart.
    (block $done (loop $rows
      (br_if $done (i32.eqz (local.get $m)))
      (memory.copy (local.get $dst) (local.get $src) (i32.shl (local.get $n) (i32.const 2)))
      (local.set $src (i32.add (local.get $src) (i32.shl (local.get $padded) (i32.const 2))))
      (local.set $dst (i32.add (local.get $dst) (i32.shl (local.get $ldd) (i32.const 2))))
      (local.set $m (i32.sub (local.get $m) (i32.const 1)))
      (br $rows))))
  (func (export "softmax_grad") (param $p i32) (param $dp i32) (param $ds i32) (param $rows i32)
    (param $n i32) (param $ldp i32) (param $scale f64)
    (local $r i32) (local $j i32) (local $pr i32) (local $dr i32) (local $sr i32) (local $dot f64)
    (local $s2 v128) (local $d2 v128) (local $pv v128) (local $dv v128) (local $lo v128)
    (local $hi v128)
    ;; In float64, as the JavaScript loop it replaced, so the bits are the same: each row's sum
    ;; of dp ⊙ p in order, then (scale · p) · (dp − sum) rounded once to float32, two lanes of
    ;; float64 at a time (each lane the scalar operations).
    (local.set $s2 (f64x2.splat (local.get $scale)))
    (block $done (loop $rs
      (br_if $done (i32.ge_u (local.get $r) (local.get $rows)))
      (local.set $pr (i32.add (local.get $p) (i32.shl (i32.mul (local.get $r) (local.get $n)) (i32.const 2))))
      (local.set $sr (i32.add (local.get $ds) (i32.shl (i32.mul (local.get $r) (local.get $n)) (i32.const 2))))
      (local.set $dr (i32.add (local.get $dp) (i32.shl (i32.mul (local.get $r) (local.get $ldp)) (i32.const 2))))
      (local.set $dot (f64.const 0))
      (local.set $j (i32.const 0))
      (block $sum_done (loop $sum
        (br_if $sum_done (i32.ge_u (local.get $j) (local.get $n)))
        (local.set $dot (f64.add (local.get $dot) (f64.mul
          (f64.promote_f32 (f32.load (i32.add (local.get $dr) (i32.shl (local.get $j) (i32.const 2)))))
          (f64.promote_f32 (f32.load (i32.add (local.get $pr) (i32.shl (local.get $j) (i32.const 2))))))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $sum)))
      (local.set $d2 (f64x2.splat (local.get $dot)))
      (local.set $j (i32.const 0))
      (block $fours_done (loop $fours
        (br_if $fours_done (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $n)))
        (local.set $pv (v128.load (i32.add (local.get $pr) (i32.shl (local.get $j) (i32.const 2)))))
        (local.set $dv (v128.load (i32.add (local.get $dr) (i32.shl (local.get $j) (i32.const 2)))))
        (local.set $lo (f32x4.demote_f64x2_zero (f64x2.mul
          (f64x2.mul (local.get $s2) (f64x2.promote_low_f32x4 (local.get $pv)))
          (f64x2.sub (f64x2.promote_low_f32x4 (local.get $dv)) (local.get $d2)))))
        (local.set $hi (f32x4.demote_f64x2_zero (f64x2.mul
          (f64x2.mul (local.get $s2) (f64x2.promote_low_f32x4
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $pv) (local.get $pv))))
          (f64x2.sub (f64x2.promote_low_f32x4
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $dv) (local.get $dv)))
            (local.get $d2)))))
        (v128.store (i32.add (local.get $sr) (i32.shl (local.get $j) (i32.const 2)))
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $lo) (local.get $hi)))
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br $fours)))
      (block $tail_done (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $j) (local.get $n)))
        (f32.store (i32.add (local.get $sr) (i32.shl (local.get $j) (i32.const 2)))
          (f32.demote_f64 (f64.mul
            (f64.mul (local.get $scale)
              (f64.promote_f32 (f32.load (i32.add (local.get $pr) (i32.shl (local.get $j) (i32.const 2))))))
            (f64.sub
              (f64.promote_f32 (f32.load (i32.add (local.get $dr) (i32.shl (local.get $j) (i32.const 2)))))
              (local.get $dot)))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $tail)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rs))))
)`;
}
