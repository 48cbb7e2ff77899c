/**
 * Image output: NHWC tensors in [0, 1] to 8-bit RGB images, PNG files, and captioned grids.
 *
 * sharp (a native module) is imported lazily, on first use, so that modules which import this
 * one can still be bundled for the GPU machine as long as they never write images there.
 *
 * @module
 */
import { writeFileAtomic } from "./io/safetensors.ts";
import { Buffer } from "node:buffer";
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
 * const o: GridOptions = { columns: 4, captions: ["a", "b", "c", "d"], padding: 8 };
 * ```
 */
export interface GridOptions {
  /** Images per row (default: ⌈√n⌉). */
  columns?: number;
  /** One caption per image, drawn under it. */
  captions?: string[];
  /** Caption font size in pixels (default: image width / 16, at least 10). */
  fontSize?: number;
  /** Most caption lines (longer captions end with an ellipsis; default 2). */
  captionLines?: number;
  /** Gap between cells in pixels (default 4). */
  padding?: number;
  /** Background colour (default white). */
  background?: string;
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Greedy word wrap for a font whose average glyph is ~0.55 em wide. */
function wrap(text: string, width: number, fontSize: number, maxLines: number): string[] {
  const perLine = Math.max(4, Math.floor(width / (fontSize * 0.55)));
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    const next = line ? `${line} ${word}` : word;
    if (next.length <= perLine) {
      line = next;
      continue;
    }
    if (line) lines.push(line);
    line = word.length > perLine ? word.slice(0, perLine) : word;
  }
  if (line) lines.push(line);
  if (lines.length > maxLines) {
    lines.length = maxLines;
    const last = lines[maxLines - 1];
    lines[maxLines - 1] = `${last.slice(0, Math.max(0, perLine - 1))}…`;
  }
  return lines;
}

/**
 * Lay out images in a grid with optional captions; returns PNG bytes. All images must share
 * one size.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { imageGrid } from "@texforce/core";
 * const png = await imageGrid(tf.zeros([4, 64, 64, 3]) as tf.Tensor4D, {
 *   columns: 2, captions: ["a cat", "a dog", "a fox", "an owl"],
 * });
 * await Deno.writeFile("grid.png", png);
 * ```
 */
export async function imageGrid(
  images: RgbImage[] | Tensor4D,
  options: GridOptions = {},
): Promise<Uint8Array> {
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
  const pad = options.padding ?? 4;
  const font = options.fontSize ?? Math.max(10, Math.round(w / 16));
  const maxLines = options.captionLines ?? 2;
  const lineH = Math.round(font * 1.25);
  const capH = caps ? maxLines * lineH + Math.round(font * 0.5) : 0;
  const cellH = h + capH;
  const width = cols * w + (cols + 1) * pad;
  const height = rows * cellH + (rows + 1) * pad;
  const s = await sharp();
  const layers: {
    input: Buffer;
    left: number;
    top: number;
    raw?: { width: number; height: number; channels: 3 };
  }[] = [];
  const buffer = (a: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  let svg = "";
  imgs.forEach((img, i) => {
    const left = pad + (i % cols) * (w + pad);
    const top = pad + Math.floor(i / cols) * (cellH + pad);
    layers.push({ input: buffer(img.data), left, top, raw: { width: w, height: h, channels: 3 } });
    if (caps) {
      wrap(caps[i], w, font, maxLines).forEach((line, k) => {
        svg += `<text x="${left + w / 2}" y="${top + h + (k + 1) * lineH}" font-size="${font}" ` +
          `text-anchor="middle" font-family="DejaVu Sans, Arial, sans-serif" fill="#000">` +
          `${escapeXml(line)}</text>`;
      });
    }
  });
  if (svg) {
    const doc =
      `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${svg}</svg>`;
    layers.push({ input: buffer(new TextEncoder().encode(doc)), left: 0, top: 0 });
  }
  const background = options.background ?? "#ffffff";
  const buf = await s({ create: { width, height, channels: 3, background } })
    .composite(layers)
    .flatten({ background })
    .png()
    .toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
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
