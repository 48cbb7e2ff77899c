// Built-in rewards (brightness, JPEG (in)compressibility), the built-in registry, and the example
// reward plugin loaded by module specifier.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { builtinRegistry } from "../../builtin_plugins.ts";
import { useBackend } from "../../core/backend.ts";
import { loadPluginModule, parsePluginOptions, PluginError } from "../../core/plugin.ts";
import type { Reward } from "../../core/reward.ts";
import {
  brightnessPlugin,
  brightnessReward,
  jpegCompressibilityPlugin,
  jpegCompressibilityReward,
  jpegIncompressibilityReward,
  jpegSizesKb,
} from "../../rewards/mod.ts";

const EXAMPLES = join(dirname(dirname(dirname(fileURLToPath(import.meta.url)))), "examples");

/** Deterministic uniform noise in [0, 1] (a small LCG, so scores are reproducible). */
function noise(shape: [number, number, number, number], seed = 1): tf.Tensor4D {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 32;
  }
  return tf.tensor4d(data, shape);
}

async function scores(reward: Reward, images: tf.Tensor4D): Promise<number[]> {
  const prompts = Array.from({ length: images.shape[0] }, () => "x");
  return await reward.score({ images, prompts });
}

Deno.test("rewards", async (t) => {
  await useBackend("cpu");

  await t.step("brightness: mean pixel value, or closeness to a target", async () => {
    const images = tf.concat([
      tf.zeros([1, 4, 4, 3]),
      tf.ones([1, 4, 4, 3]),
      tf.fill([1, 4, 4, 3], 0.25),
    ]) as tf.Tensor4D;
    assert.deepEqual(await scores(brightnessReward(), images), [0, 1, 0.25]);
    assert.deepEqual(await scores(brightnessReward({ scale: 2 }), images), [0, 2, 0.5]);
    assert.deepEqual(await scores(brightnessReward({ target: 0.25 }), images), [-0.25, -0.75, 0]);
    const viaPlugin = await brightnessPlugin.create(
      parsePluginOptions(brightnessPlugin, { scale: 3 }, "rewards[0].options"),
      { baseDir: "." },
    );
    assert.deepEqual(await scores(viaPlugin, images), [0, 3, 0.75]);
    images.dispose();
  });

  await t.step("JPEG compressibility: a flat image beats noise", async () => {
    const flat = tf.fill([1, 64, 64, 3], 0.5) as tf.Tensor4D;
    const rough = noise([1, 64, 64, 3]);
    const batch = tf.concat([flat, rough]) as tf.Tensor4D;
    const [flatScore, noiseScore] = await scores(jpegCompressibilityReward(), batch);
    assert.ok(flatScore > noiseScore, `flat ${flatScore} should beat noise ${noiseScore}`);
    assert.ok(flatScore < 0 && flatScore > -1, `a flat 64×64 JPEG is under 1 kB: ${flatScore}`);
    assert.ok(noiseScore < 3 * flatScore, `noise (${-noiseScore} kB) ≫ flat (${-flatScore} kB)`);
    const [flatInc, noiseInc] = await scores(jpegIncompressibilityReward(), batch);
    assert.equal(flatInc, -flatScore);
    assert.equal(noiseInc, -noiseScore);
    // Deterministic; batching does not change a score; lower quality makes smaller files.
    assert.deepEqual(await scores(jpegCompressibilityReward(), rough), [noiseScore]);
    const [low] = await jpegSizesKb(rough, 10);
    assert.ok(low < -noiseScore, `quality 10 (${low} kB) < quality 95 (${-noiseScore} kB)`);
    for (const x of [flat, rough, batch]) x.dispose();
  });

  await t.step("JPEG options are validated with their path", () => {
    const where = "rewards[0].options";
    assert.deepEqual(parsePluginOptions(jpegCompressibilityPlugin, {}, where), { quality: 95 });
    for (
      const [options, path] of [
        [{ quality: 0 }, "rewards[0].options.quality"],
        [{ quality: 101 }, "rewards[0].options.quality"],
        [{ quality: 90.5 }, "rewards[0].options.quality"],
        [{ quality: "high" }, "rewards[0].options.quality"],
        [{ qualty: 90 }, "rewards[0].options.qualty"],
      ] as const
    ) {
      try {
        parsePluginOptions(jpegCompressibilityPlugin, options, where);
        assert.fail(`accepted ${JSON.stringify(options)}`);
      } catch (e) {
        assert(e instanceof PluginError);
        assert.equal(e.issues[0].path, path);
        assert.match(
          e.message,
          new RegExp(`invalid options for reward plugin 'jpeg-compressibility'`),
        );
      }
    }
  });

  await t.step("a wrong image shape names the reward", async () => {
    const gray = tf.zeros([1, 4, 4, 1]) as tf.Tensor4D;
    await assert.rejects(
      scores(jpegCompressibilityReward(), gray),
      /jpeg: expected images \[B, H, W, 3\]/,
    );
    await assert.rejects(scores(brightnessReward(), gray), /brightness: expected images/);
    gray.dispose();
  });
});

Deno.test("builtinRegistry holds every built-in plugin", () => {
  const r = builtinRegistry();
  const names = r.list().map((p) => `${p.kind}:${p.name}`).sort();
  for (
    const expected of [
      "encoder:clip-lora",
      "sampler:ddim",
      "optimizer:adamw",
      "reward:brightness",
      "reward:jpeg-compressibility",
      "reward:jpeg-incompressibility",
    ]
  ) {
    assert.ok(names.includes(expected), `${expected} is missing from ${names.join(", ")}`);
  }
  assert.notEqual(builtinRegistry(), r, "a fresh registry each call");
});

Deno.test("the example reward plugin loads by module specifier", async (t) => {
  await useBackend("cpu");
  const red = tf.tensor4d([1, 0, 0, 1, 0, 0], [1, 1, 2, 3]);
  const grey = tf.fill([1, 1, 2, 3], 0.5) as tf.Tensor4D;
  const half = tf.tensor4d([1, 0, 0, 0.2, 0.2, 0.2], [1, 1, 2, 3]);
  const batch = tf.concat([red, grey, half]) as tf.Tensor4D;

  await t.step("relative to the pipeline's folder", async () => {
    const plugin = await builtinRegistry().resolve(
      "reward",
      "./custom_reward/mod.ts",
      EXAMPLES,
      "rewards[0].use",
    );
    assert.equal(plugin.name, "saturation");
    assert.equal(plugin.kind, "reward");
    const options = parsePluginOptions(plugin, { scale: 2 }, "rewards[0].options");
    const reward = await plugin.create(options, { baseDir: EXAMPLES }) as Reward;
    assert.deepEqual(await scores(reward, batch), [2, 0, 1]);
  });

  await t.step("by absolute path and file: URL", async () => {
    const path = join(EXAMPLES, "custom_reward", "mod.ts");
    for (const spec of [path, pathToFileURL(path).href]) {
      const plugin = await loadPluginModule(spec, "/", "reward", "rewards[0].use");
      assert.equal(plugin.name, "saturation");
    }
  });

  await t.step("its options are validated", () => {
    return loadPluginModule("./custom_reward/mod.ts", EXAMPLES, "reward", "rewards[1].use")
      .then((plugin) => {
        assert.throws(
          () => parsePluginOptions(plugin, { scale: -1 }, "rewards[1].options"),
          (e: unknown) =>
            e instanceof PluginError && e.issues[0].path === "rewards[1].options.scale",
        );
      });
  });

  await t.step("as the wrong kind", async () => {
    await assert.rejects(
      loadPluginModule("./custom_reward/mod.ts", EXAMPLES, "sampler", "sampler.use"),
      /sampler\.use: module '\.\/custom_reward\/mod\.ts' exports a reward plugin 'saturation', but a sampler plugin is needed here/,
    );
  });

  for (const x of [red, grey, half, batch]) x.dispose();
});
