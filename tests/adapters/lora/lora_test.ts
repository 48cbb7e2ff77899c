import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import {
  ClipLoraEncoder,
  clipLoraEncoderPlugin,
} from "../../../adapters/encoder/clip_lora_encoder.ts";
import {
  LoraAdapter,
  LoraStack,
  loraVariableName,
  parseLoraVariableName,
} from "../../../adapters/lora/lora.ts";
import { readLora } from "../../../adapters/lora/lora_formats.ts";
import { parsePluginOptions } from "../../../core/plugin.ts";
import {
  assertClose,
  availableBackends,
  fixture,
  golden,
  textEncoderFacts,
  TINY_SD,
} from "../../_helpers.ts";

const PEFT_DIR = fixture("sd-tiny", "lora_peft");
const TOL: Record<string, number> = { cpu: 1e-4, wasm: 1e-4, webgpu: 1e-3 };
const { hidden, layers, intermediate, maxLength, prompts: rows, lora } = await textEncoderFacts();
const LAST = layers - 1;
/** TexForce's default targets: the four attention projections of every layer. */
const DEFAULT_TARGET_COUNT = 4;

async function prompts(): Promise<string[]> {
  return JSON.parse(await Deno.readTextFile(fixture("sd-tiny", "golden.json"))).tokenizer_prompts;
}

Deno.test("LoRA encoder matches PEFT (lora.last_hidden_state)", async (t) => {
  const expected = (await golden("sd-tiny")).get("lora.last_hidden_state")!.data;
  const texts = await prompts();
  for (const backend of await availableBackends()) {
    await t.step(backend, async () => {
      await useBackend(backend as "cpu" | "wasm" | "webgpu");
      const enc = await ClipLoraEncoder.load(TINY_SD, {
        train: false,
        adapters: [{ path: PEFT_DIR }],
      });
      const h = enc.encode(texts);
      assert.deepEqual(h.shape, [rows, maxLength, hidden]);
      const err = assertClose(await h.data(), expected, TOL[backend], `${backend} lora`);
      console.log(`  ${backend}: lora.last_hidden_state rel err ${err.toExponential(2)}`);
      h.dispose();
      enc.dispose();
    });
  }
});

Deno.test("LoRA gradients agree across backends", async (t) => {
  const texts = (await prompts()).slice(0, 3);
  let reference: Map<string, Float32Array> | null = null;
  for (const backend of await availableBackends()) {
    await t.step(backend, async () => {
      await useBackend(backend as "cpu" | "wasm" | "webgpu");
      const enc = await ClipLoraEncoder.load(TINY_SD, {
        adapters: [{ path: PEFT_DIR, trainable: true }],
      });
      const vars = enc.trainableVariables();
      const { value, grads } = tf.variableGrads(
        () => tf.mean(tf.square(enc.encode(texts))) as tf.Scalar,
        [...vars.values()],
      );
      const host = new Map<string, Float32Array>();
      for (const [name, v] of vars) host.set(name, (await grads[v.name].data()) as Float32Array);
      tf.dispose([value, ...Object.values(grads)]);
      enc.dispose();
      if (!reference) {
        reference = host;
        return;
      }
      let worst = 0;
      for (const [name, g] of host) {
        worst = Math.max(worst, assertClose(g, reference.get(name)!, 1e-3, `${backend} ${name}`));
      }
      console.log(`  ${backend}: worst LoRA gradient rel err vs cpu ${worst.toExponential(2)}`);
    });
  }
});

Deno.test("LoRA adapters", async (t) => {
  await useBackend("wasm");
  const g = await golden("sd-tiny");
  const base = g.get("text_encoder.last_hidden_state")!.data;
  const withLora = g.get("lora.last_hidden_state")!.data;
  const texts = await prompts();
  const peftWeights = await readLora(PEFT_DIR);

  await t.step("a fresh TexForce adapter: r16 on q/k/v/out, B = 0, PEFT names", async () => {
    const enc = await ClipLoraEncoder.load(TINY_SD, { seed: 1 });
    const vars = enc.trainableVariables();
    assert.equal(vars.size, layers * DEFAULT_TARGET_COUNT * 2);
    const a = vars.get("base_model.model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight")!;
    const b = vars.get("base_model.model.encoder.layers.0.self_attn.q_proj.lora_B.default.weight")!;
    assert.deepEqual(a.shape, [16, hidden]);
    assert.deepEqual(b.shape, [hidden, 16]);
    assert.ok(a.trainable && b.trainable);
    // kaiming_uniform(a=√5): U(-1/√in, 1/√in).
    const av = await a.data();
    const bound = 1 / Math.sqrt(hidden);
    assert.ok(av.every((x) => Math.abs(x) <= bound) && av.some((x) => Math.abs(x) > bound / 2));
    assert.ok((await b.data()).every((x) => x === 0));
    // B = 0: the output equals the plain model.
    const h = enc.encode(texts);
    assertClose(await h.data(), base, 1e-4, "fresh adapter");
    h.dispose();
    enc.dispose();
  });

  await t.step("variable names are the golden gradient names", async () => {
    const enc = await ClipLoraEncoder.load(TINY_SD, {
      adapters: [{ path: PEFT_DIR, trainable: true }],
    });
    const goldenNames = [...g.keys()]
      .filter((k) => k.startsWith("ppo.grad.base_model"))
      .map((k) => k.slice("ppo.grad.".length))
      .sort();
    assert.deepEqual([...enc.trainableVariables().keys()].sort(), goldenNames);
    assert.equal(enc.lora.adapters.size, 1);
    const h = enc.encode(texts);
    assertClose(await h.data(), withLora, 1e-4, "trainable loaded adapter");
    h.dispose();
    enc.dispose();
    assert.equal(
      loraVariableName("encoder.layers.0.self_attn.q_proj", "A"),
      "base_model.model.text_model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight",
    );
    assert.deepEqual(
      parseLoraVariableName(
        "base_model.model.text_model.encoder.layers.11.mlp.fc2.lora_B.face.weight",
      ),
      { module: "encoder.layers.11.mlp.fc2", part: "B", adapter: "face" },
    );
  });

  await t.step("gaussian init, fc1/fc2 targets, rank and alpha options", async () => {
    const enc = await ClipLoraEncoder.load(TINY_SD, {
      rank: 8,
      alpha: 4,
      init: "gaussian",
      targets: ["fc1", "fc2"],
      seed: 3,
    });
    const adapter = enc.lora.get("default");
    assert.deepEqual(adapter.targets, ["fc1", "fc2"]);
    const m = adapter.modules.get(`encoder.layers.${LAST}.mlp.fc1`)!;
    assert.deepEqual(m.a.shape, [8, hidden]);
    assert.deepEqual(m.b.shape, [intermediate, 8]);
    assert.equal(m.scale, 0.5);
    const std = tf.tidy(() => tf.moments(m.a).variance.sqrt().dataSync()[0]);
    assert.ok(Math.abs(std - 1 / 8) < 0.03, `std ${std}`);
    enc.dispose();
    await assert.rejects(
      () => ClipLoraEncoder.load(TINY_SD, { targets: ["to_q"] }),
      /LoRA targets \["to_q"\] are not linear layers of CLIP/,
    );
  });

  await t.step("assign() loads saved weights into a live adapter (resume)", async () => {
    const enc = await ClipLoraEncoder.load(TINY_SD, { rank: lora.r, alpha: lora.alpha, seed: 0 });
    const vars = enc.trainableVariables();
    enc.lora.get("default").assign(await readLora(PEFT_DIR));
    // Same variable objects, new values.
    assert.equal(enc.trainableVariables().get([...vars.keys()][0]), [...vars.values()][0]);
    const h = enc.encode(texts);
    assertClose(await h.data(), withLora, 1e-4, "assigned");
    h.dispose();
    enc.dispose();
    const r16 = await ClipLoraEncoder.load(TINY_SD, { seed: 0 });
    assert.throws(
      () => r16.lora.get("default").assign(peftWeights),
      new RegExp(
        `adapter_model\\.safetensors: '.*lora_A\\.weight': shapes \\[${lora.r},${hidden}\\]/` +
          `\\[${hidden},${lora.r}\\] differ from the adapter's \\[16,${hidden}\\]/\\[${hidden},16\\]`,
      ),
    );
    r16.dispose();
  });

  await t.step("disable, re-weight and fuse adapters at run time", async () => {
    const enc = await ClipLoraEncoder.load(TINY_SD, {
      train: false,
      adapters: [
        { path: PEFT_DIR, name: "face", weight: 0.5 },
        { path: PEFT_DIR, name: "hand", weight: 0.5 },
      ],
    });
    assert.equal(enc.trainableVariables().size, 0);
    const fused = enc.encode(texts);
    assertClose(await fused.data(), withLora, 1e-4, "two halves fuse into one adapter");
    enc.lora.get("face").enabled = false;
    enc.lora.get("hand").enabled = false;
    const off = enc.encode(texts);
    assertClose(await off.data(), base, 1e-4, "all disabled = base model");
    enc.lora.get("hand").enabled = true;
    enc.lora.get("hand").weight = 1;
    const one = enc.encode(texts);
    assertClose(await one.data(), withLora, 1e-4, "one at full weight");
    tf.dispose([fused, off, one]);
    enc.lora.remove("face");
    assert.throws(() => enc.lora.get("face"), /no LoRA adapter named 'face' \(loaded: hand\)/);
    await assert.rejects(
      () => enc.loadAdapter(PEFT_DIR, { name: "hand" }),
      /a LoRA adapter named 'hand' is already loaded/,
    );
    enc.dispose();
  });

  await t.step("gradients flow to the LoRA variables", async () => {
    const enc = await ClipLoraEncoder.load(TINY_SD, {
      adapters: [{ path: PEFT_DIR, trainable: true }],
    });
    const vars = enc.trainableVariables();
    const { value, grads } = tf.variableGrads(
      () => tf.mean(tf.square(enc.encode(texts.slice(0, 3)))) as tf.Scalar,
      [...vars.values()],
    );
    assert.ok(Number.isFinite(value.dataSync()[0]));
    assert.equal(Object.keys(grads).length, vars.size);
    for (const [name, v] of vars) {
      const gr = grads[v.name];
      assert.deepEqual(gr.shape, v.shape, name);
      const norm = tf.tidy(() => tf.norm(gr).dataSync()[0]);
      assert.ok(norm > 0 && Number.isFinite(norm), `${name}: grad norm ${norm}`);
    }
    tf.dispose([value, ...Object.values(grads)]);
    enc.dispose();

    // A fresh adapter (B = 0): only B gets gradient at the first step, as in PyTorch.
    const fresh = await ClipLoraEncoder.load(TINY_SD, { seed: 0 });
    const fv = fresh.trainableVariables();
    const r = tf.variableGrads(
      () => tf.mean(tf.square(fresh.encode(["a red circle"]))) as tf.Scalar,
      [...fv.values()],
    );
    for (const [name, v] of fv) {
      const norm = tf.tidy(() => tf.norm(r.grads[v.name]).dataSync()[0]);
      if (name.includes("lora_A")) assert.equal(norm, 0, name);
      else assert.ok(norm > 0, name);
    }
    tf.dispose([r.value, ...Object.values(r.grads)]);
    fresh.dispose();
  });

  await t.step("gradients agree with finite differences", async () => {
    await useBackend("cpu");
    const enc = await ClipLoraEncoder.load(TINY_SD, {
      adapters: [{ path: PEFT_DIR, trainable: true }],
    });
    const ids = enc.tokenize(texts.slice(0, 2));
    const probe = tf.randomNormal([2, maxLength, hidden], 0, 1, "float32", 7);
    const loss = () => tf.sum(tf.mul(enc.encodeIds(ids), probe)) as tf.Scalar;
    for (
      const name of ["layers.0.self_attn.q_proj.lora_A", `layers.${LAST}.self_attn.v_proj.lora_B`]
    ) {
      const [, v] = [...enc.trainableVariables()].find(([k]) => k.includes(name))!;
      const { grads } = tf.variableGrads(loss, [v]);
      const g = grads[v.name];
      const dir = tf.randomNormal(v.shape, 0, 1, "float32", 11);
      const analytic = tf.tidy(() => tf.sum(tf.mul(g, dir)).dataSync()[0]);
      // The step is relative to the parameter's own scale, so the check means the same for any
      // encoder; Richardson extrapolation of two central differences cancels the h² term.
      const scale = tf.tidy(() => tf.sqrt(tf.mean(tf.square(v))).dataSync()[0]) || 1;
      const h = 1e-2 * scale;
      const orig = v.clone();
      const at = (s: number) =>
        tf.tidy(() => {
          v.assign(tf.add(orig, tf.mul(dir, s)));
          return loss().dataSync()[0];
        });
      const central = (e: number) => (at(e) - at(-e)) / (2 * e);
      const numeric = (4 * central(h / 2) - central(h)) / 3;
      // float32 rounding of the summed loss, divided by the step, bounds what a difference sees.
      const sumAbs = tf.tidy(() => tf.sum(tf.abs(tf.mul(enc.encodeIds(ids), probe))).dataSync()[0]);
      v.assign(orig);
      const noise = 1e-6 * sumAbs / h;
      tf.dispose([g, dir, orig]);
      assert.ok(
        Math.abs(numeric - analytic) <= 1e-2 * Math.abs(analytic) + noise,
        `${name}: analytic ${analytic}, numeric ${numeric} (noise floor ${noise})`,
      );
    }
    tf.dispose([ids, probe]);
    enc.dispose();
    await useBackend("wasm");
  });

  await t.step("repeated encodes and gradient steps leave no tensors behind", async () => {
    const enc = await ClipLoraEncoder.load(TINY_SD, { seed: 0 });
    const vars = [...enc.trainableVariables().values()];
    const warm = enc.encode(texts);
    warm.dispose();
    // The first backward pass on wasm caches each frozen linear's transposed weight (released
    // by dispose, checked below): warm it up too, then nothing may accumulate.
    const first = tf.variableGrads(() => tf.mean(enc.encode(["a hand"])) as tf.Scalar, vars);
    tf.dispose([first.value, ...Object.values(first.grads)]);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 4; i++) {
      enc.encode(texts).dispose();
      tf.tidy(() => {
        enc.encode(texts.slice(0, 2)).sum();
      });
      const { value, grads } = tf.variableGrads(
        () => tf.mean(enc.encode(["a hand"])) as tf.Scalar,
        vars,
      );
      tf.dispose([value, ...Object.values(grads)]);
      const ids = enc.tokenize(["x"]);
      const p = enc.forward(ids);
      tf.dispose([ids, p.lastHiddenState, p.pooledOutput!]);
    }
    assert.equal(tf.memory().numTensors, before);
    enc.dispose();
  });

  await t.step("dispose releases the model and every adapter", async () => {
    await useBackend("wasm"); // where a backward pass caches transposed weights
    const start = tf.memory().numTensors;
    const enc = await ClipLoraEncoder.load(TINY_SD, { adapters: [{ path: PEFT_DIR }] });
    // After a backward pass too (which may cache transposed weights).
    const vars = [...enc.trainableVariables().values()];
    const g = tf.variableGrads(() => tf.mean(enc.encode(["a hand"])) as tf.Scalar, vars);
    tf.dispose([g.value, ...Object.values(g.grads)]);
    enc.dispose();
    assert.equal(tf.memory().numTensors, start);
  });

  await t.step("LoraStack sums enabled adapters; LoraAdapter validates options", () => {
    const shapes = new Map([["encoder.layers.0.self_attn.q_proj", {
      inFeatures: 4,
      outFeatures: 3,
    }]]);
    const a = LoraAdapter.create("x", shapes, { rank: 2, alpha: 4, targets: ["q_proj"], seed: 0 });
    a.modules.get("encoder.layers.0.self_attn.q_proj")!.b.assign(tf.ones([3, 2]));
    const stack = new LoraStack();
    stack.add(a);
    const x = tf.ones([1, 4]) as tf.Tensor2D;
    const d = stack.delta("encoder.layers.0.self_attn.q_proj", x)!;
    const expected = tf.tidy(() => {
      const m = a.modules.get("encoder.layers.0.self_attn.q_proj")!;
      return tf.mul(tf.matMul(tf.matMul(x, m.a, false, true), m.b, false, true), 2);
    });
    assertClose(d.dataSync(), expected.dataSync(), 1e-6, "delta");
    assert.equal(stack.delta("encoder.layers.0.self_attn.k_proj", x), null);
    tf.dispose([x, d, expected]);
    stack.dispose();
    assert.throws(() => LoraAdapter.create("x", shapes, { rank: 0 }), /rank must be a positive/);
    assert.throws(() => LoraAdapter.create("bad name", shapes), /use letters, digits/);
    assert.throws(
      () => LoraAdapter.create("x", shapes, { targets: ["fc1"] }),
      /match no linear layer/,
    );
  });
});

Deno.test("clip-lora plugin", async (t) => {
  await useBackend("wasm");
  await t.step("validates options and builds the encoder from the run's model", async () => {
    const o = parsePluginOptions(
      clipLoraEncoderPlugin,
      { rank: 4, adapters: [{ path: "lora_peft", weight: 0.5 }] },
      "encoder.options",
    );
    assert.equal(o.alpha, 16);
    assert.deepEqual(o.targets, ["q_proj", "k_proj", "v_proj", "out_proj"]);
    const enc = await clipLoraEncoderPlugin.create(o, {
      baseDir: fixture("sd-tiny"),
      modelPath: TINY_SD,
    });
    assert.equal(enc.name, "clip-lora");
    assert.equal(enc.hiddenSize, hidden);
    assert.equal(enc.maxLength, maxLength);
    assert.equal(enc.trainableVariables().size, layers * DEFAULT_TARGET_COUNT * 2);
    enc.dispose();
    assert.throws(
      () => parsePluginOptions(clipLoraEncoderPlugin, { rank: 4, rnak: 2 }, "encoder.options"),
      /rnak|Unrecognized/,
    );
    assert.throws(
      () => parsePluginOptions(clipLoraEncoderPlugin, { targets: ["q"] }, "encoder.options"),
      /encoder\.options\.targets\[0\]|encoder\.options\.targets\.0/,
    );
  });
});
