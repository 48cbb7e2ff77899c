/**
 * The image transforms of HPSv2's open_clip copy (`hpsv2/src/open_clip/transform.py`), on
 * tensors: `ToTensor` (bytes / 255) first, then a float bicubic resize
 * ({@linkcode torchBicubicResize}), then CLIP mean/std.
 *
 * - `"resize-max-pad"` (what `img_score.py` uses, `light_augmentation=True`): `ResizeMaxSize`:
 *   the longest side → size, the other `round(dim · size / longest)` (half to even), zero
 *   padding before normalisation (left/top = pad // 2, the rest right/bottom).
 * - `"resize-center-crop"`: open_clip's usual eval transform: the shorter side → size (the other
 *   `int(size · long / short)`), centre crop with `top = int(round((h − size) / 2))`.
 *
 * @module
 */
import { torchBicubicResize } from "./torch_resize.ts";

/**
 * CLIP's normalisation constants (OpenAI's and open_clip's `OPENAI_DATASET_MEAN/STD`).
 *
 * @example
 * ```ts
 * import { CLIP_MEAN, CLIP_STD } from "@texforce/core/adapters";
 * const zero = (0 - CLIP_MEAN[0]) / CLIP_STD[0]; // what zero padding becomes
 * ```
 */
export const CLIP_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
/**
 * See {@linkcode CLIP_MEAN}.
 *
 * @example
 * ```ts
 * import { CLIP_STD } from "@texforce/core/adapters";
 * console.log(CLIP_STD.length); // 3
 * ```
 */
export const CLIP_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** Options of {@linkcode openClipTransform}. */
export interface OpenClipTransformOptions {
  /** Output side in pixels. */
  size: number;
  /** Which transform (see the module). */
  mode: "resize-max-pad" | "resize-center-crop";
  /** torch's `antialias` for the bicubic resize (torchvision ≥ 0.17 default true). */
  antialias: boolean;
}

/**
 * Python's round(): to the nearest integer, halves to even.
 *
 * @example
 * ```ts
 * import { roundHalfEven } from "@texforce/core/adapters";
 * console.log(roundHalfEven(20.5), roundHalfEven(21.5)); // 20 22
 * ```
 */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Transform one 8-bit HWC RGB image into normalised CHW floats [3, size, size].
 *
 * @example
 * ```ts
 * import { openClipTransform } from "@texforce/core/adapters";
 * const chw = openClipTransform(new Uint8Array(40 * 48 * 3), 40, 48, {
 *   size: 224,
 *   mode: "resize-max-pad",
 *   antialias: true,
 * });
 * ```
 */
export function openClipTransform(
  hwc: Uint8Array,
  h: number,
  w: number,
  options: OpenClipTransformOptions,
): Float32Array {
  const { size, mode, antialias } = options;
  if (hwc.length !== h * w * 3) {
    throw new Error(`openClipTransform: expected ${h}×${w}×3 bytes, got ${hwc.length}`);
  }
  // ToTensor: HWC bytes → CHW floats in [0, 1] (float32 division, as torch).
  const chw = new Float32Array(3 * h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let k = 0; k < 3; k++) chw[(k * h + y) * w + x] = hwc[(y * w + x) * 3 + k] / 255;
    }
  }
  let img: Float32Array;
  let top = 0;
  let left = 0;
  let ih: number;
  let iw: number;
  if (mode === "resize-max-pad") {
    const scale = size / Math.max(h, w);
    [ih, iw] = scale !== 1 ? [roundHalfEven(h * scale), roundHalfEven(w * scale)] : [h, w];
    img = scale !== 1 ? torchBicubicResize(chw, 3, h, w, ih, iw, antialias) : chw;
    // The reference leaves a non-square image whose longest side already equals size unpadded
    // (the model would then fail); padding it too gives the square the model needs.
    top = -Math.floor((size - ih) / 2);
    left = -Math.floor((size - iw) / 2);
  } else {
    [ih, iw] = h <= w ? [size, Math.trunc(size * w / h)] : [Math.trunc(size * h / w), size];
    img = ih === h && iw === w ? chw : torchBicubicResize(chw, 3, h, w, ih, iw, antialias);
    top = Math.trunc(roundHalfEven((ih - size) / 2));
    left = Math.trunc(roundHalfEven((iw - size) / 2));
  }
  const out = new Float32Array(3 * size * size);
  for (let k = 0; k < 3; k++) {
    for (let y = 0; y < size; y++) {
      const sy = y + top;
      for (let x = 0; x < size; x++) {
        const sx = x + left;
        // Padding is 0 before normalisation, so it becomes −mean/std.
        const v = sy >= 0 && sy < ih && sx >= 0 && sx < iw ? img[(k * ih + sy) * iw + sx] : 0;
        out[(k * size + y) * size + x] = (v - CLIP_MEAN[k]) / CLIP_STD[k];
      }
    }
  }
  return out;
}
