// tfjs' tensor bookkeeping on the wasm backend: its tensor tables as Maps and shape arrays of one
// elements kind (core/_tensor_tables.ts, core/_uniform_shapes.ts): the fallback table still finds and removes
// entries made before the swap; once the wasm backend runs, both tables are Maps, a disposed
// tensor leaves no entry in either, and a UNet forward + backward leaks none; kernel outputs'
// shape arrays are all of one kind (checked with V8's own test of an array's elements kind, in
// a child process), and the switches leave tfjs as it is (tables WeakMaps, kinds mixed).
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../core/backend.ts";
import { TableWithFallback } from "../../core/_tensor_tables.ts";
import { uniformShape } from "../../core/_uniform_shapes.ts";
import { parseUNetConfig, UNet2DConditionModel } from "../../adapters/unet/unet_2d_condition.ts";
import { RandomWeightReader } from "../../adapters/unet/random_weight_reader.ts";
import { SeededNoise } from "../../core/seeded_noise.ts";
import { TINY_UNET } from "../../bench/_unet_bench.ts";

interface Tables {
  engine: unknown;
  backend: unknown;
}

function tables(): Tables {
  const state = (tf.engine() as unknown as { state: { tensorInfo: unknown } }).state;
  const storage = (tf.backend() as unknown as { dataIdMap: { data: unknown } }).dataIdMap;
  return { engine: state.tensorInfo, backend: storage.data };
}

const size = (table: unknown): number => (table as Map<object, unknown>).size;

// A child deno that runs `code` (with V8's natives syntax on) and prints one JSON line.
async function child(code: string, env: Record<string, string> = {}): Promise<unknown> {
  const dir = await Deno.makeTempDir({ prefix: "texforce_tables_" });
  const file = `${dir}/child.ts`;
  await Deno.writeTextFile(file, code);
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--config",
        new URL("../../deno.json", import.meta.url).pathname,
        "--v8-flags=--allow-natives-syntax",
        file,
      ],
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    return JSON.parse(text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const CHILD = `
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "${new URL("../../core/backend.ts", import.meta.url).href}";
await useBackend("wasm", { wasmThreads: 1 });
const holey = new Function("x", "return %HasHoleyElements(x)");
const x = tf.ones([2, 3]);
// Outputs of tfjs' kernels (whose shapes are holey or packed, depending on the kernel) and of
// texforce's (literals).
const made = [tf.transpose(x), tf.add(x, x), tf.matMul(x, x, false, true), tf.concat([x, x])];
const state = tf.engine().state;
const storage = tf.backend().dataIdMap;
console.log(JSON.stringify({
  kinds: [...new Set(made.map((t) => holey(t.shape) ? "holey" : "packed"))].sort(),
  engineWeak: state.tensorInfo instanceof WeakMap,
  backendWeak: storage.data instanceof WeakMap,
}));
`;

Deno.test("tensor tables and shape arrays", async (t) => {
  await t.step("the fallback table: old entries found and removed, new ones in the Map", () => {
    const old = new WeakMap<object, string>();
    const [a, b] = [{}, {}];
    old.set(a, "old");
    const table = new TableWithFallback(old);
    table.set(b, "new");
    assert.equal(table.get(a), "old");
    assert.equal(table.get(b), "new");
    assert.ok(table.has(a) && table.has(b));
    assert.ok(table.delete(a));
    assert.ok(!table.has(a) && !old.has(a));
    assert.ok(table.delete(b));
    assert.ok(!table.has(b));
    assert.ok(!table.delete(b));
  });

  await t.step("a shape's uniform copy has the same values", () => {
    const holey = new Array<number>(3);
    [holey[0], holey[1], holey[2]] = [2, 77, 32];
    assert.deepEqual(uniformShape(holey), [2, 77, 32]);
    assert.deepEqual(uniformShape([4, 1]), [4, 1]);
    assert.deepEqual(uniformShape([]), []);
  });

  await useBackend("wasm", { wasmThreads: 1 });

  await t.step("on wasm both tables are Maps, and a disposed tensor leaves neither", () => {
    const { engine, backend } = tables();
    assert.ok(!(engine instanceof WeakMap), "the engine's table is still a WeakMap");
    assert.ok(!(backend instanceof WeakMap), "the backend's table is still a WeakMap");
    const [e0, b0] = [size(engine), size(backend)];
    const a = tf.ones([4, 4]);
    const c = tf.tidy(() => tf.matMul(a, a).add(1));
    assert.equal(size(engine), e0 + 2);
    assert.equal(size(backend), b0 + 2);
    tf.dispose([a, c]);
    assert.equal(size(engine), e0);
    assert.equal(size(backend), b0);
  });

  await t.step("a UNet forward + backward leaves no entry and no tensor", async () => {
    const config = parseUNetConfig(TINY_UNET, "<tiny config>");
    const unet = await UNet2DConditionModel.fromReader(config, new RandomWeightReader(1));
    const gen = new SeededNoise(3);
    const x = gen.normal([2, 16, 16, 4]) as tf.Tensor4D;
    const states = gen.normal([2, 77, 32]) as tf.Tensor3D;
    const { engine, backend } = tables();
    const run = async (): Promise<void> => {
      const g = tf.grad((e: tf.Tensor) =>
        unet.forward(x, [10, 500], e as tf.Tensor3D).square().sum()
      )(states);
      await g.data();
      g.dispose();
    };
    await run();
    const [n0, e0, b0] = [tf.memory().numTensors, size(engine), size(backend)];
    await run();
    await run();
    assert.equal(tf.memory().numTensors, n0);
    assert.equal(size(engine), e0);
    assert.equal(size(backend), b0);
    tf.dispose([x, states]);
    unet.dispose();
  });

  await t.step("kernel outputs' shapes are of one kind; the switches keep tfjs' own", async () => {
    assert.deepEqual(await child(CHILD), {
      kinds: ["holey"],
      engineWeak: false,
      backendWeak: false,
    });
    assert.deepEqual(
      await child(CHILD, { TEXFORCE_UNIFORM_SHAPES: "off", TEXFORCE_TENSOR_TABLES: "weak" }),
      { kinds: ["holey", "packed"], engineWeak: true, backendWeak: true },
    );
  });
});
