/**
 * torch's float bicubic resize (`F.interpolate(mode="bicubic", align_corners=False)`), what
 * torchvision's `Resize` does to tensors: with `antialias=True` the separable Keys kernel
 * (a = −0.5) widened by the scale when shrinking, normalised per output pixel (like Pillow, but
 * in float, no rounding); with `antialias=False` the 4×4 cubic convolution (a = −0.75) at
 * `scale · (x + 0.5) − 0.5`, taps clamped to the border. No clamping of the result.
 *
 * @module
 */

function cubic1(x: number, a: number): number {
  return ((a + 2) * x - (a + 3)) * x * x + 1;
}

function cubic2(x: number, a: number): number {
  return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
}

function aaFilter(x: number): number {
  x = Math.abs(x);
  if (x < 1) return cubic1(x, -0.5);
  if (x < 2) return cubic2(x, -0.5);
  return 0;
}

/** Per output index: first tap and normalised weights (aten's `_compute_weights_aa`). */
function aaWeights(inSize: number, outSize: number): { start: number[]; w: Float64Array[] } {
  const scale = inSize / outSize;
  const support = 2 * (scale >= 1 ? scale : 1);
  const invscale = scale >= 1 ? 1 / scale : 1;
  const start: number[] = [];
  const w: Float64Array[] = [];
  for (let i = 0; i < outSize; i++) {
    const center = scale * (i + 0.5);
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xsize = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const k = new Float64Array(xsize);
    let total = 0;
    for (let j = 0; j < xsize; j++) {
      k[j] = aaFilter((j + xmin - center + 0.5) * invscale);
      total += k[j];
    }
    if (total !== 0) { for (let j = 0; j < xsize; j++) k[j] /= total; }
    start.push(xmin);
    w.push(k);
  }
  return { start, w };
}

/** Per output index: the four taps (clamped) and their weights, A = −0.75. */
function cubicTaps(inSize: number, outSize: number): { idx: Int32Array; w: Float64Array } {
  const scale = inSize / outSize;
  const idx = new Int32Array(outSize * 4);
  const w = new Float64Array(outSize * 4);
  const a = -0.75;
  for (let i = 0; i < outSize; i++) {
    // area_pixel_compute_source_index with cubic = true: negative positions are kept.
    const real = scale * (i + 0.5) - 0.5;
    const x0 = Math.floor(real);
    const t = real - x0;
    const ws = [cubic2(t + 1, a), cubic1(t, a), cubic1(1 - t, a), cubic2(2 - t, a)];
    for (let k = 0; k < 4; k++) {
      idx[i * 4 + k] = Math.min(Math.max(x0 - 1 + k, 0), inSize - 1);
      w[i * 4 + k] = ws[k];
    }
  }
  return { idx, w };
}

/**
 * Resize a float CHW image as `torch.nn.functional.interpolate(x, (outH, outW),
 * mode="bicubic", align_corners=False, antialias)` does.
 *
 * @example
 * ```ts
 * import { torchBicubicResize } from "@texforce/core/adapters";
 * const out = torchBicubicResize(new Float32Array(3 * 40 * 48), 3, 40, 48, 27, 32, true);
 * ```
 */
export function torchBicubicResize(
  src: Float32Array,
  c: number,
  h: number,
  w: number,
  outH: number,
  outW: number,
  antialias: boolean,
): Float32Array {
  if (src.length !== c * h * w) {
    throw new Error(`torchBicubicResize: expected ${c}×${h}×${w} values, got ${src.length}`);
  }
  if (outH === h && outW === w) return src.slice();
  if (antialias) {
    // Separable: the width first (aten resamples the contiguous dimension first), then height;
    // a dimension that keeps its size is skipped.
    let cur = src;
    let cw = w;
    if (outW !== w) {
      const { start, w: k } = aaWeights(w, outW);
      const out = new Float32Array(c * h * outW);
      for (let p = 0; p < c * h; p++) {
        for (let x = 0; x < outW; x++) {
          let acc = 0;
          const kx = k[x];
          const base = p * w + start[x];
          for (let j = 0; j < kx.length; j++) acc += cur[base + j] * kx[j];
          out[p * outW + x] = acc;
        }
      }
      cur = out;
      cw = outW;
    }
    if (outH !== h) {
      const { start, w: k } = aaWeights(h, outH);
      const out = new Float32Array(c * outH * cw);
      for (let ch = 0; ch < c; ch++) {
        for (let y = 0; y < outH; y++) {
          const ky = k[y];
          for (let x = 0; x < cw; x++) {
            let acc = 0;
            for (let j = 0; j < ky.length; j++) {
              acc += cur[(ch * h + start[y] + j) * cw + x] * ky[j];
            }
            out[(ch * outH + y) * cw + x] = acc;
          }
        }
      }
      cur = out;
    }
    return cur;
  }
  const ty = cubicTaps(h, outH);
  const tx = cubicTaps(w, outW);
  const out = new Float32Array(c * outH * outW);
  for (let ch = 0; ch < c; ch++) {
    const plane = ch * h * w;
    for (let y = 0; y < outH; y++) {
      for (let x = 0; x < outW; x++) {
        let acc = 0;
        for (let i = 0; i < 4; i++) {
          const row = plane + ty.idx[y * 4 + i] * w;
          let r = 0;
          for (let j = 0; j < 4; j++) r += src[row + tx.idx[x * 4 + j]] * tx.w[x * 4 + j];
          acc += r * ty.w[y * 4 + i];
        }
        out[(ch * outH + y) * outW + x] = acc;
      }
    }
  }
  return out;
}
