/**
 * Image output: NHWC tensors in [0, 1] to 8-bit RGB images, PNG files, and captioned grids.
 *
 * sharp (a native module) is imported lazily, on first use, so that modules which import this
 * one can still be bundled for the GPU machine as long as they never write images there.
 *
 * @module
 */
import { writeFileAtomic } from "./io/atomic_file.ts";
import { drawText, GLYPH_ADVANCE, LINE_HEIGHT, textWidth, wrapText } from "./_bitmap_font.ts";
import { join } from "node:path";
import type { Tensor4D } from "./tensor_types.ts";

/**
 * An 8-bit RGB image, rows top to bottom, `width · height · 3` bytes.
 *
 * @example
 * ```ts
 * import type { RgbImage } from "@texforce/core";
 * const red: RgbImage = { width: 1, height: 1, data: new Uint8Array([255, 0, 0]) };
 * ```
 */
export interface RgbImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** Interleaved RGB bytes. */
  data: Uint8Array;
}

type Sharp = typeof import("sharp").default;
let sharpModule: Promise<Sharp> | undefined;

function sharp(): Promise<Sharp> {
  sharpModule ??= import("sharp").then((m) => m.default).catch((e) => {
    sharpModule = undefined;
    throw new Error(
      `image output needs the sharp package, which failed to load: ${(e as Error).message}`,
    );
  });
  return sharpModule;
}

/**
 * Convert images [B, H, W, 3] in [0, 1] to 8-bit RGB, rounding as diffusers does
 * (`(x · 255).round()` after clamping).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { tensorToImages } from "@texforce/core";
 * const [img] = await tensorToImages(tf.fill([1, 8, 8, 3], 0.5) as tf.Tensor4D);
 * console.log(img.data[0]); // 128
 * ```
 */
export async function tensorToImages(images: Tensor4D): Promise<RgbImage[]> {
  const [b, h, w, c] = images.shape;
  if (c !== 3) {
    throw new Error(
      `tensorToImages: expected [B, H, W, 3] images, got ${JSON.stringify(images.shape)}`,
    );
  }
  const data = await images.data();
  const n = h * w * 3;
  const out: RgbImage[] = [];
  for (let i = 0; i < b; i++) {
    const px = new Uint8Array(n);
    for (let j = 0; j < n; j++) {
      const v = data[i * n + j];
      // NaN becomes 0 rather than poisoning the file.
      px[j] = v > 0 ? (v < 1 ? Math.round(v * 255) : 255) : 0;
    }
    out.push({ width: w, height: h, data: px });
  }
  return out;
}

/**
 * Encode an image as PNG.
 *
 * @example
 * ```ts
 * import { encodePng } from "@texforce/core";
 * const png = await encodePng({ width: 1, height: 1, data: new Uint8Array([255, 0, 0]) });
 * ```
 */
export async function encodePng(image: RgbImage): Promise<Uint8Array> {
  checkImage(image);
  const s = await sharp();
  const buf = await s(image.data, {
    raw: { width: image.width, height: image.height, channels: 3 },
  })
    .png()
    .toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/**
 * Decode a PNG (or any format sharp reads) to RGB.
 *
 * @example
 * ```ts
 * import { decodeImage } from "@texforce/core";
 * const img = await decodeImage(await Deno.readFile("sample.png"));
 * console.log(img.width, img.height);
 * ```
 */
export async function decodeImage(bytes: Uint8Array): Promise<RgbImage> {
  const s = await sharp();
  const { data, info } = await s(bytes).removeAlpha().toColourspace("srgb").raw()
    .toBuffer({ resolveWithObject: true });
  return {
    width: info.width,
    height: info.height,
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}

/**
 * Write images [B, H, W, 3] in [0, 1] as PNG files in `dir` (created if needed), named
 * `names[i]` or `${prefix}${i}.png` (index zero-padded to 4 digits); returns the paths.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { saveImages } from "@texforce/core";
 * const paths = await saveImages(tf.zeros([2, 8, 8, 3]) as tf.Tensor4D, "out/samples", { prefix: "step10_" });
 * ```
 */
export async function saveImages(
  images: Tensor4D,
  dir: string,
  options: { prefix?: string; names?: string[] } = {},
): Promise<string[]> {
  const imgs = await tensorToImages(images);
  if (options.names && options.names.length !== imgs.length) {
    throw new Error(`saveImages: ${options.names.length} names for ${imgs.length} images`);
  }
  await Deno.mkdir(dir, { recursive: true });
  const paths: string[] = [];
  for (const [i, img] of imgs.entries()) {
    const name = options.names?.[i] ?? `${options.prefix ?? ""}${String(i).padStart(4, "0")}.png`;
    const path = join(dir, name);
    await writeFileAtomic(path, await encodePng(img));
    paths.push(path);
  }
  return paths;
}

/**
 * Options of {@linkcode imageGrid}.
 *
 * @example
 * ```ts
 * import type { GridOptions } from "@texforce/core";
 * const o: GridOptions = { columns: 4, captions: ["a", "b", "c", "d"], cellSize: 256 };
 * ```
 */
export interface GridOptions {
  /** Images per row (default: ⌈√n⌉). */
  columns?: number;
  /** One caption per image, drawn in full (wrapped) under it. */
  captions?: string[];
  /** One label per row, drawn left of it (e.g. `base`, `lora`). */
  rowLabels?: string[];
  /** One label per column, drawn above it (e.g. the prompt). */
  columnLabels?: string[];
  /**
   * Smallest cell side in pixels: smaller images are scaled up by a whole factor with nearest
   * neighbour, so pixels stay crisp (default 256; 0 keeps the native size).
   */
  cellSize?: number;
  /** Text size: each pixel of the 5×8 bitmap font becomes `textScale`² pixels (default 2). */
  textScale?: number;
  /** Most caption lines (default: as many as the longest caption needs). */
  captionLines?: number;
  /** Gap between cells in pixels (default 8). */
  padding?: number;
  /** Background colour as `#rrggbb` (default white). */
  background?: string;
}

function parseColour(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) throw new Error(`imageGrid: background must be #rrggbb, got '${hex}'`);
  return [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)];
}

/**
 * Lay out images in a grid with optional captions and row and column labels, scaled up with
 * nearest neighbour to a readable size; returns PNG bytes. All images must share one size.
 * Text is drawn with a built-in bitmap font, so no system font is needed.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { imageGrid } from "@texforce/core";
 * const png = await imageGrid(tf.zeros([4, 64, 64, 3]) as tf.Tensor4D, {
 *   columns: 2, columnLabels: ["a cat", "a dog"], rowLabels: ["base", "lora"],
 * });
 * await Deno.writeFile("grid.png", png);
 * ```
 */
export async function imageGrid(
  images: RgbImage[] | Tensor4D,
  options: GridOptions = {},
): Promise<Uint8Array> {
  return await encodePng(await gridImage(images, options));
}

/**
 * {@linkcode imageGrid} as raw RGB (before PNG encoding).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { gridImage } from "@texforce/core";
 * const g = await gridImage(tf.zeros([2, 8, 8, 3]) as tf.Tensor4D, { cellSize: 64 });
 * console.log(g.width, g.height);
 * ```
 */
export async function gridImage(
  images: RgbImage[] | Tensor4D,
  options: GridOptions = {},
): Promise<RgbImage> {
  const imgs = Array.isArray(images) ? images : await tensorToImages(images);
  if (!imgs.length) throw new Error("imageGrid: no images");
  imgs.forEach(checkImage);
  const { width: w, height: h } = imgs[0];
  if (imgs.some((i) => i.width !== w || i.height !== h)) {
    throw new Error("imageGrid: images differ in size");
  }
  const caps = options.captions;
  if (caps && caps.length !== imgs.length) {
    throw new Error(`imageGrid: ${caps.length} captions for ${imgs.length} images`);
  }
  const cols = Math.max(
    1,
    Math.min(options.columns ?? Math.ceil(Math.sqrt(imgs.length)), imgs.length),
  );
  const rows = Math.ceil(imgs.length / cols);
  if (options.rowLabels && options.rowLabels.length !== rows) {
    throw new Error(`imageGrid: ${options.rowLabels.length} row labels for ${rows} rows`);
  }
  if (options.columnLabels && options.columnLabels.length !== cols) {
    throw new Error(`imageGrid: ${options.columnLabels.length} column labels for ${cols} columns`);
  }
  const pad = options.padding ?? 8;
  const ts = Math.max(1, Math.round(options.textScale ?? 2));
  const lineH = LINE_HEIGHT * ts;
  const minCell = options.cellSize ?? 256;
  const up = minCell > 0 ? Math.max(1, Math.ceil(minCell / Math.max(w, h))) : 1;
  const cw = w * up;
  const ch = h * up;
  const capLines = caps?.map((c) => wrapText(c, cw, ts)) ?? [];
  const nCap = caps
    ? Math.min(options.captionLines ?? Infinity, Math.max(1, ...capLines.map((l) => l.length)))
    : 0;
  const capH = caps ? nCap * lineH + Math.round(lineH / 2) : 0;
  const colLines = options.columnLabels?.map((c) => wrapText(c, cw, ts)) ?? [];
  const headH = colLines.length
    ? Math.max(...colLines.map((l) => l.length)) * lineH + Math.round(lineH / 2)
    : 0;
  const labelMax = 12 * GLYPH_ADVANCE * ts * 2; // about 24 characters
  const rowLines = options.rowLabels?.map((l) => wrapText(l, labelMax, ts)) ?? [];
  const labelW = rowLines.length
    ? Math.max(...rowLines.flat().map((l) => textWidth(l, ts))) + pad
    : 0;
  const cellH = ch + capH;
  const width = labelW + cols * cw + (cols + 1) * pad;
  const height = headH + rows * cellH + (rows + 1) * pad;
  const bg = parseColour(options.background ?? "#ffffff");
  const canvas = { width, height, data: new Uint8Array(width * height * 3) };
  for (let i = 0; i < width * height; i++) canvas.data.set(bg, i * 3);
  const x0 = (c: number) => labelW + pad + c * (cw + pad);
  const y0 = (r: number) => headH + pad + r * (cellH + pad);
  imgs.forEach((img, i) => {
    const left = x0(i % cols);
    const top = y0(Math.floor(i / cols));
    for (let y = 0; y < ch; y++) {
      const src = Math.floor(y / up) * w;
      const dst = ((top + y) * width + left) * 3;
      for (let x = 0; x < cw; x++) {
        const s = (src + Math.floor(x / up)) * 3;
        const d = dst + x * 3;
        canvas.data[d] = img.data[s];
        canvas.data[d + 1] = img.data[s + 1];
        canvas.data[d + 2] = img.data[s + 2];
      }
    }
    capLines[i]?.slice(0, nCap).forEach((line, k) => {
      const tx = left + Math.floor((cw - textWidth(line, ts)) / 2);
      drawText(canvas, tx, top + ch + Math.round(lineH / 4) + k * lineH, line, ts);
    });
  });
  colLines.forEach((lines, c) => {
    lines.forEach((line, k) => {
      const tx = x0(c) + Math.floor((cw - textWidth(line, ts)) / 2);
      drawText(canvas, tx, pad + k * lineH, line, ts);
    });
  });
  rowLines.forEach((lines, r) => {
    const ty = y0(r) + Math.floor((ch - lines.length * lineH) / 2);
    lines.forEach((line, k) => drawText(canvas, pad, ty + k * lineH, line, ts));
  });
  return canvas;
}

/**
 * {@linkcode imageGrid} written to `path` (atomically).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { writeImageGrid } from "@texforce/core";
 * await writeImageGrid("grid.png", tf.zeros([2, 64, 64, 3]) as tf.Tensor4D, { captions: ["a", "b"] });
 * ```
 */
export async function writeImageGrid(
  path: string,
  images: RgbImage[] | Tensor4D,
  options: GridOptions = {},
): Promise<void> {
  await writeFileAtomic(path, await imageGrid(images, options));
}

function checkImage(img: RgbImage): void {
  if (img.data.length !== img.width * img.height * 3) {
    throw new Error(
      `image of ${img.width}×${img.height} needs ${
        img.width * img.height * 3
      } RGB bytes, has ${img.data.length}`,
    );
  }
}
