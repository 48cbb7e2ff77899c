// Test images for the face and hand rewards: the photographs of people that ship in the npm
// package @vladmandic/face-api (demo/sample1.jpg … sample6.jpg; never copied into this repo),
// and the images they must beat: blank, grey, noise, a rendered shapes scene, and the photos
// blurred or cut into shuffled tiles.
import * as tf from "@tensorflow/tfjs";
import { Buffer } from "node:buffer";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import sharp from "sharp";

/** The demo/ folder of the installed @vladmandic/face-api package. */
export function faceApiDemoDir(): string {
  const main = import.meta.resolve("@vladmandic/face-api");
  if (!main.startsWith("file:")) {
    throw new Error(
      `@vladmandic/face-api is not installed (resolved to ${main}); run deno install`,
    );
  }
  return join(dirname(dirname(fileURLToPath(main))), "demo");
}

/** The photo demo/sample{n}.jpg, resized to cover size×size, as [1, size, size, 3] in [0, 1]. */
export async function photo(n: number, size = 512, blurSigma = 0): Promise<tf.Tensor4D> {
  let img = sharp(join(faceApiDemoDir(), `sample${n}.jpg`)).resize(size, size, { fit: "cover" })
    .removeAlpha();
  if (blurSigma > 0) img = img.blur(blurSigma);
  const buf = await img.raw().toBuffer();
  return tf.tidy(() =>
    tf.div(tf.tensor4d(new Uint8Array(buf), [1, size, size, 3], "int32"), 255) as tf.Tensor4D
  );
}

/** The image cut into g×g tiles put back in a fixed shuffled order (tile i takes tile 1 - i mod g²). */
export function tiled(image: tf.Tensor4D, g = 4): tf.Tensor4D {
  return tf.tidy(() => {
    const [, h, w] = image.shape;
    const th = Math.floor(h / g);
    const tw = Math.floor(w / g);
    const tiles: tf.Tensor4D[] = [];
    for (let y = 0; y < g; y++) {
      for (let x = 0; x < g; x++) {
        tiles.push(tf.slice(image, [0, y * th, x * tw, 0], [1, th, tw, 3]));
      }
    }
    const n = tiles.length;
    const order = tiles.map((_, i) => (i * (n - 1) + 1) % n);
    const rows: tf.Tensor4D[] = [];
    for (let y = 0; y < g; y++) {
      rows.push(tf.concat(order.slice(y * g, (y + 1) * g).map((i) => tiles[i]), 2));
    }
    return tf.concat(rows, 1);
  });
}

/** Deterministic uniform noise in [0, 1]. */
export function noise(size = 512, seed = 7): tf.Tensor4D {
  const n = size * size * 3;
  const data = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 32;
  }
  return tf.tensor4d(data, [1, size, size, 3]);
}

/**
 * A rendered scene of flat shapes: sky, ground, a sun, boxes, a triangle and a skin-coloured oval
 * with two dark dots (the simplest thing a face detector could mistake for a face).
 */
export async function shapesScene(size = 512): Promise<tf.Tensor4D> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512">
    <rect width="512" height="300" fill="#7fb2e5"/><rect y="300" width="512" height="212" fill="#4f8a3c"/>
    <circle cx="420" cy="80" r="45" fill="#f6d743"/>
    <rect x="40" y="220" width="140" height="120" fill="#b5543a"/>
    <polygon points="30,220 110,150 190,220" fill="#6b2f22"/>
    <rect x="300" y="330" width="90" height="140" fill="#3a5fb5" transform="rotate(12 345 400)"/>
    <ellipse cx="250" cy="200" rx="55" ry="70" fill="#e8b796"/>
    <circle cx="230" cy="185" r="7" fill="#222"/><circle cx="270" cy="185" r="7" fill="#222"/>
  </svg>`;
  const buf = await sharp(Buffer.from(svg)).resize(size, size).removeAlpha().raw().toBuffer();
  return tf.tidy(() =>
    tf.div(tf.tensor4d(new Uint8Array(buf), [1, size, size, 3], "int32"), 255) as tf.Tensor4D
  );
}

/**
 * A square region of demo/sample{n}.jpg (resized to cover 1536×1536 first), centred on `box`
 * ([x, y, w, h] as fractions of that square), `grow` times the box's longer side (clamped to the
 * photo), resized to size×size: a portrait of one face, or a close-up of one hand.
 */
export async function photoCrop(
  n: number,
  box: [number, number, number, number],
  grow: number,
  size = 512,
  blurSigma = 0,
): Promise<tf.Tensor4D> {
  const full = 1536;
  const side = Math.min(full, Math.round(grow * Math.max(box[2], box[3]) * full));
  const cx = (box[0] + box[2] / 2) * full;
  const cy = (box[1] + box[3] / 2) * full;
  const left = Math.round(Math.min(full - side, Math.max(0, cx - side / 2)));
  const top = Math.round(Math.min(full - side, Math.max(0, cy - side / 2)));
  const region = await sharp(join(faceApiDemoDir(), `sample${n}.jpg`))
    .resize(full, full, { fit: "cover" }).removeAlpha().raw().toBuffer();
  let img = sharp(region, { raw: { width: full, height: full, channels: 3 } })
    .extract({ left, top, width: side, height: side }).resize(size, size);
  if (blurSigma > 0) img = img.blur(blurSigma);
  const buf = await img.raw().toBuffer();
  return tf.tidy(() =>
    tf.div(tf.tensor4d(new Uint8Array(buf), [1, size, size, 3], "int32"), 255) as tf.Tensor4D
  );
}
