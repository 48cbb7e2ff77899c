;; SIMD loops for the fused GEGLU kernels (fused_geglu.ts), CLIP's quick-GELU gradient
;; (fused_quick_gelu.ts), the fused norms' SiLU (fused_norm.ts), the ResNet blocks' time add
;; (fused_resnet_block.ts) and the attention core's query scale and mask add (fused_attention.ts),
;; run on the wasm backend's own memory:
;; every pointer is a byte offset into tfjs' heap. A GEGLU input row holds 2·h float32 (the value
;; half, then the gate half; h a multiple of 4), its output row h. Four values per v128; plain
;; multiplies and adds (no relaxed FMA), so results are the same on every CPU.
;;
;; erf is the rational approximation of Eigen's `generic_fast_erf_float` (x clamped to [-4, 4],
;; absolute error about 1e-7); exp (for x ≤ 0, the normal density) is Cephes' `expf` (range
;; reduction by ln 2 in two parts, degree-5 polynomial, 2^k from the exponent bits).
;;
;; Built into _activation_simd_wasm.ts by `deno run -A adapters/wasm/build_simd.ts` (wabt);
;; tests/adapters/wasm/simd_build_test.ts checks the built bytes match this source.
(module
  (import "env" "memory" (memory 1 65536 shared))

  (func $erf (param $x v128) (result v128)
    (local $x2 v128) (local $p v128) (local $q v128)
    (local.set $x (f32x4.min (f32x4.max (local.get $x) (v128.const f32x4 -4 -4 -4 -4))
      (v128.const f32x4 4 4 4 4)))
    (local.set $x2 (f32x4.mul (local.get $x) (local.get $x)))
    (local.set $p (v128.const f32x4 -2.72614225801306e-10 -2.72614225801306e-10
      -2.72614225801306e-10 -2.72614225801306e-10))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $x2)) (v128.const f32x4
      2.77068142495902e-08 2.77068142495902e-08 2.77068142495902e-08 2.77068142495902e-08)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $x2)) (v128.const f32x4
      -2.10102402082508e-06 -2.10102402082508e-06 -2.10102402082508e-06 -2.10102402082508e-06)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $x2)) (v128.const f32x4
      -5.69250639462346e-05 -5.69250639462346e-05 -5.69250639462346e-05 -5.69250639462346e-05)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $x2)) (v128.const f32x4
      -7.34990630326855e-04 -7.34990630326855e-04 -7.34990630326855e-04 -7.34990630326855e-04)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $x2)) (v128.const f32x4
      -2.95459980854025e-03 -2.95459980854025e-03 -2.95459980854025e-03 -2.95459980854025e-03)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $x2)) (v128.const f32x4
      -1.60960333262415e-02 -1.60960333262415e-02 -1.60960333262415e-02 -1.60960333262415e-02)))
    (local.set $p (f32x4.mul (local.get $p) (local.get $x)))
    (local.set $q (v128.const f32x4 -1.45660718464996e-05 -1.45660718464996e-05
      -1.45660718464996e-05 -1.45660718464996e-05))
    (local.set $q (f32x4.add (f32x4.mul (local.get $q) (local.get $x2)) (v128.const f32x4
      -2.13374055278905e-04 -2.13374055278905e-04 -2.13374055278905e-04 -2.13374055278905e-04)))
    (local.set $q (f32x4.add (f32x4.mul (local.get $q) (local.get $x2)) (v128.const f32x4
      -1.68282697438203e-03 -1.68282697438203e-03 -1.68282697438203e-03 -1.68282697438203e-03)))
    (local.set $q (f32x4.add (f32x4.mul (local.get $q) (local.get $x2)) (v128.const f32x4
      -7.37332916720468e-03 -7.37332916720468e-03 -7.37332916720468e-03 -7.37332916720468e-03)))
    (local.set $q (f32x4.add (f32x4.mul (local.get $q) (local.get $x2)) (v128.const f32x4
      -1.42647390514189e-02 -1.42647390514189e-02 -1.42647390514189e-02 -1.42647390514189e-02)))
    (f32x4.div (local.get $p) (local.get $q)))

  ;; exp(x) for x ≤ 0 (below -87 the result is about 1e-38, then 2^-126 scaled: harmless here).
  (func $exp_neg (param $x v128) (result v128)
    (local $k v128) (local $r v128) (local $p v128)
    (local.set $x (f32x4.max (local.get $x) (v128.const f32x4 -87 -87 -87 -87)))
    (local.set $k (f32x4.nearest (f32x4.mul (local.get $x)
      (v128.const f32x4 1.44269504088896341 1.44269504088896341 1.44269504088896341
        1.44269504088896341))))
    (local.set $r (f32x4.sub (local.get $x) (f32x4.mul (local.get $k)
      (v128.const f32x4 0.693359375 0.693359375 0.693359375 0.693359375))))
    (local.set $r (f32x4.sub (local.get $r) (f32x4.mul (local.get $k)
      (v128.const f32x4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4))))
    (local.set $p (v128.const f32x4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4
      1.9875691500e-4))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4
      1.3981999507e-3 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4
      8.3334519073e-3 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4
      4.1665795894e-2 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4
      1.6666665459e-1 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1)))
    (local.set $p (f32x4.add (f32x4.mul (local.get $p) (local.get $r)) (v128.const f32x4
      5.0000001201e-1 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1)))
    ;; 1 + r + r²·p
    (local.set $p (f32x4.add
      (f32x4.add (f32x4.mul (f32x4.mul (local.get $r) (local.get $r)) (local.get $p))
        (local.get $r))
      (v128.const f32x4 1 1 1 1)))
    (f32x4.mul (local.get $p)
      (i32x4.shl (i32x4.add (i32x4.trunc_sat_f32x4_s (local.get $k)) (v128.const i32x4 127 127 127 127))
        (i32.const 23))))

  ;; Φ(g) = 0.5 + 0.5·erf(g/√2), the normal CDF.
  (func $cdf (param $g v128) (result v128)
    (f32x4.add (v128.const f32x4 0.5 0.5 0.5 0.5)
      (f32x4.mul (v128.const f32x4 0.5 0.5 0.5 0.5)
        (call $erf (f32x4.mul (local.get $g) (v128.const f32x4 0.707106781186547524
          0.707106781186547524 0.707106781186547524 0.707106781186547524))))))

  ;; σ(x) = 1 / (1 + e^-x), from e = exp(-|x|): 1 / (1 + e) for x ≥ 0, e / (1 + e) below.
  (func $sigmoid (param $x v128) (result v128)
    (local $e v128) (local $d v128)
    (local.set $e (call $exp_neg (f32x4.neg (f32x4.abs (local.get $x)))))
    (local.set $d (f32x4.add (v128.const f32x4 1 1 1 1) (local.get $e)))
    (v128.bitselect
      (f32x4.div (v128.const f32x4 1 1 1 1) (local.get $d))
      (f32x4.div (local.get $e) (local.get $d))
      (f32x4.ge (local.get $x) (v128.const f32x4 0 0 0 0))))

  ;; out = σ(x) over `bytes` bytes (a multiple of 16).
  (func (export "sigmoid") (param $x i32) (param $out i32) (param $bytes i32)
    (local $i i32)
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $bytes)))
      (v128.store align=4 (i32.add (local.get $out) (local.get $i))
        (call $sigmoid (v128.load align=4 (i32.add (local.get $x) (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $l))))

  ;; The gradient of CLIP's quick GELU y = x · s, s = σ(1.702 x), from the forward's s, for output
  ;; gradient dy: dx = dy · (s + 1.702 x · s · (1 − s)), over `bytes` bytes (a multiple of 16).
  (func (export "quick_gelu_grad")
    (param $x i32) (param $s i32) (param $dy i32) (param $out i32) (param $bytes i32)
    (local $i i32) (local $sv v128)
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $bytes)))
      (local.set $sv (v128.load align=4 (i32.add (local.get $s) (local.get $i))))
      (v128.store align=4 (i32.add (local.get $out) (local.get $i))
        (f32x4.mul (v128.load align=4 (i32.add (local.get $dy) (local.get $i)))
          (f32x4.add (local.get $sv)
            (f32x4.mul
              (f32x4.mul (v128.load align=4 (i32.add (local.get $x) (local.get $i)))
                (v128.const f32x4 1.702 1.702 1.702 1.702))
              (f32x4.mul (local.get $sv) (f32x4.sub (v128.const f32x4 1 1 1 1) (local.get $sv)))))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $l))))

  ;; out = a + b over n values (float32 sums, as any IEEE add): four at a time, then the rest.
  (func (export "add") (param $a i32) (param $b i32) (param $out i32) (param $n i32)
    (local $i i32) (local $bytes i32) (local $vec i32)
    (local.set $bytes (i32.shl (local.get $n) (i32.const 2)))
    (local.set $vec (i32.and (local.get $bytes) (i32.const -16)))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $vec)))
      (v128.store align=4 (i32.add (local.get $out) (local.get $i))
        (f32x4.add (v128.load align=4 (i32.add (local.get $a) (local.get $i)))
          (v128.load align=4 (i32.add (local.get $b) (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $l)))
    (block $d2 (loop $l2
      (br_if $d2 (i32.ge_u (local.get $i) (local.get $bytes)))
      (f32.store (i32.add (local.get $out) (local.get $i))
        (f32.add (f32.load (i32.add (local.get $a) (local.get $i)))
          (f32.load (i32.add (local.get $b) (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l2))))

  ;; out = x · s over n values (float32 products): four at a time, then the rest; the attention
  ;; core's scaled queries (fused_attention.ts).
  (func (export "scale") (param $x i32) (param $out i32) (param $n i32) (param $s f32)
    (local $i i32) (local $bytes i32) (local $vec i32) (local $sv v128)
    (local.set $bytes (i32.shl (local.get $n) (i32.const 2)))
    (local.set $vec (i32.and (local.get $bytes) (i32.const -16)))
    (local.set $sv (f32x4.splat (local.get $s)))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $i) (local.get $vec)))
      (v128.store align=4 (i32.add (local.get $out) (local.get $i))
        (f32x4.mul (v128.load align=4 (i32.add (local.get $x) (local.get $i))) (local.get $sv)))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $l)))
    (block $d2 (loop $l2
      (br_if $d2 (i32.ge_u (local.get $i) (local.get $bytes)))
      (f32.store (i32.add (local.get $out) (local.get $i))
        (f32.mul (f32.load (i32.add (local.get $x) (local.get $i))) (local.get $s)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l2))))

  ;; h[s, p, j] += t[s, j] in place, for `samples` × `positions` rows of c values (c a multiple
  ;; of 4): a ResNet block's per-sample time projection (fused_resnet_block.ts).
  (func (export "add_per_sample") (param $h i32) (param $t i32) (param $samples i32)
    (param $positions i32) (param $c i32)
    (local $row i32) (local $end i32) (local $j i32) (local $s i32) (local $p i32)
    (local.set $row (i32.shl (local.get $c) (i32.const 2)))
    (block $ds (loop $ls
      (br_if $ds (i32.ge_u (local.get $s) (local.get $samples)))
      (local.set $p (i32.const 0))
      (block $dp (loop $lp
        (br_if $dp (i32.ge_u (local.get $p) (local.get $positions)))
        (local.set $j (i32.const 0))
        (block $dj (loop $lj
          (br_if $dj (i32.ge_u (local.get $j) (local.get $row)))
          (v128.store align=4 (i32.add (local.get $h) (local.get $j))
            (f32x4.add (v128.load align=4 (i32.add (local.get $h) (local.get $j)))
              (v128.load align=4 (i32.add (local.get $t) (local.get $j)))))
          (local.set $j (i32.add (local.get $j) (i32.const 16)))
          (br $lj)))
        (local.set $h (i32.add (local.get $h) (local.get $row)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $lp)))
      (local.set $t (i32.add (local.get $t) (local.get $row)))
      (local.set $s (i32.add (local.get $s) (i32.const 1)))
      (br $ls))))

  ;; out[r, j] = x[r, j] · x[r, h + j] · Φ(x[r, h + j]) over `rows` rows.
  (func (export "geglu") (param $x i32) (param $out i32) (param $rows i32) (param $h i32)
    (local $hb i32) (local $end i32) (local $i i32) (local $g v128)
    (local.set $hb (i32.shl (local.get $h) (i32.const 2)))
    (local.set $end (i32.add (local.get $out) (i32.mul (local.get $rows) (local.get $hb))))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $out) (local.get $end)))
      (local.set $i (i32.const 0))
      (block $cd (loop $cl
        (br_if $cd (i32.ge_u (local.get $i) (local.get $hb)))
        (local.set $g (v128.load align=4
          (i32.add (i32.add (local.get $x) (local.get $hb)) (local.get $i))))
        (v128.store align=4 (i32.add (local.get $out) (local.get $i))
          (f32x4.mul (v128.load align=4 (i32.add (local.get $x) (local.get $i)))
            (f32x4.mul (local.get $g) (call $cdf (local.get $g)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $cl)))
      (local.set $x (i32.add (local.get $x) (i32.shl (local.get $hb) (i32.const 1))))
      (local.set $out (i32.add (local.get $out) (local.get $hb)))
      (br $rl))))

  ;; The gradient of geglu for output gradient dy (rows × h): for value v and gate g,
  ;; d v = dy · g · Φ(g), d g = dy · v · (Φ(g) + g · φ(g)), φ(g) = exp(-g²/2) / √(2π).
  (func (export "geglu_grad")
    (param $x i32) (param $dy i32) (param $out i32) (param $rows i32) (param $h i32)
    (local $hb i32) (local $end i32) (local $i i32) (local $v v128) (local $g v128)
    (local $d v128) (local $c v128) (local $pdf v128)
    (local.set $hb (i32.shl (local.get $h) (i32.const 2)))
    (local.set $end (i32.add (local.get $dy) (i32.mul (local.get $rows) (local.get $hb))))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $dy) (local.get $end)))
      (local.set $i (i32.const 0))
      (block $cd (loop $cl
        (br_if $cd (i32.ge_u (local.get $i) (local.get $hb)))
        (local.set $v (v128.load align=4 (i32.add (local.get $x) (local.get $i))))
        (local.set $g (v128.load align=4
          (i32.add (i32.add (local.get $x) (local.get $hb)) (local.get $i))))
        (local.set $d (v128.load align=4 (i32.add (local.get $dy) (local.get $i))))
        (local.set $c (call $cdf (local.get $g)))
        (local.set $pdf (f32x4.mul
          (call $exp_neg (f32x4.mul (v128.const f32x4 -0.5 -0.5 -0.5 -0.5)
            (f32x4.mul (local.get $g) (local.get $g))))
          (v128.const f32x4 0.398942280401432678 0.398942280401432678 0.398942280401432678
            0.398942280401432678)))
        (v128.store align=4 (i32.add (local.get $out) (local.get $i))
          (f32x4.mul (local.get $d) (f32x4.mul (local.get $g) (local.get $c))))
        (v128.store align=4 (i32.add (i32.add (local.get $out) (local.get $hb)) (local.get $i))
          (f32x4.mul (f32x4.mul (local.get $d) (local.get $v))
            (f32x4.add (local.get $c) (f32x4.mul (local.get $g) (local.get $pdf)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $cl)))
      (local.set $x (i32.add (local.get $x) (i32.shl (local.get $hb) (i32.const 1))))
      (local.set $out (i32.add (local.get $out) (i32.shl (local.get $hb) (i32.const 1))))
      (local.set $dy (i32.add (local.get $dy) (local.get $hb)))
      (br $rl))))
)
