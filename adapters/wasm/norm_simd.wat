;; SIMD loops for the fused GroupNorm / LayerNorm kernels (fused_norm.ts), run on the wasm
;; backend's own memory: every pointer is a byte offset into tfjs' heap. Tensors are rows of
;; `c` float32 channels (c a multiple of 4); per-channel vectors (shift, scale, sums) hold c
;; floats. Four channels per v128 lane group; no function allocates or keeps state.
;;
;; Built into _norm_simd_wasm.ts by `deno run -A adapters/wasm/build_simd.ts` (wabt);
;; tests/adapters/wasm/simd_build_test.ts checks the built bytes match this source.
(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; s1[ch] = Σ_rows (x − shift[ch]), s2[ch] = Σ_rows (x − shift[ch])², over p rows.
  (func (export "chan_sums")
    (param $x i32) (param $p i32) (param $c i32) (param $shift i32) (param $s1 i32) (param $s2 i32)
    (local $cb i32) (local $i i32) (local $row i32) (local $end i32) (local $d v128)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $i (i32.const 0))
    (block $zd (loop $zl
      (br_if $zd (i32.ge_u (local.get $i) (local.get $cb)))
      (v128.store (i32.add (local.get $s1) (local.get $i)) (v128.const i32x4 0 0 0 0))
      (v128.store (i32.add (local.get $s2) (local.get $i)) (v128.const i32x4 0 0 0 0))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $zl)))
    (local.set $row (local.get $x))
    (local.set $end (i32.add (local.get $x) (i32.mul (local.get $p) (local.get $cb))))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $row) (local.get $end)))
      (local.set $i (i32.const 0))
      (block $cd (loop $cl
        (br_if $cd (i32.ge_u (local.get $i) (local.get $cb)))
        (local.set $d (f32x4.sub
          (v128.load align=4 (i32.add (local.get $row) (local.get $i)))
          (v128.load align=4 (i32.add (local.get $shift) (local.get $i)))))
        (v128.store align=4 (i32.add (local.get $s1) (local.get $i))
          (f32x4.add (v128.load align=4 (i32.add (local.get $s1) (local.get $i))) (local.get $d)))
        (v128.store align=4 (i32.add (local.get $s2) (local.get $i))
          (f32x4.add (v128.load align=4 (i32.add (local.get $s2) (local.get $i)))
            (f32x4.mul (local.get $d) (local.get $d))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $cl)))
      (local.set $row (i32.add (local.get $row) (local.get $cb)))
      (br $rl))))

  ;; y = x · a[ch] + s[ch] over p rows (y may be x).
  (func (export "affine")
    (param $x i32) (param $y i32) (param $p i32) (param $c i32) (param $a i32) (param $s i32)
    (local $cb i32) (local $i i32) (local $off i32) (local $end i32)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $off (i32.const 0))
    (local.set $end (i32.mul (local.get $p) (local.get $cb)))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $off) (local.get $end)))
      (local.set $i (i32.const 0))
      (block $cd (loop $cl
        (br_if $cd (i32.ge_u (local.get $i) (local.get $cb)))
        (v128.store align=4 (i32.add (local.get $y) (i32.add (local.get $off) (local.get $i)))
          (f32x4.add
            (f32x4.mul
              (v128.load align=4 (i32.add (local.get $x) (i32.add (local.get $off) (local.get $i))))
              (v128.load align=4 (i32.add (local.get $a) (local.get $i))))
            (v128.load align=4 (i32.add (local.get $s) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $cl)))
      (local.set $off (i32.add (local.get $off) (local.get $cb)))
      (br $rl))))

  ;; x[i] *= y[i] for `bytes` bytes (a multiple of 16).
  (func (export "mul_into")
    (param $x i32) (param $y i32) (param $bytes i32)
    (local $i i32)
    (local.set $i (i32.const 0))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $bytes)))
      (v128.store align=4 (i32.add (local.get $x) (local.get $i))
        (f32x4.mul (v128.load align=4 (i32.add (local.get $x) (local.get $i)))
          (v128.load align=4 (i32.add (local.get $y) (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $l))))

  ;; out = dy · σ · (1 + z · (1 − σ)): SiLU's derivative applied, for `bytes` bytes.
  (func (export "silu_grad")
    (param $dy i32) (param $z i32) (param $sg i32) (param $out i32) (param $bytes i32)
    (local $i i32) (local $s v128) (local $one v128)
    (local.set $one (f32x4.splat (f32.const 1)))
    (local.set $i (i32.const 0))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $bytes)))
      (local.set $s (v128.load align=4 (i32.add (local.get $sg) (local.get $i))))
      (v128.store align=4 (i32.add (local.get $out) (local.get $i))
        (f32x4.mul
          (f32x4.mul (v128.load align=4 (i32.add (local.get $dy) (local.get $i))) (local.get $s))
          (f32x4.add (local.get $one)
            (f32x4.mul (v128.load align=4 (i32.add (local.get $z) (local.get $i)))
              (f32x4.sub (local.get $one) (local.get $s))))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $l))))

  ;; s1[ch] = Σ_rows dz, s2[ch] = Σ_rows dz · (x − m[ch]), over p rows.
  (func (export "chan_dot")
    (param $dz i32) (param $x i32) (param $m i32) (param $p i32) (param $c i32)
    (param $s1 i32) (param $s2 i32)
    (local $cb i32) (local $i i32) (local $off i32) (local $end i32) (local $g v128)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $i (i32.const 0))
    (block $zd (loop $zl
      (br_if $zd (i32.ge_u (local.get $i) (local.get $cb)))
      (v128.store (i32.add (local.get $s1) (local.get $i)) (v128.const i32x4 0 0 0 0))
      (v128.store (i32.add (local.get $s2) (local.get $i)) (v128.const i32x4 0 0 0 0))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $zl)))
    (local.set $off (i32.const 0))
    (local.set $end (i32.mul (local.get $p) (local.get $cb)))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $off) (local.get $end)))
      (local.set $i (i32.const 0))
      (block $cd (loop $cl
        (br_if $cd (i32.ge_u (local.get $i) (local.get $cb)))
        (local.set $g
          (v128.load align=4 (i32.add (local.get $dz) (i32.add (local.get $off) (local.get $i)))))
        (v128.store align=4 (i32.add (local.get $s1) (local.get $i))
          (f32x4.add (v128.load align=4 (i32.add (local.get $s1) (local.get $i))) (local.get $g)))
        (v128.store align=4 (i32.add (local.get $s2) (local.get $i))
          (f32x4.add (v128.load align=4 (i32.add (local.get $s2) (local.get $i)))
            (f32x4.mul (local.get $g)
              (f32x4.sub
                (v128.load align=4 (i32.add (local.get $x) (i32.add (local.get $off) (local.get $i))))
                (v128.load align=4 (i32.add (local.get $m) (local.get $i)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $cl)))
      (local.set $off (i32.add (local.get $off) (local.get $cb)))
      (br $rl))))

  ;; out = a1[ch] · dz + a2[ch] · (x − m[ch]) + a3[ch] over p rows.
  (func (export "dx_combine")
    (param $dz i32) (param $x i32) (param $m i32) (param $a1 i32) (param $a2 i32) (param $a3 i32)
    (param $out i32) (param $p i32) (param $c i32)
    (local $cb i32) (local $i i32) (local $off i32) (local $end i32) (local $o i32)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $off (i32.const 0))
    (local.set $end (i32.mul (local.get $p) (local.get $cb)))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $off) (local.get $end)))
      (local.set $i (i32.const 0))
      (block $cd (loop $cl
        (br_if $cd (i32.ge_u (local.get $i) (local.get $cb)))
        (local.set $o (i32.add (local.get $off) (local.get $i)))
        (v128.store align=4 (i32.add (local.get $out) (local.get $o))
          (f32x4.add
            (f32x4.add
              (f32x4.mul (v128.load align=4 (i32.add (local.get $a1) (local.get $i)))
                (v128.load align=4 (i32.add (local.get $dz) (local.get $o))))
              (f32x4.mul (v128.load align=4 (i32.add (local.get $a2) (local.get $i)))
                (f32x4.sub (v128.load align=4 (i32.add (local.get $x) (local.get $o)))
                  (v128.load align=4 (i32.add (local.get $m) (local.get $i))))))
            (v128.load align=4 (i32.add (local.get $a3) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $cl)))
      (local.set $off (i32.add (local.get $off) (local.get $cb)))
      (br $rl))))

  ;; LayerNorm over rows of c channels. out[2r] = Σ_j (x[r, j] − x[r, 0]), out[2r + 1] = Σ_j
  ;; (x[r, j] − x[r, 0])², for r < rows (the shift keeps a large mean from swamping the sums).
  (func (export "row_stats")
    (param $x i32) (param $rows i32) (param $c i32) (param $out i32)
    (local $cb i32) (local $row i32) (local $end i32) (local $i i32) (local $k v128)
    (local $d v128) (local $s1 v128) (local $s2 v128)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $row (local.get $x))
    (local.set $end (i32.add (local.get $x) (i32.mul (local.get $rows) (local.get $cb))))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $row) (local.get $end)))
      (local.set $k (f32x4.splat (f32.load (local.get $row))))
      (local.set $s1 (v128.const i32x4 0 0 0 0))
      (local.set $s2 (v128.const i32x4 0 0 0 0))
      (local.set $i (i32.const 0))
      (block $cd (loop $cl
        (br_if $cd (i32.ge_u (local.get $i) (local.get $cb)))
        (local.set $d (f32x4.sub
          (v128.load align=4 (i32.add (local.get $row) (local.get $i))) (local.get $k)))
        (local.set $s1 (f32x4.add (local.get $s1) (local.get $d)))
        (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $d) (local.get $d))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $cl)))
      (f32.store (local.get $out) (call $hsum (local.get $s1)))
      (f32.store offset=4 (local.get $out) (call $hsum (local.get $s2)))
      (local.set $out (i32.add (local.get $out) (i32.const 8)))
      (local.set $row (i32.add (local.get $row) (local.get $cb)))
      (br $rl))))

  (func $hsum (param $v v128) (result f32)
    (f32.add
      (f32.add (f32x4.extract_lane 0 (local.get $v)) (f32x4.extract_lane 1 (local.get $v)))
      (f32.add (f32x4.extract_lane 2 (local.get $v)) (f32x4.extract_lane 3 (local.get $v)))))

  ;; y = (x − mean_r) · rstd_r · γ + β, stats[2r] = mean_r, stats[2r + 1] = rstd_r.
  (func (export "row_affine")
    (param $x i32) (param $y i32) (param $rows i32) (param $c i32) (param $stats i32)
    (param $gamma i32) (param $beta i32)
    (local $cb i32) (local $off i32) (local $end i32) (local $i i32) (local $m v128)
    (local $r v128)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $off (i32.const 0))
    (local.set $end (i32.mul (local.get $rows) (local.get $cb)))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $off) (local.get $end)))
      (local.set $m (f32x4.splat (f32.load (local.get $stats))))
      (local.set $r (f32x4.splat (f32.load offset=4 (local.get $stats))))
      (local.set $i (i32.const 0))
      (block $cd (loop $cl
        (br_if $cd (i32.ge_u (local.get $i) (local.get $cb)))
        (v128.store align=4 (i32.add (local.get $y) (i32.add (local.get $off) (local.get $i)))
          (f32x4.add
            (f32x4.mul
              (f32x4.mul
                (f32x4.sub
                  (v128.load align=4 (i32.add (local.get $x) (i32.add (local.get $off) (local.get $i))))
                  (local.get $m))
                (local.get $r))
              (v128.load align=4 (i32.add (local.get $gamma) (local.get $i))))
            (v128.load align=4 (i32.add (local.get $beta) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $cl)))
      (local.set $stats (i32.add (local.get $stats) (i32.const 8)))
      (local.set $off (i32.add (local.get $off) (local.get $cb)))
      (br $rl))))

  ;; LayerNorm backward: dx = rstd · (dy γ − mean_j(dy γ) − x̂ · mean_j(dy γ x̂)) per row, and
  ;; dγ[j] += Σ_r dy · x̂, dβ[j] += Σ_r dy (dγ, dβ zeroed by the caller).
  (func (export "row_grad")
    (param $dy i32) (param $x i32) (param $stats i32) (param $gamma i32) (param $rows i32)
    (param $c i32) (param $dx i32) (param $dgamma i32) (param $dbeta i32)
    (local $cb i32) (local $off i32) (local $end i32) (local $i i32) (local $o i32)
    (local $m v128) (local $r v128) (local $g v128) (local $xh v128) (local $dxh v128)
    (local $v1 v128) (local $v2 v128) (local $m1 v128) (local $m2 v128) (local $inv f32)
    (local.set $cb (i32.shl (local.get $c) (i32.const 2)))
    (local.set $inv (f32.div (f32.const 1) (f32.convert_i32_u (local.get $c))))
    (local.set $off (i32.const 0))
    (local.set $end (i32.mul (local.get $rows) (local.get $cb)))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $off) (local.get $end)))
      (local.set $m (f32x4.splat (f32.load (local.get $stats))))
      (local.set $r (f32x4.splat (f32.load offset=4 (local.get $stats))))
      (local.set $v1 (v128.const i32x4 0 0 0 0))
      (local.set $v2 (v128.const i32x4 0 0 0 0))
      (local.set $i (i32.const 0))
      (block $cd (loop $cl
        (br_if $cd (i32.ge_u (local.get $i) (local.get $cb)))
        (local.set $o (i32.add (local.get $off) (local.get $i)))
        (local.set $g (v128.load align=4 (i32.add (local.get $dy) (local.get $o))))
        (local.set $xh (f32x4.mul
          (f32x4.sub (v128.load align=4 (i32.add (local.get $x) (local.get $o))) (local.get $m))
          (local.get $r)))
        (local.set $dxh (f32x4.mul (local.get $g)
          (v128.load align=4 (i32.add (local.get $gamma) (local.get $i)))))
        (local.set $v1 (f32x4.add (local.get $v1) (local.get $dxh)))
        (local.set $v2 (f32x4.add (local.get $v2) (f32x4.mul (local.get $dxh) (local.get $xh))))
        (v128.store align=4 (i32.add (local.get $dgamma) (local.get $i))
          (f32x4.add (v128.load align=4 (i32.add (local.get $dgamma) (local.get $i)))
            (f32x4.mul (local.get $g) (local.get $xh))))
        (v128.store align=4 (i32.add (local.get $dbeta) (local.get $i))
          (f32x4.add (v128.load align=4 (i32.add (local.get $dbeta) (local.get $i))) (local.get $g)))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $cl)))
      (local.set $m1 (f32x4.splat (f32.mul (call $hsum (local.get $v1)) (local.get $inv))))
      (local.set $m2 (f32x4.splat (f32.mul (call $hsum (local.get $v2)) (local.get $inv))))
      (local.set $i (i32.const 0))
      (block $cd2 (loop $cl2
        (br_if $cd2 (i32.ge_u (local.get $i) (local.get $cb)))
        (local.set $o (i32.add (local.get $off) (local.get $i)))
        (local.set $xh (f32x4.mul
          (f32x4.sub (v128.load align=4 (i32.add (local.get $x) (local.get $o))) (local.get $m))
          (local.get $r)))
        (v128.store align=4 (i32.add (local.get $dx) (local.get $o))
          (f32x4.mul (local.get $r)
            (f32x4.sub
              (f32x4.sub
                (f32x4.mul (v128.load align=4 (i32.add (local.get $dy) (local.get $o)))
                  (v128.load align=4 (i32.add (local.get $gamma) (local.get $i))))
                (local.get $m1))
              (f32x4.mul (local.get $xh) (local.get $m2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $cl2)))
      (local.set $stats (i32.add (local.get $stats) (i32.const 8)))
      (local.set $off (i32.add (local.get $off) (local.get $cb)))
      (br $rl))))
)
