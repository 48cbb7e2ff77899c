// The shapes world of the demo: captions parse back to their scenes, the split holds out its
// colour–shape pairs, a correct rendering of a caption scores 1 under the alignment reward and a
// wrong colour, count, shape, size, position or background scores lower; the BPE trainer's
// files load in ClipTokenizer; `deno task pretrain --resume` continues an interrupted run to the
// same weights.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  allScenes,
  captionSplits,
  HELDOUT_PAIRS,
  Mulberry32,
  parseCaption,
  sampleCaptions,
  sceneCaption,
} from "../../examples/shapes/world.ts";
import { renderScene } from "../../examples/shapes/render.ts";
import { alignment } from "../../examples/shapes/alignment.ts";
import plugin from "../../examples/shapes/reward.ts";
import { ClipTokenizer, trainClipBpe } from "../../adapters/mod.ts";

Deno.test("shapes world: captions, splits, rendering", async (t) => {
  await t.step("every caption parses back to its scene", () => {
    for (const s of allScenes()) {
      assert.deepEqual(sceneCaption(parseCaption(sceneCaption(s))), sceneCaption(s));
    }
    assert.throws(() => parseCaption("a red star on a black background"), /not a caption/);
  });
  await t.step("held-out captions and only they hold a held-out pair", () => {
    const { train, heldout } = captionSplits();
    assert(train.length > 1000 && heldout.length > 1000);
    const hasPair = (c: string) =>
      parseCaption(c).objects.some((o) =>
        HELDOUT_PAIRS.some(([col, sh]) => o.colour === col && o.shape === sh)
      );
    assert(train.every((c) => !hasPair(c)));
    assert(heldout.every(hasPair));
  });
  await t.step("rendering is deterministic", () => {
    const s = parseCaption("three small blue squares on a white background");
    assert.deepEqual(renderScene(s, 5).pixels, renderScene(s, 5).pixels);
    assert(renderScene(s, 5).pixels.some((v, i) => v !== renderScene(s, 6).pixels[i]));
  });
});

Deno.test("shapes alignment reward", async (t) => {
  const score = (caption: string, drawn: string, seed = 0) =>
    alignment(renderScene(parseCaption(drawn), seed).pixels, 32, 32, caption);

  await t.step("a correct rendering scores 1 on every attribute (every 7th caption)", () => {
    // The whole grammar (6885 captions × 3 seeds) was checked once; every 7th keeps this fast.
    for (const [i, s] of allScenes().entries()) {
      if (i % 7) continue;
      const c = sceneCaption(s);
      assert.deepEqual(score(c, c, i).combined, 1, c);
    }
  });
  await t.step("a correct rendering scores 1 (sampled captions, 20 seeds)", () => {
    for (const [i, c] of sampleCaptions(captionSplits().heldout, 60, 1).entries()) {
      assert.deepEqual(score(c, c, i).combined, 1, c);
    }
  });
  await t.step("a wrong attribute scores lower", () => {
    const c = "two red circles on a gray background";
    const cases: [string, string][] = [
      ["colour", "two blue circles on a gray background"],
      ["count", "three red circles on a gray background"],
      ["count", "a red circle on a gray background"],
      ["shape", "two red squares on a gray background"],
      ["background", "two red circles on a white background"],
    ];
    for (const [attr, drawn] of cases) {
      const s = score(c, drawn);
      assert(s.combined < 1, `${drawn}: combined ${s.combined}`);
      assert((s[attr as "colour"] ?? 1) < 1, `${drawn}: ${attr} ${s[attr as "colour"]}`);
    }
    const pair = "a large yellow triangle above a green square on a black background";
    const swapped = score(
      pair,
      "a large yellow triangle below a green square on a black background",
    );
    assert.deepEqual(swapped.position, 0);
    assert(swapped.combined < 1);
    const small = score(pair, "a small yellow triangle above a green square on a black background");
    assert.deepEqual(small.size, 0);
  });
  await t.step("the plugin scores a batch through the texforce Reward interface", async () => {
    const captions = [
      "a blue triangle on a black background",
      "two purple squares on a white background",
    ];
    const data = new Float32Array(2 * 32 * 32 * 3);
    data.set(renderScene(parseCaption(captions[0]), 0).pixels, 0);
    data.set(renderScene(parseCaption(captions[1]), 0).pixels, 32 * 32 * 3);
    const images = { shape: [2, 32, 32, 3], data: () => Promise.resolve(data) };
    const parsed = plugin.options.parse({});
    assert.deepEqual(parsed, { attribute: "combined", na: 1 });
    assert.deepEqual(await plugin.create(parsed).score({ images, prompts: captions }), [1, 1]);
    const colour = plugin.create({ attribute: "colour", na: 1 });
    assert.deepEqual(
      await colour.score({
        images,
        prompts: ["a red triangle on a black background", captions[1]],
      }),
      [0, 1],
    );
  });
});

Deno.test("BPE trainer: CLIP-format files that ClipTokenizer loads", () => {
  const { train } = captionSplits();
  const files = trainClipBpe(train, { maxLength: 16 });
  const tok = ClipTokenizer.fromFiles(files);
  assert.deepEqual(tok.vocabSize, Object.keys(files.vocab).length);
  // Every word of the grammar became one token.
  for (const word of ["triangle", "purple", "background", "circles", "left"]) {
    assert.deepEqual(tok.encode(word).length, 1, word);
  }
  const ids = tok.encodeBatch(["two red circles on a gray background"]).inputIds[0];
  assert.deepEqual(ids.length, 16);
  assert.deepEqual(ids[0], tok.bosTokenId);
  assert.deepEqual(ids[8], tok.eosTokenId);
  // Deterministic.
  assert.deepEqual(trainClipBpe(train, { maxLength: 16 }).merges, files.merges);
});

Deno.test("Mulberry32: a generator restored from its state continues the same stream", () => {
  const a = new Mulberry32(7);
  for (let i = 0; i < 5; i++) a.next();
  const b = Mulberry32.fromState(a.state());
  assert.deepEqual([b.next(), b.int(100), b.next()], [a.next(), a.int(100), a.next()]);
  assert.throws(() => Mulberry32.fromState(-1), /invalid Mulberry32 state/);
});

Deno.test("pretrain --resume: an interrupted run continues to the same weights", async () => {
  const dir = await Deno.makeTempDir({ prefix: "texforce-pretrain-" });
  const script = new URL("../../examples/shapes/pretrain.ts", import.meta.url).pathname;
  const pretrain = async (out: string, ...extra: string[]): Promise<string> => {
    const args = ["--steps", "4", "--batch", "2", "--save-every", "2", "--warmup-steps", "1"];
    const child = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...args, "--out", join(dir, out), ...extra].concat(
        ["--checkpoint", join(dir, `${out}.state.safetensors`)],
      ),
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(child.stdout) + new TextDecoder().decode(child.stderr);
    assert.equal(child.code, 0, text);
    return text;
  };
  const unet = (out: string) =>
    Deno.readFile(join(dir, out, "unet", "diffusion_pytorch_model.safetensors"));
  try {
    await pretrain("whole");
    assert.match(await pretrain("split", "--stop-at", "2"), /stopping after step 2/);
    assert.notDeepEqual(await unet("split"), await unet("whole"));
    assert.match(await pretrain("split", "--resume"), /resumed from .* after step 2/);
    assert.deepEqual(await unet("split"), await unet("whole"));
    const training = JSON.parse(await Deno.readTextFile(join(dir, "split", "training.json")));
    assert.equal(training.steps, 4);
    assert.equal(training.resumed, true);
    // Other settings than the checkpoint's are refused.
    const child = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, "--steps", "4", "--batch", "2", "--lr", "1e-3", "--resume"]
        .concat([
          "--out",
          join(dir, "split"),
          "--checkpoint",
          join(dir, "split.state.safetensors"),
        ]),
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.notEqual(child.code, 0);
    assert.match(new TextDecoder().decode(child.stderr), /other settings: peakLr 0.002/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
