import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import {
  componentFile,
  fileIOHandler,
  openWeights,
  readComponentConfig,
  readModelFolder,
  requireComponent,
} from "../../../core/io/mod.ts";
import { useBackend } from "../../../core/backend.ts";
import { TINY_SD } from "../../_helpers.ts";

async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyDir(join(from, e.name), join(to, e.name));
    else await Deno.copyFile(join(from, e.name), join(to, e.name));
  }
}

Deno.test("model folder: the tiny SD pipeline reads like a real checkpoint", async (t) => {
  const m = await readModelFolder(TINY_SD);
  await t.step("components and classes", () => {
    assert.equal(m.pipelineClass, "StableDiffusionPipeline");
    assert.deepEqual(Object.keys(m.components).sort(), [
      "scheduler",
      "text_encoder",
      "tokenizer",
      "unet",
      "vae",
    ]);
    assert.equal(m.components.unet.className, "UNet2DConditionModel");
  });
  await t.step("configs and files", async () => {
    // readComponentConfig returns exactly what the component's config.json holds.
    const unet = await readComponentConfig<Record<string, unknown>>(m, "unet");
    assert.deepEqual(
      unet,
      JSON.parse(await Deno.readTextFile(join(TINY_SD, "unet", "config.json"))),
    );
    const sched = await readComponentConfig<Record<string, unknown>>(m, "scheduler");
    assert.deepEqual(
      sched,
      JSON.parse(await Deno.readTextFile(join(TINY_SD, "scheduler", "scheduler_config.json"))),
    );
    assert.ok((await componentFile(m, "tokenizer", "vocab.json")).endsWith("vocab.json"));
  });
  await t.step("weights open lazily from the component folder", async () => {
    const w = await openWeights(requireComponent(m, "text_encoder").path);
    assert.ok(w.keys().some((k) => /^(text_model\.)?encoder\.layers\.0\./.test(k)));
    w.close();
  });
});

Deno.test("model folder: missing pieces give errors naming them", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    await copyDir(TINY_SD, join(dir, "sd"));
    const root = join(dir, "sd");
    await t.step("missing folder", async () => {
      await assert.rejects(
        () => readModelFolder(join(dir, "nope")),
        /nope: model folder not found/,
      );
    });
    await t.step("missing component file", async () => {
      await Deno.remove(join(root, "tokenizer", "merges.txt"));
      const m = await readModelFolder(root);
      await assert.rejects(
        () => componentFile(m, "tokenizer", "merges.txt"),
        /merges\.txt: file not found \(component 'tokenizer' needs merges\.txt\)/,
      );
    });
    await t.step("component not in the pipeline", async () => {
      const m = await readModelFolder(root);
      assert.throws(() => requireComponent(m, "safety_checker"), /no 'safety_checker' component/);
    });
    await t.step("listed component whose folder is gone", async () => {
      await Deno.remove(join(root, "vae"), { recursive: true });
      await assert.rejects(
        () => readModelFolder(root),
        /model_index\.json: component 'vae' \(AutoencoderKL\) is listed but its folder .* is missing/,
      );
    });
    await t.step("bad JSON", async () => {
      await Deno.writeTextFile(join(root, "model_index.json"), "{ nope");
      await assert.rejects(() => readModelFolder(root), /model_index\.json: invalid JSON/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("graph models: a tfjs model.json + shards loads from disk", async () => {
  await useBackend("wasm");
  const dir = await Deno.makeTempDir();
  try {
    const model = tf.sequential({
      layers: [tf.layers.dense({ units: 3, inputShape: [4], useBias: true })],
    });
    // Save through a handler that writes model.json + one .bin shard, as tfjs converters do.
    await model.save(tf.io.withSaveHandler(async (a) => {
      await Deno.writeFile(
        join(dir, "group1-shard1of1.bin"),
        new Uint8Array(a.weightData as ArrayBuffer),
      );
      await Deno.writeTextFile(
        join(dir, "model.json"),
        JSON.stringify({
          modelTopology: a.modelTopology,
          format: a.format,
          weightsManifest: [{ paths: ["group1-shard1of1.bin"], weights: a.weightSpecs }],
        }),
      );
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" } };
    }));
    const loaded = await tf.loadLayersModel(fileIOHandler(join(dir, "model.json")));
    const x = tf.ones([1, 4]);
    const a = (model.predict(x) as tf.Tensor).dataSync();
    const b = (loaded.predict(x) as tf.Tensor).dataSync();
    assert.deepEqual(Array.from(b), Array.from(a));
    await Deno.remove(join(dir, "group1-shard1of1.bin"));
    await assert.rejects(
      () => tf.loadLayersModel(fileIOHandler(join(dir, "model.json"))),
      /weight shard .*group1-shard1of1\.bin not found/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
