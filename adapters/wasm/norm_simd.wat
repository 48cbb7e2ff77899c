;; SIMD loops for the fused GroupNorm / LayerNorm kernels (fused_norm.ts), run on the wasm
;; backend's own memory: every pointer is a byte offset into tfjs' heap. Tensors are rows of
;; `c` float32 channels (c a multiple of 4); per-channel vectors (shift, scale, sums) hold c
;; floats. Four channels per v128 lane group; no function allocates or keeps state.
;;
;; Built into _norm_simd_wasm.ts by `deno run -A adapters/wasm/build_norm_simd.ts` (wabt);
;; tests/adapters/wasm/norm_simd_build_test.ts checks the built bytes match this source.
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
)
