// The face and hand rewards on real photographs: the six photos of people that ship in
// @vladmandic/face-api's demo/ folder (read from the installed npm package, never copied here).
// Thresholds are set from scores measured on the wasm backend (given next to each assertion),
// with a margin; they are not tuned to pass.
//
// Hands: no npm package installed here ships close-up hand photos; the face-api photos show
// hands, and these four were checked by eye to have clearly visible hands: sample2 (a fist on a
// knee), sample4 (a hand holding a phone), sample5 (a hand on a knee), sample6 (clasped hands).
// sample1 and sample3 show no clear hand (HandTrack's best boxes there are hair and a sleeve).
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { useBackend } from "../../core/backend.ts";
import { builtinRegistry } from "../../builtin_plugins.ts";
import { parsePluginOptions, type PluginError } from "../../core/plugin.ts";
import { faceReward, handPlugin, handReward } from "../../rewards/mod.ts";
import { loadPipeline } from "../../builtin_plugins.ts";
import { parsePipeline } from "../../core/pipeline_schema.ts";
import { resolvePrompts } from "../../core/prompts.ts";
import { train } from "../../core/train.ts";
import { tinyPipeline } from "../_helpers.ts";
import { noise, photo, photoCrop, shapesScene, tiled } from "../_photos.ts";

const FACE_PHOTOS = [1, 2, 3, 4, 5, 6];
const HAND_PHOTOS = [2, 4, 5, 6];
// The face box each photo's face reward picks (the largest face), [x, y, w, h] of the 512×512
// cover-resized photo, measured once and checked by eye; portraits are 2.5× that, centred on it.
const FACE_BOXES: Record<number, [number, number, number, number]> = {
  1: [0.075, 0.318, 0.158, 0.158],
  2: [0.064, 0.149, 0.142, 0.142],
  3: [0.579, 0.198, 0.174, 0.174],
  4: [0.512, 0.154, 0.139, 0.139],
  5: [0.821, 0.306, 0.175, 0.175],
  6: [0.836, 0.203, 0.159, 0.159],
};

async function one(
  r: { score(i: { images: tf.Tensor4D; prompts: string[] }): Promise<number[]> },
  images: tf.Tensor4D,
): Promise<number> {
  try {
    const [s] = await r.score({ images, prompts: ["x"] });
    return s;
  } finally {
    images.dispose();
  }
}

/** `reward.measure` of one image, which is then disposed. */
async function measured<M>(
  r: { measure(images: tf.Tensor4D): Promise<M[]> },
  image: tf.Tensor4D,
): Promise<M> {
  try {
    return (await r.measure(image))[0];
  } finally {
    image.dispose();
  }
}

/** Images stacked into a batch (the parts are disposed). */
function stack(parts: tf.Tensor4D[]): tf.Tensor4D {
  const batch = tf.concat(parts);
  tf.dispose(parts);
  return batch;
}

async function nonImages(): Promise<[string, tf.Tensor4D][]> {
  return [
    ["blank", tf.zeros([1, 512, 512, 3])],
    ["grey", tf.fill([1, 512, 512, 3], 0.5)],
    ["noise", noise()],
    ["shapes", await shapesScene()],
  ];
}

Deno.test("face reward on face-api's photos (wasm)", async (t) => {
  await useBackend("wasm");
  const face = await faceReward();
  const before = tf.memory().numTensors;
  const photoScores = new Map<number, number>();

  await t.step("every photo scores far above blank, grey, noise and a shapes scene", async () => {
    // Measured: photos 0.763 (sample2) … 0.950 (sample3); blank, grey, noise 0; shapes 0.0003
    // (BlazeFace takes the skin-coloured oval for a face at 0.74, FaceMesh does not: 0.0000).
    for (const n of FACE_PHOTOS) {
      const s = await one(face, await photo(n));
      photoScores.set(n, s);
      assert.ok(s >= 0.5, `sample${n}.jpg: face score ${s} < 0.5`);
    }
    for (const [name, x] of await nonImages()) {
      const s = await one(face, x);
      assert.ok(s <= 0.01, `${name}: face score ${s} > 0.01`);
    }
  });

  await t.step("a blurred photo scores lower", async () => {
    // Gaussian blur sigma 4 at 512 px. Measured drops: 0.105 (sample2) … 0.910 (sample4).
    for (const n of FACE_PHOTOS) {
      const s = await one(face, await photo(n, 512, 4));
      assert.ok(
        s <= photoScores.get(n)! - 0.05,
        `sample${n}.jpg blurred: ${s} vs ${photoScores.get(n)}`,
      );
    }
  });

  await t.step("a portrait cut into 8×8 shuffled tiles scores far lower", async () => {
    // Measured: portraits 0.702 … 0.884; tiled 0 … 0.0022. (The whole photos keep their small
    // faces inside single tiles, so they are cut as portraits, where the face spans ~3 tiles.)
    for (const n of FACE_PHOTOS) {
      const portrait = await photoCrop(n, FACE_BOXES[n], 2.5);
      const cut = tiled(portrait, 8);
      const s = await one(face, portrait);
      const c = await one(face, cut);
      assert.ok(s >= 0.5, `sample${n}.jpg portrait: ${s} < 0.5`);
      assert.ok(c <= 0.05, `sample${n}.jpg portrait in tiles: ${c} > 0.05`);
    }
  });

  await t.step("a batch scores as its images do one by one", async () => {
    const images = stack([await photo(1), tf.zeros([1, 512, 512, 3]), await photo(3)]);
    const batch = await face.measure(images);
    images.dispose();
    assert.deepEqual(batch.map((m) => m.faces > 0), [true, false, true]);
    assert.ok(Math.abs(batch[0].score - photoScores.get(1)!) < 1e-4);
    assert.ok(Math.abs(batch[2].score - photoScores.get(3)!) < 1e-4);
    assert.equal(batch[1].score, 0);
    const m = await measured(face, await photo(1));
    assert.ok(m.faces >= 3, `sample1 has three faces, found ${m.faces}`);
    const [x, y, w, h] = m.box!;
    assert.ok(x >= 0 && y >= 0 && x + w <= 1 && y + h <= 1 && w > 0.05 && h > 0.05);
  });

  await t.step("options: central face, anti-spoof and size terms", async () => {
    const full = await faceReward({ select: "central", antispoof: true, sizeTerm: true });
    const largest = await measured(face, await photo(6));
    const central = await measured(full, await photo(6));
    // sample6: the largest face is at the right edge; the central one is another woman's.
    const cx = (b: number[]): number => b[0] + b[2] / 2;
    assert.ok(Math.abs(cx(central.box!) - 0.5) < Math.abs(cx(largest.box!) - 0.5));
    assert.ok(central.real! > 0 && central.real! <= 1, `real ${central.real}`);
    assert.ok(central.size! > 0 && central.size! <= 1, `size ${central.size}`);
    const expected = central.detection * central.mesh * central.real! * central.size!;
    assert.ok(Math.abs(central.score - expected) < 1e-9);
    assert.deepEqual(full.metadata.models.map((m) => m.name), [
      "blazeface",
      "facemesh",
      "antispoof",
    ]);
    full.dispose();
  });

  await t.step("metadata names the models and the package version", () => {
    for (const m of face.metadata.models) {
      assert.equal(m.package, "@vladmandic/human@3.3.6");
      assert.ok(m.file.endsWith(join("models", `${m.name}.json`)), m.file);
      assert.ok(m.weightBytes > 100_000, `${m.name}: ${m.weightBytes} bytes`);
    }
    assert.equal(face.metadata.options.select, "largest");
  });

  await t.step("no tensors leak", () => {
    assert.equal(tf.memory().numTensors, before);
  });
  face.dispose();
});

Deno.test("hand reward on face-api's photos that show hands (wasm)", async (t) => {
  await useBackend("wasm");
  const hand = await handReward();
  const before = tf.memory().numTensors;
  const photoScores = new Map<number, number>();

  await t.step("every hand photo scores far above blank, grey, noise and shapes", async () => {
    // Measured: 0.299 (sample6) … 0.879 (sample2); blank, grey, noise 0 (HandTrack's best box
    // 0.03 … 0.06, under minConfidence 0.2); shapes 0.0017 (detection 0.82 on the blue box,
    // presence 0.002).
    for (const n of HAND_PHOTOS) {
      const s = await one(hand, await photo(n));
      photoScores.set(n, s);
      assert.ok(s >= 0.2, `sample${n}.jpg: hand score ${s} < 0.2`);
    }
    for (const [name, x] of await nonImages()) {
      const s = await one(hand, x);
      assert.ok(s <= 0.01, `${name}: hand score ${s} > 0.01`);
    }
  });

  await t.step("a blurred photo scores lower", async () => {
    // Blur sigma 4. Measured drops: 0.186 (sample2) … 0.351 (sample5).
    // Tiles are not asserted for hands: cutting sample5 into 4×4 tiles raised its score (0.354 →
    // 0.744), as HandTrack fires on local finger/skin patches and these photos hold several
    // partly visible hands.
    for (const n of HAND_PHOTOS) {
      const s = await one(hand, await photo(n, 512, 4));
      assert.ok(s <= photoScores.get(n)! - 0.1, `sample${n}.jpg blurred: ${s}`);
    }
  });

  await t.step("the landmark model rejects what only the detector takes for a hand", async () => {
    // sample1: HandTrack's best box (0.671, "point") is a woman's hair; presence 0.002.
    const bare = await handReward({ landmarks: false });
    const m = await measured(hand, await photo(1));
    const d = await measured(bare, await photo(1));
    assert.ok(d.score >= 0.5, `detection alone ${d.score}`);
    assert.ok(m.score <= 0.01, `with landmarks ${m.score}`);
    assert.equal(d.score, d.detection);
    assert.deepEqual(bare.metadata.models.map((x) => x.name), ["handtrack"]);
    bare.dispose();
  });

  await t.step(
    "pose classes: each counted class can win; tips count only when listed",
    async () => {
      const m = await measured(hand, await photo(2));
      assert.equal(m.label, "fist");
      const onlyHand = await handReward({ classes: ["hand"] });
      const h = await measured(onlyHand, await photo(2));
      assert.ok(h.detection < m.detection, `hand-only ${h.detection} vs ${m.detection}`);
      assert.equal(h.label, "hand");
      onlyHand.dispose();
      // Fingertip boxes are not hands by default; listed, they are what is scored.
      const tips = await handReward({ classes: ["tip", "pinchtip"], landmarks: false });
      const tip = await measured(tips, await photo(2));
      assert.ok(tip.label === "tip" || tip.label === "pinchtip", `label ${tip.label}`);
      assert.ok(tip.detection < m.detection, `tips ${tip.detection} vs ${m.detection}`);
      tips.dispose();
    },
  );

  await t.step("a batch scores as its images do one by one", async () => {
    const images = stack([await photo(2), tf.zeros([1, 512, 512, 3])]);
    const s = await hand.score({ images, prompts: ["a", "b"] });
    images.dispose();
    assert.ok(Math.abs(s[0] - photoScores.get(2)!) < 1e-4);
    assert.equal(s[1], 0);
    assert.deepEqual(hand.metadata.models.map((x) => x.name), ["handtrack", "handlandmark-lite"]);
  });

  await t.step("no tensors leak", () => {
    assert.equal(tf.memory().numTensors, before);
  });
  hand.dispose();
});

Deno.test("face and hand rewards on bad input", async (t) => {
  await useBackend("wasm");
  const face = await faceReward();
  const hand = await handReward();
  const prompts = (n: number): string[] => Array.from({ length: n }, () => "x");

  await t.step("empty batch, grey, 1×1, 3×700, 0×0 and NaN images score [] or 0", async () => {
    for (const r of [face, hand]) {
      assert.deepEqual(await r.score({ images: tf.zeros([0, 64, 64, 3]), prompts: [] }), []);
      for (const shape of [[2, 512, 512, 3], [1, 1, 1, 3], [1, 3, 700, 3], [2, 0, 0, 3]] as const) {
        const images = tf.fill([...shape], 0.5) as tf.Tensor4D;
        assert.deepEqual(
          await r.score({ images, prompts: prompts(shape[0]) }),
          prompts(shape[0]).map(() => 0),
        );
        images.dispose();
      }
      const nan = tf.fill([1, 32, 32, 3], NaN) as tf.Tensor4D;
      assert.deepEqual(await r.score({ images: nan, prompts: ["x"] }), [0]);
      nan.dispose();
    }
  });

  await t.step("a non-image tensor is a clear error", async () => {
    const bad = tf.zeros([1, 8, 8, 4]) as tf.Tensor4D;
    await assert.rejects(
      face.score({ images: bad, prompts: ["x"] }),
      /face: expected images \[B, H, W, 3\]/,
    );
    await assert.rejects(
      hand.score({ images: bad, prompts: ["x"] }),
      /hand: expected images \[B, H, W, 3\]/,
    );
    bad.dispose();
  });

  const modelsDir = face.metadata.models[0].file.replace(/[\\/]blazeface\.json$/, "");
  const tmp = await Deno.makeTempDir({ prefix: "texforce-face-" });
  try {
    await t.step("a missing model file names the file", async () => {
      await assert.rejects(faceReward({ modelDir: tmp }), (e: Error) => {
        assert.match(e.message, /^face: cannot load model 'blazeface'/);
        assert.ok(e.message.includes(join(tmp, "blazeface.json")), e.message);
        return true;
      });
      await assert.rejects(handReward({ modelDir: tmp }), /hand: cannot load model 'handtrack'/);
    });

    await t.step("a truncated weight file or a corrupt model.json names the file", async () => {
      for (const f of ["blazeface.json", "facemesh.json", "facemesh.bin"]) {
        await Deno.copyFile(join(modelsDir, f), join(tmp, f));
      }
      const bin = await Deno.readFile(join(modelsDir, "blazeface.bin"));
      await Deno.writeFile(join(tmp, "blazeface.bin"), bin.subarray(0, 1000));
      await assert.rejects(faceReward({ modelDir: tmp }), (e: Error) => {
        assert.match(e.message, /truncated or corrupt \.bin file/);
        assert.ok(e.message.includes(join(tmp, "blazeface.json")), e.message);
        return true;
      });
      await Deno.writeTextFile(join(tmp, "blazeface.json"), "{ not json");
      await assert.rejects(
        faceReward({ modelDir: tmp }),
        /blazeface\.json: cannot read model\.json/,
      );
      // A model folder with the files intact loads, and the record names the folder.
      await Deno.copyFile(join(modelsDir, "blazeface.json"), join(tmp, "blazeface.json"));
      await Deno.copyFile(join(modelsDir, "blazeface.bin"), join(tmp, "blazeface.bin"));
      const r = await faceReward({ modelDir: tmp });
      assert.equal(r.metadata.models[0].package, `folder ${tmp}`);
      r.dispose();
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }

  await t.step("options are validated by the plugins", () => {
    const registry = builtinRegistry();
    const facePlugin = registry.get("reward", "face")!;
    assert.deepEqual(parsePluginOptions(facePlugin, {}, "rewards[0].options"), {
      select: "largest",
      minConfidence: 0.5,
      iouThreshold: 0.3,
      antispoof: false,
      sizeTerm: false,
      sizeTarget: 0.3,
    });
    assert.throws(
      () => parsePluginOptions(facePlugin, { select: "biggest" }, "rewards[0].options"),
      (e: PluginError) => e.issues.some((i) => i.path === "rewards[0].options.select"),
    );
    assert.throws(
      () => parsePluginOptions(handPlugin, { classes: ["face"] }, "rewards[1].options"),
      (e: PluginError) => e.issues.some((i) => i.path.startsWith("rewards[1].options.classes")),
    );
    assert.deepEqual(parsePluginOptions(handPlugin, {}, "o").classes, [
      "hand",
      "fist",
      "pinch",
      "point",
    ]);
  });
  face.dispose();
  hand.dispose();
});

Deno.test("the models resolve from the npm cache in another Deno app", async () => {
  // An app with its own deno.json that maps texforce's dependencies but not @vladmandic/human:
  // Deno cannot resolve the package there, so the reward finds it in Deno's npm cache.
  const root = fileURLToPath(new URL("../..", import.meta.url));
  const config = JSON.parse(await Deno.readTextFile(join(root, "deno.json")));
  const imports = Object.fromEntries(
    Object.entries(config.imports as Record<string, string>).filter(([k]) =>
      !k.startsWith("@vladmandic/")
    ),
  );
  const app = await Deno.makeTempDir({ prefix: "texforce-app-" });
  try {
    await Deno.writeTextFile(join(app, "deno.json"), JSON.stringify({ imports }));
    // texforce's lockfile pins the versions, so resolving them needs no registry metadata (a
    // fresh machine's npm cache holds the locked packages' files but not every package's index).
    await Deno.copyFile(join(root, "deno.lock"), join(app, "deno.lock"));
    await Deno.writeTextFile(
      join(app, "main.ts"),
      `import { useBackend } from ${
        JSON.stringify(new URL("core/backend.ts", `file://${root}/`).href)
      };
import { faceReward } from ${JSON.stringify(new URL("rewards/face.ts", `file://${root}/`).href)};
await useBackend("cpu");
const r = await faceReward();
console.log(JSON.stringify(r.metadata.models.map((m) => m.file)));
r.dispose();
`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--cached-only", "main.ts"],
      cwd: app,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const files: string[] = JSON.parse(
      new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!,
    );
    assert.equal(files.length, 2);
    for (const f of files) {
      assert.ok(f.includes(join("@vladmandic", "human", "3.3.6", "models")), f);
    }
  } finally {
    await Deno.remove(app, { recursive: true });
  }
});

Deno.test("face and hand in a run: the SD 1.5 examples validate, run.json records the models", async (t) => {
  const root = fileURLToPath(new URL("../..", import.meta.url));
  await t.step("examples/sd15_face.yaml and sd15_hand.yaml", async () => {
    const face = await loadPipeline(join(root, "examples", "sd15_face.yaml"), {
      checkModel: false,
    });
    assert.deepEqual(face.rewards.map((r) => r.use), ["face"]);
    assert.deepEqual(await resolvePrompts(face), [
      "a complete face of a man",
      "a complete face of a woman",
    ]);
    const hand = await loadPipeline(join(root, "examples", "sd15_hand.yaml"), {
      checkModel: false,
    });
    assert.deepEqual(hand.rewards.map((r) => r.use), ["hand"]);
    assert.deepEqual(await resolvePrompts(hand), ["A photo of a hand"]);
  });

  await t.step("a tiny run with both rewards", async () => {
    const dir = await Deno.makeTempDir({ prefix: "texforce-facehand-run-" });
    try {
      const pipeline = parsePipeline({
        ...tinyPipeline({
          rewards: [{ use: "face" }, { use: "hand", options: { landmarks: false } }],
        }),
        backend: "wasm",
        train: { epochs: 1, batchesPerEpoch: 1, timestepFraction: 0.5 },
        output: { dir, saveImages: false, exportFormats: [] },
      }, { baseDir: root });
      await train(pipeline, { registry: builtinRegistry(), log: () => {} });
      const run = JSON.parse(await Deno.readTextFile(join(dir, "run.json")));
      assert.equal(run.backend, "wasm");
      assert.deepEqual(run.rewards.map((r: { name: string }) => r.name), ["face", "hand"]);
      const models = run.rewards.map((
        r: { metadata: { models: { name: string; package: string }[] } },
      ) => r.metadata.models.map((m) => `${m.name}@${m.package}`));
      assert.deepEqual(models, [
        ["blazeface@@vladmandic/human@3.3.6", "facemesh@@vladmandic/human@3.3.6"],
        ["handtrack@@vladmandic/human@3.3.6"],
      ]);
      const epoch = (await Deno.readTextFile(join(dir, "metrics.jsonl"))).split("\n")
        .filter(Boolean).map((l) => JSON.parse(l)).find((r) => r.type === "epoch");
      assert.equal(epoch.reward_face_mean, 0, "the tiny model draws no faces");
      assert.equal(epoch.reward_hand_mean, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});
