import assert from "node:assert/strict";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../../core/backend.ts";
import {
  SafetensorsFile,
  type WritableTensor,
  writeSafetensors,
} from "../../../core/io/safetensors.ts";
import {
  ClipLoraEncoder,
  saveLora,
  saveMergedTextEncoder,
} from "../../../adapters/encoder/clip_lora_encoder.ts";
import { ClipTextModel } from "../../../adapters/clip/clip_text_model.ts";
import type { LoraWeights } from "../../../adapters/lora/lora.ts";
import type { HostTensor } from "../../../core/io/safetensors.ts";
import {
  detectLoraFormat,
  encodeLora,
  readLora,
  writeLora,
} from "../../../adapters/lora/lora_formats.ts";
import { assertClose, fixture, golden, textEncoderFacts, TINY_SD } from "../../_helpers.ts";

const PEFT_DIR = fixture("sd-tiny", "lora_peft");
const DIFFUSERS_FILE = fixture("sd-tiny", "lora_diffusers.safetensors");
const KOHYA_RAW = fixture("sd-tiny", "lora_kohya_raw.safetensors");
/** The fixture adapter's own settings and the encoder's sizes (nothing hard-coded below). */
const { lora, hidden, layers } = await textEncoderFacts();
const LAST = layers - 1;
const MODULES = layers * lora.targets.length;

async function keysOf(file: string): Promise<string[]> {
  const f = await SafetensorsFile.open(file);
  const keys = f.keys().sort();
  f.close();
  return keys;
}

/** The same matrices, bit for bit, and the same alphas. */
function assertSameLora(a: LoraWeights, b: LoraWeights, what: string, checkAlpha = true): void {
  assert.deepEqual([...a.modules.keys()].sort(), [...b.modules.keys()].sort(), what);
  for (const [module, m] of a.modules) {
    const n = b.modules.get(module)!;
    assert.deepEqual(m.down.shape, n.down.shape, `${what}: ${module} A shape`);
    assert.deepEqual(m.up.shape, n.up.shape, `${what}: ${module} B shape`);
    assert.deepEqual(Array.from(m.down.data), Array.from(n.down.data), `${what}: ${module} A`);
    assert.deepEqual(Array.from(m.up.data), Array.from(n.up.data), `${what}: ${module} B`);
    if (checkAlpha) assert.equal(m.alpha, n.alpha, `${what}: ${module} alpha`);
  }
}

/** scale · B A per module (the term merged into W), in float64. */
function effective(w: LoraWeights): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>();
  for (const [module, m] of w.modules) {
    const [r, inF] = m.down.shape;
    const outF = m.up.shape[0];
    const d = new Float64Array(outF * inF);
    const s = w.useRslora ? m.alpha / Math.sqrt(r) : m.alpha / r;
    for (let o = 0; o < outF; o++) {
      for (let i = 0; i < inF; i++) {
        let acc = 0;
        for (let k = 0; k < r; k++) acc += m.up.data[o * r + k] * m.down.data[k * inF + i];
        d[o * inF + i] = s * acc;
      }
    }
    out.set(module, d);
  }
  return out;
}

/** up · down in float64, times `scale`. */
function product(up: HostTensor, down: HostTensor, scale: number): Float64Array {
  const [r, inF] = down.shape;
  const outF = up.shape[0];
  assert.equal(up.shape[1], r);
  const d = new Float64Array(outF * inF);
  for (let o = 0; o < outF; o++) {
    for (let i = 0; i < inF; i++) {
      let acc = 0;
      for (let k = 0; k < r; k++) acc += up.data[o * r + k] * down.data[k * inF + i];
      d[o * inF + i] = scale * acc;
    }
  }
  return d;
}

/**
 * The deltas diffusers applies for a text-encoder file, by its own rules, read from the raw
 * tensors (not through texforce's reader). Before 0.34 (`get_peft_kwargs`, no metadata):
 * r = the most common rank, lora_alpha = the first module's rank, other ranks in rank_pattern,
 * so scale = lora_alpha / rank of the module. From 0.34 on: the LoraConfig in
 * `lora_adapter_metadata` (lora_alpha, alpha_pattern, use_rslora).
 */
async function diffusersDeltas(
  file: string,
  readsMetadata: boolean,
): Promise<Map<string, Float64Array>> {
  const f = await SafetensorsFile.open(file);
  const parts = new Map<string, { down?: HostTensor; up?: HostTensor }>();
  try {
    for (const key of f.keys().sort()) {
      const m = /^text_encoder\.(?:text_model\.)?(.+)\.lora_linear_layer\.(down|up)\.weight$/
        .exec(key);
      assert.ok(m, `${key}: not a diffusers text-encoder key`);
      const e = parts.get(m[1]) ?? {};
      e[m[2] as "down" | "up"] = await f.read(key);
      parts.set(m[1], e);
    }
  } finally {
    f.close();
  }
  const ranks = [...parts.values()].map((e) => e.up!.shape[1]);
  let alphaOf = (_module: string, _rank: number) => ranks[0];
  let rs = false;
  if (readsMetadata && f.metadata.lora_adapter_metadata) {
    const meta = JSON.parse(f.metadata.lora_adapter_metadata);
    const pattern = meta["text_encoder.alpha_pattern"] ?? {};
    rs = meta["text_encoder.use_rslora"] === true;
    alphaOf = (module) =>
      pattern[`text_model.${module}`] ?? pattern[module] ?? meta["text_encoder.lora_alpha"];
  }
  const out = new Map<string, Float64Array>();
  for (const [module, e] of parts) {
    const r = e.up!.shape[1];
    const alpha = alphaOf(module, r);
    out.set(module, product(e.up!, e.down!, rs ? alpha / Math.sqrt(r) : alpha / r));
  }
  return out;
}

function assertSameDeltas(
  actual: Map<string, Float64Array>,
  expected: Map<string, Float64Array>,
  what: string,
): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort(), what);
  for (const [module, e] of expected) {
    assertClose(actual.get(module)!, e, 1e-6, `${what} ${module}`);
  }
}

async function withTemp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir();
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("LoRA file formats", async (t) => {
  const peft = await readLora(PEFT_DIR);

  await t.step("reads the PEFT fixture", () => {
    assert.equal(peft.rank, lora.r);
    assert.equal(peft.alpha, lora.alpha);
    assert.equal(peft.modules.size, MODULES);
    const m = peft.modules.get(`encoder.layers.${LAST}.self_attn.out_proj`)!;
    assert.deepEqual(m.down.shape, [lora.r, hidden]);
    assert.deepEqual(m.up.shape, [hidden, lora.r]);
    assert.equal(m.alpha, lora.alpha);
  });

  await t.step(
    "reads the diffusers fixture: same matrices; no alpha in it, so alpha = r",
    async () => {
      const d = await readLora(DIFFUSERS_FILE);
      assertSameLora(peft, d, "diffusers", false);
      // Like diffusers' loader without metadata or network alphas.
      assert.ok([...d.modules.values()].every((m) => m.alpha === lora.r));
      assertSameLora(
        peft,
        await readLora(DIFFUSERS_FILE, { alpha: lora.alpha }),
        "diffusers with the real alpha",
      );
    },
  );

  await t.step("reads convert_state_dict_to_kohya output (lora_te1_, int64 alpha)", async () => {
    assert.equal(detectLoraFormat(await keysOf(KOHYA_RAW), KOHYA_RAW), "kohya");
    const k = await readLora(KOHYA_RAW);
    assertSameLora(peft, k, "kohya raw", false);
    // The converter stores alpha = rank, so its scale is 1 where PEFT's is alpha / r: the
    // effective weights are r / alpha of PEFT's. Given the real alpha, they are the same.
    const effPeft = effective(peft);
    const effRaw = effective(k);
    const ratio = lora.alpha / lora.r;
    for (const [module, e] of effPeft) {
      const r = effRaw.get(module)!;
      for (let i = 0; i < e.length; i++) {
        assert.ok(Math.abs(r[i] * ratio - e[i]) <= 1e-12 * Math.max(1, Math.abs(e[i])), module);
      }
    }
    const fixed = effective(await readLora(KOHYA_RAW, { alpha: lora.alpha }));
    for (const [module, e] of effPeft) assert.deepEqual(fixed.get(module), e, module);
  });

  await t.step(
    "round trip PEFT → kohya → PEFT is bit-exact; diffusers keeps the delta",
    async () => {
      await withTemp(async (dir) => {
        const [dFile] = await writeLora(join(dir, "d"), peft, "diffusers");
        assert.ok(dFile.endsWith("pytorch_lora_weights.safetensors"));
        // The diffusers file has the scale folded into B: the same delta (exactly, when alpha / r
        // is a power of two; to float32 rounding otherwise).
        const d = await readLora(dFile);
        const effD = effective(d);
        for (const [module, e] of effective(peft)) {
          assertClose(effD.get(module)!, e, 1e-6, `folded delta ${module}`);
        }
        assert.ok([...d.modules.values()].every((m) => m.alpha === lora.r));
        const [kFile] = await writeLora(join(dir, "lora_a1111.safetensors"), peft, "kohya");
        const k = await readLora(kFile);
        assertSameLora(peft, k, "kohya");
        await writeLora(join(dir, "p"), k, "peft", {
          textModelPrefix: peft.textModelPrefix ?? false,
        });
        const p = await readLora(join(dir, "p"));
        assertSameLora(peft, p, "peft");
        assert.equal(p.rank, lora.r);
        assert.equal(p.alpha, lora.alpha);
        assert.deepEqual(
          await keysOf(join(dir, "p", "adapter_model.safetensors")),
          await keysOf(join(PEFT_DIR, "adapter_model.safetensors")),
        );
      });
    },
  );

  await t.step("exported key sets and PEFT config fields equal the fixtures'", async () => {
    await withTemp(async (dir) => {
      // In the fixture's own layout, the keys are the fixture's.
      const [cfgPath, peftFile] = await writeLora(join(dir, "peft"), peft, "peft", {
        textModelPrefix: peft.textModelPrefix ?? false,
      });
      assert.deepEqual(
        await keysOf(peftFile),
        await keysOf(join(PEFT_DIR, "adapter_model.safetensors")),
      );
      // Default: the transformers-4 layout, whatever the layout the LoRA was read from.
      const [, tm] = await writeLora(join(dir, "peft4"), peft, "peft");
      assert.deepEqual(
        await keysOf(tm),
        (await keysOf(peftFile)).map((k) =>
          k.replace(/^base_model\.model\.(text_model\.)?/, "base_model.model.text_model.")
        ).sort(),
      );
      const cfg = JSON.parse(await Deno.readTextFile(cfgPath));
      const ref = JSON.parse(await Deno.readTextFile(join(PEFT_DIR, "adapter_config.json")));
      assert.deepEqual(Object.keys(cfg).sort(), Object.keys(ref).sort());
      assert.equal(cfg.r, lora.r);
      assert.equal(cfg.lora_alpha, lora.alpha);
      assert.deepEqual([...cfg.target_modules].sort(), [...ref.target_modules].sort());
      const meta = (await SafetensorsFile.open(peftFile)).metadata;
      assert.deepEqual(meta, { format: "pt" });

      // The fixture's diffusers file was saved from a PEFT-wrapped encoder.
      const wrapped = await writeLora(join(dir, "wrapped.safetensors"), peft, "diffusers", {
        diffusersPrefix: "text_encoder.base_model.model.",
        textModelPrefix: peft.textModelPrefix ?? false,
      });
      assert.deepEqual(await keysOf(wrapped[0]), await keysOf(DIFFUSERS_FILE));

      // Default diffusers keys are what load_lora_weights reads on an SD 1.5 checkpoint.
      const sd15 = encodeLora(peft, "diffusers", { textModelPrefix: true });
      assert.ok(
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight" in
          sd15.tensors,
      );
      assert.deepEqual(
        Object.keys(encodeLora(peft, "diffusers").tensors),
        Object.keys(sd15.tensors),
        "the default layout is transformers-4",
      );
      const newer = encodeLora(peft, "diffusers", {
        diffusersStyle: "peft",
        textModelPrefix: false,
      });
      assert.ok(
        `text_encoder.encoder.layers.${LAST}.self_attn.v_proj.lora_B.weight` in newer.tensors,
      );
      // The scale is in the matrices, so the metadata says alpha = r: diffusers ≥ 0.34 (which
      // reads it) and older ones (which take alpha = r) apply the same scale 1.
      const adapterMeta = JSON.parse(sd15.metadata.lora_adapter_metadata);
      assert.equal(adapterMeta["text_encoder.lora_alpha"], lora.r);
      assert.equal(adapterMeta["text_encoder.r"], lora.r);
      assert.deepEqual(adapterMeta["text_encoder.alpha_pattern"], {});
      assert.deepEqual(adapterMeta["text_encoder.rank_pattern"], {});
      assert.equal(adapterMeta["text_encoder.use_rslora"], false);

      // kohya for A1111 / ComfyUI: lora_te_text_model_…, float alpha holding the real alpha.
      const [kFile] = await writeLora(join(dir, "k.safetensors"), peft, "kohya");
      const kf = await SafetensorsFile.open(kFile);
      const alphaKey = "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha";
      assert.equal(kf.info(alphaKey).dtype, "F32");
      assert.deepEqual(kf.info(alphaKey).shape, []);
      assert.equal((await kf.read(alphaKey)).data[0], lora.alpha);
      assert.ok(
        kf.has(`lora_te_text_model_encoder_layers_${LAST}_self_attn_out_proj.lora_up.weight`),
      );
      // down, up and alpha per module.
      assert.equal(kf.keys().length, 3 * MODULES);
      kf.close();
    });
  });

  await t.step(
    "diffusers export: diffusers' rules before and after 0.34 give the trained delta",
    async () => {
      // Mixed ranks and alphas too: rank 2 / alpha 3 on one module, rsLoRA on another copy.
      const mixed: LoraWeights = { ...peft, modules: new Map(peft.modules) };
      const q = peft.modules.get("encoder.layers.0.self_attn.q_proj")!;
      const [, inF] = q.down.shape;
      const outF = q.up.shape[0];
      mixed.modules.set("encoder.layers.0.self_attn.q_proj", {
        alpha: 3,
        down: { dtype: "float32", shape: [2, inF], data: q.down.data.slice(0, 2 * inF) },
        up: {
          dtype: "float32",
          shape: [outF, 2],
          data: Float32Array.from(
            { length: outF * 2 },
            (_, i) => q.up.data[(i >> 1) * lora.r + (i & 1)],
          ),
        },
      });
      const cases: [string, LoraWeights][] = [
        [`r ${lora.r} / alpha ${lora.alpha}`, peft],
        ["mixed ranks and alphas", mixed],
        ["rsLoRA", { ...mixed, useRslora: true }],
      ];
      await withTemp(async (dir) => {
        for (const [what, w] of cases) {
          const file = join(dir, `${what.replaceAll(/\W+/g, "_")}.safetensors`);
          await writeLora(file, w, "diffusers");
          const trained = effective(w);
          assertSameDeltas(await diffusersDeltas(file, false), trained, `${what}, diffusers 0.33`);
          assertSameDeltas(await diffusersDeltas(file, true), trained, `${what}, diffusers 0.34+`);
          // And texforce's own reader.
          assertSameDeltas(effective(await readLora(file)), trained, `${what}, texforce`);
        }
        // The old export (alpha only in the metadata, B as trained): the rules disagree, and
        // diffusers 0.33 applies r / alpha of the trained delta. This is what the fold fixes.
        const old = join(dir, "metadata_only.safetensors");
        const tensors: Record<string, WritableTensor> = {};
        for (const [module, m] of peft.modules) {
          const stem = `text_encoder.text_model.${module}.lora_linear_layer`;
          tensors[`${stem}.down.weight`] = { dtype: "F32", shape: m.down.shape, data: m.down.data };
          tensors[`${stem}.up.weight`] = { dtype: "F32", shape: m.up.shape, data: m.up.data };
        }
        await writeSafetensors(old, tensors, {
          lora_adapter_metadata: JSON.stringify({
            "text_encoder.r": lora.r,
            "text_encoder.lora_alpha": lora.alpha,
          }),
        });
        const trained = effective(peft);
        assertSameDeltas(await diffusersDeltas(old, true), trained, "old file, diffusers 0.34+");
        const m = "encoder.layers.1.self_attn.v_proj";
        const scaled = [...trained.get(m)!].map((x) => x * lora.r / lora.alpha);
        assertClose((await diffusersDeltas(old, false)).get(m)!, scaled, 1e-6, "old file, 0.33");
      });
    },
  );

  await t.step("kohya: A1111/ComfyUI key map and scale rule give the trained delta", async () => {
    await withTemp(async (dir) => {
      const [file] = await writeLora(join(dir, "k.safetensors"), peft, "kohya");
      const f = await SafetensorsFile.open(file);
      const unused = new Set(f.keys());
      const trained = effective(peft);
      // ComfyUI's model_lora_keys_clip (SD 1.x): for each CLIP weight
      // text_model.encoder.layers.{b}.{c}.weight, the LoRA stem
      // lora_te_text_model_encoder_layers_{b}_{c with . → _}; scale = alpha / rank (lora_down
      // rows), alpha read as a float from `.alpha`. A1111's network key map is the same.
      const got = new Map<string, Float64Array>();
      for (let b = 0; b < 3; b++) {
        for (
          const c of [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
          ]
        ) {
          const stem = `lora_te_text_model_encoder_layers_${b}_${c.replace(".", "_")}`;
          const down = await f.read(`${stem}.lora_down.weight`);
          const up = await f.read(`${stem}.lora_up.weight`);
          const alphaInfo = f.info(`${stem}.alpha`);
          assert.equal(alphaInfo.dtype, "F32", `${stem}.alpha is a float`);
          const alpha = (await f.read(`${stem}.alpha`)).data[0];
          got.set(`encoder.layers.${b}.${c}`, product(up, down, alpha / down.shape[0]));
          for (const p of [".lora_down.weight", ".lora_up.weight", ".alpha"]) {
            unused.delete(stem + p);
          }
        }
      }
      assert.deepEqual([...unused], [], "keys A1111/ComfyUI would not load");
      assert.equal(f.metadata.ss_network_alpha, String(lora.alpha));
      assert.equal(f.metadata.ss_network_dim, String(lora.r));
      f.close();
      assertSameDeltas(got, trained, "ComfyUI rule");
    });
  });

  await t.step("released TexForce layout (text_model.) reads the same", async () => {
    await withTemp(async (dir) => {
      await writeLora(join(dir, "p"), peft, "peft", { textModelPrefix: true });
      const keys = await keysOf(join(dir, "p", "adapter_model.safetensors"));
      assert.ok(keys[0].startsWith("base_model.model.text_model.encoder.layers.0."));
      const back = await readLora(join(dir, "p"));
      assert.equal(back.textModelPrefix, true);
      assertSameLora(peft, back, "text_model layout");
      // fp16 storage is read back as float32.
      await writeLora(join(dir, "h.safetensors"), peft, "kohya", { dtype: "F16" });
      const h = await readLora(join(dir, "h.safetensors"));
      const m = h.modules.get("encoder.layers.0.self_attn.q_proj")!;
      assertClose(
        m.down.data,
        peft.modules.get("encoder.layers.0.self_attn.q_proj")!.down.data,
        1e-3,
        "fp16",
      );
    });
  });

  await t.step("UNet keys in a diffusers file are skipped and listed", async () => {
    await withTemp(async (dir) => {
      const file = join(dir, "both.safetensors");
      const tensors: Record<string, WritableTensor> = {};
      for (const [k, v] of Object.entries(encodeLora(peft, "diffusers").tensors)) tensors[k] = v;
      tensors["unet.down_blocks.0.attentions.0.proj_in.lora.down.weight"] = {
        dtype: "F32",
        shape: [1, 2],
        data: [0, 0],
      };
      await writeSafetensors(file, tensors);
      const w = await readLora(file);
      assert.deepEqual(w.ignoredKeys, ["unet.down_blocks.0.attentions.0.proj_in.lora.down.weight"]);
      assert.equal(w.modules.size, MODULES);
    });
  });

  await t.step("bad files fail naming the file and key", async () => {
    await withTemp(async (dir) => {
      const unknown = join(dir, "unknown.safetensors");
      await writeSafetensors(unknown, {
        "model.layers.0.q.lora_A.weight": { dtype: "F32", shape: [1, 1], data: [0] },
      });
      await assert.rejects(
        () => readLora(unknown),
        (e: Error) =>
          e.message.includes(unknown) && e.message.includes("'model.layers.0.q.lora_A.weight'") &&
          /unknown LoRA key layout/.test(e.message),
      );

      const mixed = join(dir, "mixed.safetensors");
      const t2: Record<string, WritableTensor> = { ...encodeLora(peft, "kohya").tensors };
      t2["lora_te_text_model_encoder_layers_0_self_attn_qq_proj.lora_up.weight"] = {
        dtype: "F32",
        shape: [1, 1],
        data: [0],
      };
      await writeSafetensors(mixed, t2);
      await assert.rejects(
        () => readLora(mixed),
        /mixed\.safetensors: unknown LoRA key layout: 'lora_te_text_model_encoder_layers_0_self_attn_qq_proj\.lora_up\.weight'/,
      );

      const half = join(dir, "half.safetensors");
      const t3 = { ...encodeLora(peft, "kohya").tensors };
      delete t3["lora_te_text_model_encoder_layers_1_mlp_fc1.lora_up.weight"];
      t3["lora_te_text_model_encoder_layers_1_mlp_fc1.lora_down.weight"] = {
        dtype: "F32",
        shape: [lora.r, hidden],
        data: new Float32Array(lora.r * hidden),
      };
      await writeSafetensors(half, t3);
      await assert.rejects(
        () => readLora(half),
        /half\.safetensors: 'lora_te_text_model_encoder_layers_1_mlp_fc1\.lora_down\.weight' has no matching up \(B\) matrix/,
      );

      const noConfig = join(dir, "noconfig");
      await Deno.mkdir(noConfig);
      await Deno.copyFile(
        join(PEFT_DIR, "adapter_model.safetensors"),
        join(noConfig, "adapter_model.safetensors"),
      );
      await assert.rejects(() => readLora(noConfig), /needs adapter_config\.json next to it/);
      await assert.rejects(() => readLora(join(dir, "nothing")), /expected a PEFT adapter folder/);
    });
  });

  await t.step("a LoRA that does not fit the model fails naming file, key and shapes", async () => {
    await useBackend("wasm");
    await withTemp(async (dir) => {
      const wrong: LoraWeights = { ...peft, modules: new Map(peft.modules) };
      const m = peft.modules.get("encoder.layers.1.self_attn.k_proj")!;
      wrong.modules.set("encoder.layers.1.self_attn.k_proj", {
        alpha: lora.alpha,
        down: {
          dtype: "float32",
          shape: [lora.r, 2 * hidden],
          data: new Float32Array(lora.r * 2 * hidden),
        },
        up: m.up,
      });
      const file = join(dir, "wide.safetensors");
      await writeLora(file, wrong, "kohya");
      const enc = await ClipLoraEncoder.load(TINY_SD, { train: false });
      await assert.rejects(
        () => enc.loadAdapter(file),
        (e: Error) =>
          e.message.startsWith(file) &&
          e.message.includes(
            "'lora_te_text_model_encoder_layers_1_self_attn_k_proj.lora_down.weight'",
          ) &&
          e.message.includes(`shape [${lora.r},${2 * hidden}]`) &&
          e.message.includes(`expected [rank, ${hidden}]`),
      );
      const deep: LoraWeights = { ...peft, modules: new Map(peft.modules) };
      deep.modules.set(`encoder.layers.${layers + 4}.self_attn.q_proj`, m);
      const file2 = join(dir, "deep.safetensors");
      await writeLora(file2, deep, "kohya");
      await assert.rejects(
        () => enc.loadAdapter(file2),
        new RegExp(
          `deep\\.safetensors: 'lora_te_text_model_encoder_layers_${layers + 4}_self_attn_q_proj` +
            `\\.lora_down\\.weight': the model has no linear layer 'encoder\\.layers\\.${
              layers + 4
            }\\.self_attn\\.q_proj'`,
        ),
      );
      assert.equal(enc.lora.adapters.size, 0);
      enc.dispose();
    });
  });
});

Deno.test("saving from the encoder", async (t) => {
  await useBackend("wasm");
  const expected = (await golden("sd-tiny")).get("lora.last_hidden_state")!.data;
  const prompts: string[] = JSON.parse(
    await Deno.readTextFile(fixture("sd-tiny", "golden.json")),
  ).tokenizer_prompts;

  await t.step("saveLora writes every format, and each reloads to the same output", async () => {
    await withTemp(async (dir) => {
      const enc = await ClipLoraEncoder.load(TINY_SD, {
        adapters: [{ path: PEFT_DIR, trainable: true }],
      });
      const peftFiles = await saveLora(enc, join(dir, "peft"), "peft", {
        textModelPrefix: (await readLora(PEFT_DIR)).textModelPrefix ?? false,
      });
      const cfg = JSON.parse(await Deno.readTextFile(peftFiles[0]));
      assert.equal(cfg.base_model_name_or_path, TINY_SD);
      assert.deepEqual(
        await keysOf(peftFiles[1]),
        await keysOf(join(PEFT_DIR, "adapter_model.safetensors")),
      );
      const [dFile] = await saveLora(enc, join(dir, "diffusers"), "diffusers");
      const [kFile] = await saveLora(enc, join(dir, "a1111.safetensors"), "kohya");
      enc.dispose();
      for (const path of [join(dir, "peft"), dFile, kFile]) {
        const e2 = await ClipLoraEncoder.load(TINY_SD, { train: false, adapters: [{ path }] });
        const h = e2.encode(prompts);
        assertClose(await h.data(), expected, 1e-4, path);
        h.dispose();
        e2.dispose();
      }
    });
  });

  await t.step(
    "exportWeights (the trainer's hook) writes each format under its folder",
    async () => {
      await withTemp(async (dir) => {
        const enc = await ClipLoraEncoder.load(TINY_SD, {
          adapters: [{ path: PEFT_DIR, trainable: true }],
        });
        const written: Record<string, string[]> = {};
        for (const f of ["peft", "diffusers", "kohya", "merged"] as const) {
          written[f] = (await enc.exportWeights(join(dir, f), f)).map((p) =>
            p.slice(dir.length + 1)
          );
        }
        assert.deepEqual(written, {
          peft: ["peft/adapter_config.json", "peft/adapter_model.safetensors"],
          diffusers: ["diffusers/pytorch_lora_weights.safetensors"],
          kohya: ["kohya/texforce_lora.safetensors"],
          merged: ["merged/model.safetensors", "merged/config.json"],
        });
        await assert.rejects(
          () => enc.exportWeights(join(dir, "x"), "onnx" as "peft"),
          /unknown export format 'onnx'/,
        );
        enc.dispose();
      });
    },
  );

  await t.step("merged text encoder equals base + LoRA, in either layout", async () => {
    await withTemp(async (dir) => {
      const enc = await ClipLoraEncoder.load(TINY_SD, {
        train: false,
        adapters: [{ path: PEFT_DIR }],
      });
      const ids = enc.tokenize(prompts);
      // The base's keys without the prefix (the fixture may be saved in either layout).
      const baseKeys = (await keysOf(join(TINY_SD, "text_encoder", "model.safetensors")))
        .map((k) => k.replace(/^text_model\./, ""));
      const inputKeys = await keysOf(join(TINY_SD, "text_encoder", "model.safetensors"));
      const layouts: [string, boolean | null | undefined, string[]][] = [
        ["default (transformers-4)", undefined, baseKeys.map((k) => `text_model.${k}`)],
        ["transformers-5", false, baseKeys],
        ["the input's (null)", null, inputKeys],
      ];
      for (const [what, textModelPrefix, keys] of layouts) {
        const out = join(dir, what.replaceAll(/\W+/g, "_"));
        const [file, cfg] = await saveMergedTextEncoder(enc, out, { textModelPrefix });
        assert.deepEqual(await keysOf(file), keys.sort(), what);
        assert.equal(
          await Deno.readTextFile(cfg),
          await Deno.readTextFile(join(TINY_SD, "text_encoder", "config.json")),
        );
        const merged = await ClipTextModel.load(out);
        const h = merged.forward(ids).lastHiddenState;
        const err = assertClose(await h.data(), expected, 1e-4, `merged, ${what}`);
        console.log(
          `  merged (${what}) vs lora.last_hidden_state: rel err ${err.toExponential(2)}`,
        );
        h.dispose();
        merged.dispose();
      }
      enc.dispose();
      ids.dispose();
    });
  });

  await t.step(
    "exportWeights in both layouts: every export reloads to texforce's LoRA output",
    async () => {
      await withTemp(async (dir) => {
        const enc = await ClipLoraEncoder.load(TINY_SD, {
          adapters: [{ path: PEFT_DIR, trainable: true }],
        });
        const ids = enc.tokenize(prompts);
        const mine = enc.encodeIds(ids);
        const reference = await mine.data();
        mine.dispose();
        for (const layout of ["transformers-4", "transformers-5"] as const) {
          const prefixed = layout === "transformers-4";
          for (const format of ["peft", "diffusers", "kohya", "merged"] as const) {
            const out = join(dir, layout, format);
            const files = await enc.exportWeights(out, format, { layout });
            const weights = files.find((f) => f.endsWith(".safetensors"))!;
            const keys = await keysOf(weights);
            const want = format === "kohya"
              ? /^lora_te_text_model_/ // A1111/ComfyUI keys, whatever the layout
              : format === "merged"
              ? (prefixed ? /^text_model\./ : /^(embeddings|encoder|final_layer_norm)\./)
              : format === "peft"
              ? (prefixed ? /^base_model\.model\.text_model\./ : /^base_model\.model\.encoder\./)
              : (prefixed ? /^text_encoder\.text_model\./ : /^text_encoder\.encoder\./);
            assert.ok(keys.every((k) => want.test(k)), `${layout} ${format}: ${keys[0]}`);
            let h: tf.Tensor;
            if (format === "merged") {
              const merged = await ClipTextModel.load(out);
              h = merged.forward(ids).lastHiddenState;
              merged.dispose();
            } else {
              const e2 = await ClipLoraEncoder.load(TINY_SD, {
                train: false,
                adapters: [{ path: format === "peft" ? out : weights }],
              });
              h = e2.encodeIds(ids);
              e2.dispose();
            }
            assertClose(await h.data(), reference, 1e-5, `${layout} ${format}`);
            h.dispose();
          }
        }
        await assert.rejects(
          () =>
            enc.exportWeights(join(dir, "x"), "peft", {
              layout: "diffusers-7" as "transformers-4",
            }),
          /unknown export layout 'diffusers-7' \(expected transformers-4, transformers-5\)/,
        );
        ids.dispose();
        enc.dispose();
      });
    },
  );

  await t.step("merging keeps the text_model. prefix of a real checkpoint", async () => {
    await withTemp(async (dir) => {
      // A model folder whose text encoder has SD-style keys.
      const model = join(dir, "sd");
      await Deno.mkdir(join(model, "text_encoder"), { recursive: true });
      await Deno.mkdir(join(model, "tokenizer"));
      await Deno.copyFile(join(TINY_SD, "model_index.json"), join(model, "model_index.json"));
      for (const c of ["unet", "vae", "scheduler"]) await Deno.mkdir(join(model, c));
      for await (const e of Deno.readDir(join(TINY_SD, "tokenizer"))) {
        await Deno.copyFile(join(TINY_SD, "tokenizer", e.name), join(model, "tokenizer", e.name));
      }
      await Deno.copyFile(
        join(TINY_SD, "text_encoder", "config.json"),
        join(model, "text_encoder", "config.json"),
      );
      const src = await SafetensorsFile.open(join(TINY_SD, "text_encoder", "model.safetensors"));
      const tensors: Record<string, WritableTensor> = {};
      for (const k of src.keys()) {
        const h = await src.read(k);
        tensors[`text_model.${k}`] = { dtype: "F32", shape: h.shape, data: h.data };
      }
      src.close();
      await writeSafetensors(join(model, "text_encoder", "model.safetensors"), tensors);

      const enc = await ClipLoraEncoder.load(model, {
        adapters: [{ path: PEFT_DIR, trainable: true }],
      });
      // Variable names follow the checkpoint: PEFT's names on an SD 1.5 model.
      assert.ok(
        enc.trainableVariables().has(
          "base_model.model.text_model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight",
        ),
      );
      const [peftCfg, peftFile] = await saveLora(enc, join(dir, "peft"), "peft");
      assert.ok(peftCfg.endsWith("adapter_config.json"));
      assert.ok((await keysOf(peftFile))[0].startsWith("base_model.model.text_model."));
      const [file] = await saveMergedTextEncoder(enc, join(dir, "merged"));
      const [file5] = await saveMergedTextEncoder(enc, join(dir, "merged5"), {
        textModelPrefix: false,
      });
      enc.dispose();
      const keys = await keysOf(file);
      assert.ok(keys.every((k) => k.startsWith("text_model.")));
      assert.deepEqual(await keysOf(file5), keys.map((k) => k.slice("text_model.".length)));
      const merged = await ClipTextModel.load(join(dir, "merged"));
      assert.equal(merged.keyPrefix, "text_model.");
      const ids = tf.tensor2d(
        (await golden("sd-tiny")).get("tokenizer.input_ids")!.data as Int32Array,
        [7, 77],
        "int32",
      );
      const h = merged.forward(ids).lastHiddenState;
      assertClose(await h.data(), expected, 1e-4, "merged, text_model. layout");
      tf.dispose([ids, h]);
      merged.dispose();
    });
  });
});
