import assert from "node:assert/strict";
import { join } from "node:path";
import {
  decodeSafetensors,
  encodeSafetensors,
  openWeights,
  type SafetensorsDtype,
  SafetensorsFile,
  writeSafetensors,
} from "../../../core/io/mod.ts";
import { fixture, fixtureJson } from "../../_helpers.ts";

const FIXTURE_FILES = [
  ["sd-tiny", "golden.safetensors"],
  ["sd-tiny", "lora_diffusers.safetensors"],
  ["sd-tiny", "lora_kohya_raw.safetensors"],
  ["sd-tiny", "lora_peft", "adapter_model.safetensors"],
  ["sd-tiny", "tiny-sd", "text_encoder", "model.safetensors"],
  ["sd-tiny", "tiny-sd", "unet", "diffusion_pytorch_model.safetensors"],
  ["sd-tiny", "tiny-sd", "vae", "diffusion_pytorch_model.safetensors"],
  ["clip-tiny", "golden.safetensors"],
  ["clip-tiny", "aesthetic_mlp.safetensors"],
  ["clip-tiny", "clip", "model.safetensors"],
];

function headerOf(bytes: Uint8Array): Record<string, unknown> {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
}

function withHeader(header: string, data: Uint8Array): Uint8Array {
  const hb = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + hb.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.byteLength), true);
  out.set(hb, 8);
  out.set(data, 8 + hb.byteLength);
  return out;
}

Deno.test("safetensors: every fixture file reads with the shapes of its header", async (t) => {
  for (const parts of FIXTURE_FILES) {
    await t.step(parts.join("/"), async () => {
      const path = fixture(...parts);
      const raw = await Deno.readFile(path);
      const header = headerOf(raw) as Record<string, { shape: number[]; dtype: string }>;
      const f = await SafetensorsFile.open(path);
      try {
        const keys = Object.keys(header).filter((k) => k !== "__metadata__");
        assert.deepEqual(f.keys().sort(), keys.sort());
        // Lazy reads agree with decoding the whole buffer at once.
        const whole = decodeSafetensors(raw, path).tensors;
        for (const k of keys) {
          const t = await f.read(k);
          assert.deepEqual(t.shape, header[k].shape, k);
          assert.equal(t.data.length, t.shape.reduce((a, b) => a * b, 1));
          assert.deepEqual(Array.from(t.data), Array.from(whole[k].data), k);
        }
      } finally {
        f.close();
      }
    });
  }
});

Deno.test("safetensors: known fixture values", async (t) => {
  const f = await SafetensorsFile.open(fixture("sd-tiny", "golden.safetensors"));
  await t.step("token ids are int32 and start with bos", async () => {
    const ids = await f.read("tokenizer.input_ids");
    assert.equal(ids.dtype, "int32");
    const golden = await fixtureJson<{ tokenizer_prompts: string[] }>("sd-tiny", "golden.json");
    const tok = await fixtureJson<Record<string, unknown>>(
      "sd-tiny",
      "tiny-sd",
      "tokenizer",
      "tokenizer_config.json",
    );
    const vocab = await fixtureJson<Record<string, number>>(
      "sd-tiny",
      "tiny-sd",
      "tokenizer",
      "vocab.json",
    );
    assert.deepEqual(ids.shape, [golden.tokenizer_prompts.length, tok.model_max_length]);
    const bos = typeof tok.bos_token === "string"
      ? tok.bos_token
      : (tok.bos_token as { content: string }).content;
    assert.equal(ids.data[0], vocab[bos]);
  });
  await t.step("alphas_cumprod is a decreasing schedule starting at 1 - beta_start", async () => {
    const a = await f.read("scheduler.alphas_cumprod");
    const sched = await fixtureJson<{ beta_start: number }>(
      "sd-tiny",
      "tiny-sd",
      "scheduler",
      "scheduler_config.json",
    );
    assert.ok(Math.abs(a.data[0] - (1 - sched.beta_start)) < 1e-6);
    for (let i = 1; i < a.data.length; i++) assert.ok(a.data[i] < a.data[i - 1]);
  });
  f.close();
  await t.step("kohya alpha is int64 and decodes to int32", async () => {
    const k = await SafetensorsFile.open(fixture("sd-tiny", "lora_kohya_raw.safetensors"));
    const alphaKey = k.keys().find((x) => x.endsWith(".alpha"))!;
    assert.equal(k.info(alphaKey).dtype, "I64");
    const v = await k.read(alphaKey);
    assert.equal(v.dtype, "int32");
    assert.equal(v.data[0], 4);
    k.close();
  });
});

const ROUND_TRIP: Record<SafetensorsDtype, number[]> = {
  F64: [0, -1.5, 3.140625, 2 ** -100, 65504],
  F32: [0, -1.5, 3.140625, 2 ** -100, 65504],
  F16: [0, -1.5, 3.140625, 6.103515625e-5, 65504],
  BF16: [0, -1.5, 3.140625, 1.0078125, -65536],
  F8_E4M3: [0, -1.5, 3.25, 0.015625, 448],
  F8_E5M2: [0, -1.5, 3, 0.0625, 57344],
  I64: [0, -1, 2147483647, -2147483648, 5],
  I32: [0, -1, 2147483647, -2147483648, 5],
  I16: [0, -1, 32767, -32768, 5],
  I8: [0, -1, 127, -128, 5],
  U64: [0, 1, 2147483647, 3, 5],
  U32: [0, 1, 2147483647, 3, 5],
  U16: [0, 1, 65535, 3, 5],
  U8: [0, 1, 255, 3, 5],
  BOOL: [0, 1, 1, 0, 1],
};

Deno.test("safetensors: write → read round trip for every dtype", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    for (const [dtype, values] of Object.entries(ROUND_TRIP) as [SafetensorsDtype, number[]][]) {
      await t.step(dtype, async () => {
        const path = join(dir, `${dtype}.safetensors`);
        await writeSafetensors(path, { x: { dtype, shape: [5], data: values } }, { dtype });
        const raw = await Deno.readFile(path);
        const headerLen = Number(new DataView(raw.buffer).getBigUint64(0, true));
        assert.equal(headerLen % 8, 0, "header padded to 8 bytes");
        const f = await SafetensorsFile.open(path);
        assert.equal(f.metadata.dtype, dtype);
        assert.equal(f.info("x").dtype, dtype);
        const r = await f.read("x");
        f.close();
        assert.deepEqual(Array.from(r.data), values);
      });
    }
    await t.step("F16 and BF16 round to nearest even", () => {
      const bytes = encodeSafetensors({
        h: { dtype: "F16", shape: [2], data: [1 + 2 ** -11, 1 + 3 * 2 ** -11] },
        b: { dtype: "BF16", shape: [2], data: [1 + 2 ** -8, 1 + 3 * 2 ** -8] },
      });
      const d = decodeSafetensors(bytes).tensors;
      assert.deepEqual(Array.from(d.h.data), [1, 1 + 2 * 2 ** -10]);
      assert.deepEqual(Array.from(d.b.data), [1, 1 + 2 * 2 ** -7]);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: invalid files give errors naming the file and tensor", async (t) => {
  const good = encodeSafetensors({
    a: { dtype: "F32", shape: [2], data: [1, 2] },
    b: { dtype: "F32", shape: [1], data: [3] },
  });
  const data = good.subarray(8 + Number(new DataView(good.buffer).getBigUint64(0, true)));
  const cases: [string, Uint8Array, RegExp][] = [
    [
      "truncated data",
      good.subarray(0, good.byteLength - 2),
      /bad\.safetensors: file is truncated/,
    ],
    ["truncated length", good.subarray(0, 5), /bad\.safetensors: file is truncated/],
    ["header past end", withHeader("{}", new Uint8Array()).subarray(0, 9), /truncated/],
    ["bad JSON", withHeader('{"a": {', data), /bad\.safetensors: header is not valid JSON/],
    [
      "overlapping offsets",
      withHeader(
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        data,
      ),
      /tensor 'b': data_offsets \[4, 8\] overlap/,
    ],
    [
      "gap",
      withHeader(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}',
        data,
      ),
      /tensor 'a': data_offsets \[4, 8\] leave a gap/,
    ],
    [
      "wrong byte count",
      withHeader(
        '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}',
        data,
      ),
      /tensor 'a': holds 8 bytes but F32 \[3\] needs 12/,
    ],
    [
      "trailing bytes",
      withHeader('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', data),
      /4 trailing bytes/,
    ],
    [
      "duplicate keys",
      withHeader(
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}',
        data,
      ),
      /tensor 'a': duplicate key/,
    ],
    [
      "unknown dtype",
      withHeader('{"a":{"dtype":"F12","shape":[3],"data_offsets":[0,12]}}', data),
      /tensor 'a': unknown dtype "F12"/,
    ],
    [
      "huge header",
      (() => {
        const b = new Uint8Array(16);
        new DataView(b.buffer).setBigUint64(0, 200_000_000n, true);
        return b;
      })(),
      /header size 200000000 exceeds the limit/,
    ],
  ];
  const dir = await Deno.makeTempDir();
  try {
    for (const [name, bytes, pattern] of cases) {
      await t.step(name, async () => {
        const path = join(dir, "bad.safetensors");
        await Deno.writeFile(path, bytes);
        await assert.rejects(() => SafetensorsFile.open(path), (e: Error) => {
          assert.match(e.message, pattern);
          assert.ok(e.message.includes(path), `message names the file: ${e.message}`);
          return true;
        });
        assert.throws(() => decodeSafetensors(bytes, path), pattern);
      });
    }
    await t.step("missing file", async () => {
      await assert.rejects(
        () => SafetensorsFile.open(join(dir, "nope.safetensors")),
        /nope\.safetensors: file not found/,
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("weights: sharded checkpoints and fp16 variants", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    await t.step("index.json maps keys to shards", async () => {
      await writeSafetensors(join(dir, "model-00001-of-00002.safetensors"), {
        a: { dtype: "F32", shape: [2], data: [1, 2] },
      });
      await writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), {
        b: { dtype: "F16", shape: [1], data: [0.5] },
      });
      await Deno.writeTextFile(
        join(dir, "model.safetensors.index.json"),
        JSON.stringify({
          metadata: { total_size: 10 },
          weight_map: {
            a: "model-00001-of-00002.safetensors",
            b: "model-00002-of-00002.safetensors",
          },
        }),
      );
      const w = await openWeights(dir, { names: ["model"] });
      assert.deepEqual(w.keys().sort(), ["a", "b"]);
      assert.deepEqual(Array.from((await w.read("b")).data), [0.5]);
      w.close();
    });
    await t.step("fp16 variant is used when asked, and as a fallback", async () => {
      const sub = join(dir, "unet");
      await Deno.mkdir(sub);
      await writeSafetensors(join(sub, "diffusion_pytorch_model.fp16.safetensors"), {
        w: { dtype: "F16", shape: [2], data: [1.5, -2] },
      });
      for (const variant of ["fp16", undefined]) {
        const w = await openWeights(sub, { variant });
        assert.ok(w.path.endsWith("diffusion_pytorch_model.fp16.safetensors"));
        assert.deepEqual(Array.from((await w.read("w")).data), [1.5, -2]);
        w.close();
      }
    });
    await t.step("a folder with only a .bin explains what to do", async () => {
      const sub = join(dir, "old");
      await Deno.mkdir(sub);
      await Deno.writeFile(join(sub, "pytorch_model.bin"), new Uint8Array(4));
      await assert.rejects(
        () => openWeights(sub),
        /no safetensors weights found.*pytorch_model\.bin/s,
      );
    });
    await t.step("an index naming a shard without the key fails", async () => {
      await Deno.writeTextFile(
        join(dir, "bad.safetensors.index.json"),
        JSON.stringify({ weight_map: { zz: "model-00001-of-00002.safetensors" } }),
      );
      await assert.rejects(
        () => openWeights(join(dir, "bad.safetensors.index.json")),
        /tensor 'zz': weight_map says/,
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
