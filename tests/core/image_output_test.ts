import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { useBackend } from "../../core/backend.ts";
import {
  decodeImage,
  encodePng,
  imageGrid,
  saveImages,
  tensorToImages,
  writeImageGrid,
} from "../../core/image_output.ts";
import { textWidth } from "../../core/_bitmap_font.ts";

Deno.test("image output: tensors to 8-bit RGB", async () => {
  await useBackend("cpu");
  const x = tf.tensor4d([0, 0.5, 1, 1.2, -0.1, NaN, 0.2, 0.998, 0.001, 0.3, 0.6, 0.9], [
    2,
    1,
    2,
    3,
  ]);
  const [a, b] = await tensorToImages(x);
  assert.deepEqual([a.width, a.height], [2, 1]);
  assert.deepEqual(Array.from(a.data), [0, 128, 255, 255, 0, 0]);
  assert.deepEqual(Array.from(b.data), [51, 254, 0, 77, 153, 229]);
  await assert.rejects(
    () => tensorToImages(tf.zeros([1, 2, 2, 4]) as tf.Tensor4D),
    /\[B, H, W, 3\]/,
  );
});

Deno.test("image output: PNG round trip and files", async () => {
  await useBackend("cpu");
  const img = { width: 3, height: 2, data: Uint8Array.from({ length: 18 }, (_, i) => i * 14) };
  const png = await encodePng(img);
  assert.deepEqual(Array.from(png.slice(1, 4)), [80, 78, 71]); // "PNG"
  assert.deepEqual(await decodeImage(png), img);
  const dir = await Deno.makeTempDir({ prefix: "image_output_" });
  const t = tf.tidy(() => tf.tensor4d(img.data, [1, 2, 3, 3]).div(255) as tf.Tensor4D);
  const paths = await saveImages(tf.concat([t, t]) as tf.Tensor4D, join(dir, "a"), {
    prefix: "s_",
  });
  assert.deepEqual(paths, [join(dir, "a", "s_0000.png"), join(dir, "a", "s_0001.png")]);
  assert.deepEqual(await decodeImage(await Deno.readFile(paths[1])), img);
  const named = await saveImages(t, dir, { names: ["x.png"] });
  assert.deepEqual(named, [join(dir, "x.png")]);
  await assert.rejects(() => saveImages(t, dir, { names: [] }), /0 names for 1 images/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("image output: captioned, labelled grid scaled up crisply", async () => {
  await useBackend("cpu");
  const colours = [[1, 0, 0], [0, 1, 0], [0, 0, 1]];
  const images = tf.tidy(() =>
    tf.stack(colours.map((c) => tf.ones([16, 16, 3]).mul(tf.tensor1d(c)))) as tf.Tensor4D
  );
  const png = await imageGrid(images, {
    columns: 2,
    captions: [
      'red <&> "quoted"',
      "green, a very long caption that has to wrap over lines",
      "blue",
    ],
    cellSize: 64,
    textScale: 1,
    padding: 4,
  });
  const grid = await decodeImage(png);
  // 16 px images scaled ×4 to 64 px; the longest caption wraps to 6 lines of 10 chars.
  const capH = 6 * 10 + 5;
  assert.equal(grid.width, 2 * 64 + 3 * 4);
  assert.equal(grid.height, 2 * (64 + capH) + 3 * 4);
  const px = (x: number, y: number) =>
    Array.from(grid.data.slice((y * grid.width + x) * 3, (y * grid.width + x) * 3 + 3));
  assert.deepEqual(px(4, 4), [255, 0, 0], "first image pixel");
  assert.deepEqual(px(4 + 63, 4 + 63), [255, 0, 0], "last upscaled pixel");
  assert.deepEqual(px(4 + 64 + 4 + 32, 4 + 32), [0, 255, 0]);
  assert.deepEqual(px(4 + 32, 4 + 64 + capH + 4 + 32), [0, 0, 255]);
  assert.deepEqual(px(1, 1), [255, 255, 255], "background");
  const dark = (x0: number, y0: number, x1: number, y1: number) => {
    let n = 0;
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) if (px(x, y)[0] < 64) n++;
    return n;
  };
  assert.ok(dark(4, 4 + 64, 4 + 64, 4 + 64 + capH) > 50, "the caption is drawn");
  assert.ok(dark(72, 4 + 64 + 50, 72 + 64, 4 + 64 + capH) > 10, "the long caption is not cut");
  // Row and column labels take a margin at the left and the top.
  const labelled = await decodeImage(
    await imageGrid(await tensorToImages(images), {
      columns: 3,
      padding: 0,
      cellSize: 0,
      rowLabels: ["base"],
      columnLabels: ["a", "b", "c"],
      textScale: 1,
    }),
  );
  assert.deepEqual([labelled.width, labelled.height], [textWidth("base", 1) + 48, 15 + 16]);
  const plain = await decodeImage(
    await imageGrid(await tensorToImages(images), { columns: 3, padding: 0, cellSize: 0 }),
  );
  assert.deepEqual([plain.width, plain.height], [48, 16]);
  const dir = await Deno.makeTempDir({ prefix: "grid_" });
  await writeImageGrid(join(dir, "g.png"), images, { captions: ["a", "b", "c"] });
  assert.ok((await Deno.stat(join(dir, "g.png"))).size > 0);
  await Deno.remove(dir, { recursive: true });
  await assert.rejects(() => imageGrid(images, { captions: ["a"] }), /1 captions for 3 images/);
  await assert.rejects(
    () => imageGrid(images, { columns: 3, rowLabels: ["a", "b"] }),
    /2 row labels for 1 rows/,
  );
  await assert.rejects(
    () =>
      imageGrid([{ width: 1, height: 1, data: new Uint8Array(3) }, {
        width: 2,
        height: 1,
        data: new Uint8Array(6),
      }]),
    /differ in size/,
  );
});
