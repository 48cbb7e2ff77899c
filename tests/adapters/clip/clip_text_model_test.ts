import assert from "node:assert/strict";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import {
  type SafetensorsDtype,
  SafetensorsFile,
  type WritableTensor,
  writeSafetensors,
} from "../../../core/io/safetensors.ts";
import { ClipTextModel, parseClipTextConfig } from "../../../adapters/clip/clip_text_model.ts";
import { assertClose, availableBackends, fixtureJson, golden, TINY_SD } from "../../_helpers.ts";

const TE_DIR = join(TINY_SD, "text_encoder");
/** The fixture's own text-encoder config: every size below comes from it. */
const TE_CONFIG = await fixtureJson<{
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  hidden_act: string;
  eos_token_id: number;
  vocab_size: number;
  max_position_embeddings: number;
}>("sd-tiny", "tiny-sd", "text_encoder", "config.json");
const LAYERS = TE_CONFIG.num_hidden_layers;
const HIDDEN = TE_CONFIG.hidden_size;

/** Tolerance per backend: fp32 parity on cpu/wasm; lavapipe's WebGPU reorders reductions. */
const TOL: Record<string, number> = { cpu: 1e-4, wasm: 1e-4, webgpu: 1e-3 };

/**
 * Copy the tiny text encoder to a temp folder, renaming keys, changing dtypes or the config.
 */
async function copyTextEncoder(
  edit: {
    rename?: (key: string) => string | null;
    dtype?: SafetensorsDtype;
    config?: (c: Record<string, unknown>) => void;
  },
): Promise<string> {
  const dir = await Deno.makeTempDir();
  const src = await SafetensorsFile.open(join(TE_DIR, "model.safetensors"));
  const tensors: Record<string, WritableTensor> = {};
  for (const k of src.keys()) {
    const name = edit.rename ? edit.rename(k) : k;
    if (name === null) continue;
    const h = await src.read(k);
    tensors[name] = { dtype: edit.dtype ?? "F32", shape: h.shape, data: h.data };
  }
  src.close();
  await writeSafetensors(join(dir, "model.safetensors"), tensors);
  const config = JSON.parse(await Deno.readTextFile(join(TE_DIR, "config.json")));
  edit.config?.(config);
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
  return dir;
}

async function goldenIds(): Promise<tf.Tensor2D> {
  const g = (await golden("sd-tiny")).get("tokenizer.input_ids")!;
  return tf.tensor2d(g.data as Int32Array, g.shape as [number, number], "int32");
}

Deno.test("ClipTextModel matches transformers' CLIPTextModel", async (t) => {
  const g = await golden("sd-tiny");
  const lastExpected = g.get("text_encoder.last_hidden_state")!.data;
  const pooledExpected = g.get("text_encoder.pooler_output")!.data;
  for (const backend of await availableBackends()) {
    await t.step(`last_hidden_state and pooler_output on ${backend}`, async () => {
      await useBackend(backend as "cpu" | "wasm" | "webgpu");
      const model = await ClipTextModel.load(TE_DIR);
      const ids = await goldenIds();
      const out = model.forward(ids, { pooled: true });
      const [rows, len] = ids.shape;
      assert.deepEqual(out.lastHiddenState.shape, [rows, len, HIDDEN]);
      assert.deepEqual(out.pooledOutput!.shape, [rows, HIDDEN]);
      const e1 = assertClose(
        await out.lastHiddenState.data(),
        lastExpected,
        TOL[backend],
        `${backend} last_hidden_state`,
      );
      const e2 = assertClose(
        await out.pooledOutput!.data(),
        pooledExpected,
        TOL[backend],
        `${backend} pooler_output`,
      );
      console.log(
        `  ${backend}: last_hidden_state rel err ${e1.toExponential(2)}, ` +
          `pooler_output ${e2.toExponential(2)} (tol ${TOL[backend]})`,
      );
      tf.dispose([ids, out.lastHiddenState, out.pooledOutput!]);
      model.dispose();
    });
  }
  if (!(await availableBackends()).includes("webgpu")) {
    console.log(
      "  webgpu skipped: no WebGPU adapter (run with --unstable-webgpu and a Vulkan driver)",
    );
  }
});

Deno.test("ClipTextModel loading", async (t) => {
  await useBackend("wasm");
  const g = await golden("sd-tiny");
  const lastExpected = g.get("text_encoder.last_hidden_state")!.data;

  await t.step("reads the config", async () => {
    const model = await ClipTextModel.load(TE_DIR);
    assert.equal(model.config.hiddenSize, HIDDEN);
    assert.equal(model.config.numHiddenLayers, LAYERS);
    assert.equal(model.config.hiddenAct, TE_CONFIG.hidden_act);
    assert.equal(model.config.eosTokenId, TE_CONFIG.eos_token_id);
    // The weights file decides the key layout (with or without `text_model.`).
    const keys = await SafetensorsFile.open(join(TE_DIR, "model.safetensors"));
    const prefixed = keys.keys().some((k) => k.startsWith("text_model."));
    keys.close();
    assert.equal(model.keyPrefix, prefixed ? "text_model." : "");
    // Six linear layers per encoder layer: q, k, v, out, fc1, fc2.
    assert.equal(model.linearShapes().size, 6 * LAYERS);
    assert.deepEqual(model.linearShapes().get(`encoder.layers.${LAYERS - 1}.mlp.fc1`), {
      inFeatures: HIDDEN,
      outFeatures: TE_CONFIG.intermediate_size,
    });
    model.dispose();
  });

  await t.step("accepts the text_model. key prefix of real SD checkpoints", async () => {
    const dir = await copyTextEncoder({ rename: (k) => `text_model.${k}` });
    try {
      const model = await ClipTextModel.load(dir);
      assert.equal(model.keyPrefix, "text_model.");
      const ids = await goldenIds();
      const out = model.forward(ids);
      assertClose(await out.lastHiddenState.data(), lastExpected, 1e-4, "prefixed weights");
      tf.dispose([ids, out.lastHiddenState]);
      model.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  await t.step("reads fp16 weights (model.fp16.safetensors variant)", async () => {
    const dir = await copyTextEncoder({ dtype: "F16" });
    try {
      await Deno.rename(join(dir, "model.safetensors"), join(dir, "model.fp16.safetensors"));
      const model = await ClipTextModel.load(dir);
      const ids = await goldenIds();
      const out = model.forward(ids);
      // Rounding the weights to fp16 costs about 1e-3 relative.
      const err = assertClose(await out.lastHiddenState.data(), lastExpected, 2e-2, "fp16");
      assert.ok(err > 0);
      tf.dispose([ids, out.lastHiddenState]);
      model.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  await t.step("clipSkip k equals the model cut after L-k layers", async () => {
    const dir = await copyTextEncoder({
      rename: (
        k,
      ) => (k.replace(/^text_model\./, "").startsWith(`encoder.layers.${LAYERS - 1}.`) ? null : k),
      config: (c) => (c.num_hidden_layers = LAYERS - 1),
    });
    try {
      const full = await ClipTextModel.load(TE_DIR);
      const cut = await ClipTextModel.load(dir);
      const ids = await goldenIds();
      const skipped = full.forward(ids, { clipSkip: 1 }).lastHiddenState;
      const reference = cut.forward(ids).lastHiddenState;
      const normal = full.forward(ids).lastHiddenState;
      assertClose(await skipped.data(), await reference.data(), 1e-6, "clip skip");
      assert.ok(tf.tidy(() => tf.max(tf.abs(tf.sub(skipped, normal))).dataSync()[0]) > 1e-3);
      assert.throws(
        () => full.forward(ids, { clipSkip: LAYERS }),
        new RegExp(`clipSkip must be an integer in 0…${LAYERS - 1}`),
      );
      tf.dispose([ids, skipped, reference, normal]);
      full.dispose();
      cut.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  await t.step("legacy eos_token_id 2 pools at the argmax of the ids", async () => {
    const dir = await copyTextEncoder({ config: (c) => (c.eos_token_id = 2) });
    try {
      const model = await ClipTextModel.load(dir);
      const ids = await goldenIds();
      const out = model.forward(ids, { pooled: true });
      // Where eos is the largest id (as in every CLIP vocabulary), the result is the same.
      assertClose(
        await out.pooledOutput!.data(),
        g.get("text_encoder.pooler_output")!.data,
        1e-4,
        "legacy pooling",
      );
      tf.dispose([ids, out.lastHiddenState, out.pooledOutput!]);
      model.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  await t.step("gelu and tanh-gelu activations run and differ from quick_gelu", async () => {
    const ids = await goldenIds();
    const outs: Float32Array[] = [];
    for (const act of ["quick_gelu", "gelu", "gelu_new"]) {
      const dir = await copyTextEncoder({ config: (c) => (c.hidden_act = act) });
      try {
        const model = await ClipTextModel.load(dir);
        const h = model.forward(ids).lastHiddenState;
        outs.push((await h.data()) as Float32Array);
        h.dispose();
        model.dispose();
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
    ids.dispose();
    assert.ok(outs.every((o) => o.every(Number.isFinite)));
    assert.notDeepEqual(outs[0], outs[1]);
    // gelu and its tanh approximation agree to ~1e-3.
    assertClose(outs[2], outs[1], 1e-2, "gelu_new vs gelu");
  });

  await t.step("bad weights and configs fail naming the file and key", async () => {
    const dir = await copyTextEncoder({ config: (c) => (c.num_hidden_layers = LAYERS - 1) });
    try {
      await assert.rejects(
        () => ClipTextModel.load(dir),
        new RegExp(
          `model\\.safetensors: holds '(text_model\\.)?encoder\\.layers\\.${
            LAYERS - 1
          }\\.layer_norm1\\.weight' but the config says num_hidden_layers = ${LAYERS - 1}`,
        ),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    const dir2 = await copyTextEncoder({ config: (c) => (c.hidden_size = 2 * HIDDEN) });
    const vocab = TE_CONFIG.vocab_size;
    try {
      await assert.rejects(
        () => ClipTextModel.load(dir2),
        new RegExp(
          `model\\.safetensors: weight '(text_model\\.)?embeddings\\.token_embedding\\.weight' ` +
            `has shape \\[${vocab},${HIDDEN}\\], the config expects \\[${vocab},${2 * HIDDEN}\\]`,
        ),
      );
    } finally {
      await Deno.remove(dir2, { recursive: true });
    }
    const dir3 = await copyTextEncoder({ rename: (k) => `foo.${k}` });
    try {
      await assert.rejects(() => ClipTextModel.load(dir3), /not CLIP text encoder weights/);
    } finally {
      await Deno.remove(dir3, { recursive: true });
    }
    assert.throws(
      () => parseClipTextConfig({ hidden_act: "swish" }, "x/config.json"),
      /x\/config\.json: 'hidden_act' "swish" is not supported/,
    );
  });

  await t.step(
    "forward leaves no tensors behind; dispose releases weights and copies",
    async () => {
      const start = tf.memory().numTensors;
      const model = await ClipTextModel.load(TE_DIR);
      const loaded = tf.memory().numTensors;
      // token + position embeddings, 16 tensors per layer, final layer norm (weight, bias).
      assert.equal(loaded - start, 2 + LAYERS * 16 + 2);
      const ids = await goldenIds();
      // The first forward on wasm packs each frozen linear's weight for the SIMD kernel (kept).
      const first = model.forward(ids, { pooled: true });
      tf.dispose([first.lastHiddenState, first.pooledOutput!]);
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) {
        const out = model.forward(ids, { pooled: true });
        tf.dispose([out.lastHiddenState, out.pooledOutput!]);
      }
      assert.equal(tf.memory().numTensors, before);
      ids.dispose();
      model.dispose();
      assert.equal(tf.memory().numTensors, start);
    },
  );
});
