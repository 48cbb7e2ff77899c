/**
 * transformers' `CLIPImageProcessor` (the PIL path): resize the shortest edge with PIL's
 * resampling, centre crop, rescale, normalise. The resize reproduces Pillow's `Image.resize`
 * for 8-bit images (separable passes, horizontal first, antialiased filter support when
 * shrinking, 22-bit fixed-point coefficients, rounding to 8 bits after each pass), because
 * generated images are scored the way the Python rewards score them: as 8-bit images.
 *
 * Runs on the host: a handful of images per reward call, and no gradient is needed.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import { readJsonFile } from "../../core/io/model_folder.ts";
import type { Tensor4D } from "../../core/tensor_types.ts";

/** The fields of a `preprocessor_config.json` the processor uses. */
export interface ClipImageProcessorConfig {
  /** Resize so the shorter side is this many pixels (224). */
  shortestEdge: number;
  /** Centre crop height and width. */
  cropHeight: number;
  /** Centre crop width. */
  cropWidth: number;
  /** PIL filter: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic (CLIP's). */
  resample: 0 | 1 | 2 | 3;
  /** Multiplier from 8-bit values (1/255). */
  rescaleFactor: number;
  /** Per-channel mean. */
  imageMean: [number, number, number];
  /** Per-channel standard deviation. */
  imageStd: [number, number, number];
  /** Whether each step runs. */
  doResize: boolean;
  /** Whether to centre crop. */
  doCenterCrop: boolean;
  /** Whether to rescale. */
  doRescale: boolean;
  /** Whether to normalise. */
  doNormalize: boolean;
}

const OPENAI_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/**
 * Read a `CLIPImageProcessor` config from the JSON of `preprocessor_config.json`, with
 * transformers' defaults for absent fields.
 *
 * @example
 * ```ts
 * import { parseClipImageProcessorConfig } from "@texforce/core/adapters";
 * const c = parseClipImageProcessorConfig({ size: { shortest_edge: 224 } }, "p.json");
 * console.log(c.cropHeight); // 224
 * ```
 */
export function parseClipImageProcessorConfig(
  json: Record<string, unknown>,
  file: string,
): ClipImageProcessorConfig {
  const fail = (msg: string): never => {
    throw new Error(`${file}: ${msg}`);
  };
  const size = json.size ?? { shortest_edge: 224 };
  const shortest = typeof size === "number"
    ? size
    : (size as Record<string, unknown>).shortest_edge;
  if (!Number.isInteger(shortest) || (shortest as number) < 1) {
    fail(`'size.shortest_edge' must be a positive integer, got ${JSON.stringify(size)}`);
  }
  const crop = json.crop_size ?? { height: 224, width: 224 };
  const cropH = typeof crop === "number" ? crop : (crop as Record<string, unknown>).height;
  const cropW = typeof crop === "number" ? crop : (crop as Record<string, unknown>).width;
  if (!Number.isInteger(cropH) || !Number.isInteger(cropW) || (cropH as number) < 1) {
    fail(`'crop_size' must hold positive integers height and width, got ${JSON.stringify(crop)}`);
  }
  const resample = json.resample ?? 3;
  if (resample !== 0 && resample !== 1 && resample !== 2 && resample !== 3) {
    fail(`'resample' ${JSON.stringify(resample)} is not supported (0, 1, 2 or 3)`);
  }
  const triple = (key: string, fallback: [number, number, number]): [number, number, number] => {
    const v = json[key] ?? fallback;
    if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== "number")) {
      fail(`'${key}' must be three numbers, got ${JSON.stringify(v)}`);
    }
    return v as [number, number, number];
  };
  const factor = json.rescale_factor ?? 1 / 255;
  if (typeof factor !== "number") fail(`'rescale_factor' must be a number`);
  return {
    shortestEdge: shortest as number,
    cropHeight: cropH as number,
    cropWidth: cropW as number,
    resample: resample as 0 | 1 | 2 | 3,
    rescaleFactor: factor as number,
    imageMean: triple("image_mean", OPENAI_MEAN),
    imageStd: triple("image_std", OPENAI_STD),
    doResize: json.do_resize !== false,
    doCenterCrop: json.do_center_crop !== false,
    doRescale: json.do_rescale !== false,
    doNormalize: json.do_normalize !== false,
  };
}

// Pillow's filters (Resample.c) and their support radii.
const FILTERS: Record<1 | 2 | 3, { support: number; f: (x: number) => number }> = {
  1: {
    support: 3,
    f: (x) => {
      const sinc = (t: number) => t === 0 ? 1 : Math.sin(Math.PI * t) / (Math.PI * t);
      return x > -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0;
    },
  },
  2: { support: 1, f: (x) => (x < 0 ? -x : x) < 1 ? 1 - Math.abs(x) : 0 },
  3: {
    support: 2,
    f: (x) => {
      const a = -0.5;
      if (x < 0) x = -x;
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};

const PRECISION_BITS = 32 - 8 - 2;

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output index, first tap and taps. */
function coefficients(
  inSize: number,
  outSize: number,
  filter: 1 | 2 | 3,
): { start: Int32Array; taps: Int32Array[] } {
  const { support: base, f } = FILTERS[filter];
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = base * filterScale;
  const start = new Int32Array(outSize);
  const taps: Int32Array[] = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterScale;
    // C's (int) cast truncates toward zero.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const w = new Float64Array(xmax);
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      w[x] = f((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    const k = new Int32Array(xmax);
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? w[x] / ww : w[x];
      k[x] = Math.trunc(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
    }
    start[xx] = xmin;
    taps.push(k);
  }
  return { start, taps };
}

function clip8(acc: number): number {
  const v = Math.floor(acc / (1 << PRECISION_BITS));
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Resize one 8-bit HWC image as Pillow's `Image.resize((w, h), filter)` does (filters 1
 * lanczos, 2 bilinear, 3 bicubic; 0 nearest).
 *
 * @example
 * ```ts
 * import { pilResize } from "@texforce/core/adapters";
 * const out = pilResize(new Uint8Array(48 * 40 * 3), 48, 40, 3, 38, 32, 3);
 * ```
 */
export function pilResize(
  src: Uint8Array,
  h: number,
  w: number,
  c: number,
  outH: number,
  outW: number,
  filter: 0 | 1 | 2 | 3,
): Uint8Array {
  if (filter === 0) {
    // Pillow's nearest: source index floor((x + 0.5) * scale).
    const out = new Uint8Array(outH * outW * c);
    for (let y = 0; y < outH; y++) {
      const sy = Math.min(Math.floor((y + 0.5) * h / outH), h - 1);
      for (let x = 0; x < outW; x++) {
        const sx = Math.min(Math.floor((x + 0.5) * w / outW), w - 1);
        for (let k = 0; k < c; k++) out[(y * outW + x) * c + k] = src[(sy * w + sx) * c + k];
      }
    }
    return out;
  }
  let img = src;
  let curW = w;
  const half = 1 << (PRECISION_BITS - 1);
  if (outW !== w) {
    const { start, taps } = coefficients(w, outW, filter);
    const out = new Uint8Array(h * outW * c);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < outW; x++) {
        const k = taps[x];
        const x0 = start[x];
        for (let ch = 0; ch < c; ch++) {
          let acc = half;
          for (let t = 0; t < k.length; t++) acc += img[(y * w + x0 + t) * c + ch] * k[t];
          out[(y * outW + x) * c + ch] = clip8(acc);
        }
      }
    }
    img = out;
    curW = outW;
  }
  if (outH !== h) {
    const { start, taps } = coefficients(h, outH, filter);
    const out = new Uint8Array(outH * curW * c);
    for (let y = 0; y < outH; y++) {
      const k = taps[y];
      const y0 = start[y];
      for (let x = 0; x < curW; x++) {
        for (let ch = 0; ch < c; ch++) {
          let acc = half;
          for (let t = 0; t < k.length; t++) acc += img[((y0 + t) * curW + x) * c + ch] * k[t];
          out[(y * curW + x) * c + ch] = clip8(acc);
        }
      }
    }
    img = out;
  }
  return img === src ? src.slice() : img;
}

/**
 * transformers' `CLIPImageProcessor`: 8-bit or [0, 1] images in, normalised NHWC pixels out.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { ClipImageProcessor } from "@texforce/core/adapters";
 * const processor = await ClipImageProcessor.load("clip-vit-large-patch14");
 * const pixels = await processor.preprocess(tf.ones([1, 512, 512, 3]) as tf.Tensor4D);
 * ```
 */
export class ClipImageProcessor {
  /** The configuration. */
  readonly config: ClipImageProcessorConfig;

  /** Wrap a parsed config. */
  constructor(config: ClipImageProcessorConfig) {
    this.config = config;
  }

  /**
   * Read `preprocessor_config.json` from a folder.
   *
   * @example
   * ```ts
   * import { ClipImageProcessor } from "@texforce/core/adapters";
   * const processor = await ClipImageProcessor.load("clip-vit-large-patch14");
   * ```
   */
  static async load(dir: string): Promise<ClipImageProcessor> {
    const path = join(dir, "preprocessor_config.json");
    return new ClipImageProcessor(parseClipImageProcessorConfig(await readJsonFile(path), path));
  }

  /** Output height and width after resize and crop, for an input of h × w. */
  outputSize(h: number, w: number): [number, number] {
    const c = this.config;
    if (!c.doCenterCrop) return c.doResize ? this.#resized(h, w) : [h, w];
    return [c.cropHeight, c.cropWidth];
  }

  // transformers' get_resize_output_image_size(default_to_square=False): int() truncates.
  #resized(h: number, w: number): [number, number] {
    const s = this.config.shortestEdge;
    return h <= w ? [s, Math.trunc(s * w / h)] : [Math.trunc(s * h / w), s];
  }

  /**
   * Process 8-bit HWC images [B, H, W, 3] (row-major bytes) into normalised pixels
   * [B, cropH, cropW, 3] (NHWC).
   *
   * @example
   * ```ts
   * import { ClipImageProcessor, parseClipImageProcessorConfig } from "@texforce/core/adapters";
   * const p = new ClipImageProcessor(parseClipImageProcessorConfig({}, "defaults"));
   * const pixels = p.preprocessUint8(new Uint8Array(2 * 256 * 256 * 3), [2, 256, 256, 3]);
   * ```
   */
  preprocessUint8(data: Uint8Array, shape: [number, number, number, number]): Tensor4D {
    const [b, h, w, ch] = shape;
    if (ch !== 3 || data.length !== b * h * w * ch) {
      throw new Error(
        `ClipImageProcessor: expected ${b}×${h}×${w}×3 bytes for shape [${shape.join(", ")}], ` +
          `got ${data.length}`,
      );
    }
    const c = this.config;
    const [rh, rw] = c.doResize ? this.#resized(h, w) : [h, w];
    const [oh, ow] = c.doCenterCrop ? [c.cropHeight, c.cropWidth] : [rh, rw];
    if (oh > rh || ow > rw) {
      // transformers pads smaller images with zeros before cropping; CLIP configs never need it.
      throw new Error(
        `ClipImageProcessor: crop ${oh}×${ow} is larger than the resized image ${rh}×${rw}`,
      );
    }
    const top = Math.trunc((rh - oh) / 2);
    const left = Math.trunc((rw - ow) / 2);
    const out = new Float32Array(b * oh * ow * 3);
    const scale = c.doRescale ? c.rescaleFactor : 1;
    for (let i = 0; i < b; i++) {
      const one = data.subarray(i * h * w * 3, (i + 1) * h * w * 3);
      const img = c.doResize ? pilResize(one, h, w, 3, rh, rw, c.resample) : one;
      for (let y = 0; y < oh; y++) {
        for (let x = 0; x < ow; x++) {
          for (let k = 0; k < 3; k++) {
            let v = img[((y + top) * rw + x + left) * 3 + k] * scale;
            if (c.doNormalize) v = (v - c.imageMean[k]) / c.imageStd[k];
            out[((i * oh + y) * ow + x) * 3 + k] = v;
          }
        }
      }
    }
    return tf.tensor4d(out, [b, oh, ow, 3]);
  }

  /**
   * Process float images in [0, 1] [B, H, W, 3]: quantised to 8 bits first (clamped,
   * rounded), as an image saved and re-read would be, then {@linkcode preprocessUint8}.
   * Reads the tensor asynchronously, so it works on every backend.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { ClipImageProcessor } from "@texforce/core/adapters";
   * declare const processor: ClipImageProcessor;
   * const pixels = await processor.preprocess(tf.ones([1, 64, 64, 3]) as tf.Tensor4D);
   * ```
   */
  async preprocess(images: Tensor4D): Promise<Tensor4D> {
    if (images.rank !== 4 || images.shape[3] !== 3) {
      throw new Error(
        `ClipImageProcessor: expected images [B, H, W, 3], got [${images.shape.join(", ")}]`,
      );
    }
    const values = await images.data();
    const bytes = new Uint8Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const v = Math.round(values[i] * 255);
      bytes[i] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
    return this.preprocessUint8(bytes, images.shape as [number, number, number, number]);
  }
}
