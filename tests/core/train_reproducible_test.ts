import assert from "node:assert/strict";
import { join } from "node:path";
import { builtinRegistry } from "../../builtin_plugins.ts";
import { loadCheckpoint } from "../../core/checkpoint.ts";
import { parsePipeline } from "../../core/pipeline_schema.ts";
import { train } from "../../core/train.ts";
import { TINY_SD } from "../_helpers.ts";

Deno.test("two runs with the same seed train the same LoRA, bit for bit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const run = async (name: string, seed: number) => {
      const p = parsePipeline({
        model: TINY_SD,
        backend: "wasm",
        seed,
        encoder: { options: { rank: 4, alpha: 4 } },
        sampler: { steps: 4, batchSize: 2 },
        rewards: [{ use: "brightness" }],
        prompts: { builtin: "tiny" },
        optimizer: { lr: 0.05 },
        train: { epochs: 1, batchesPerEpoch: 1, batchSize: 2, timestepFraction: 0.5 },
        output: { dir: join(dir, name), saveImages: false, exportFormats: [] },
      });
      const r = await train(p, { registry: builtinRegistry(), log: () => {} });
      return (await loadCheckpoint(r.checkpoint)).weights;
    };
    const a = await run("a", 3);
    const b = await run("b", 3);
    const c = await run("c", 4);
    const names = Object.keys(a);
    assert.ok(names.length > 0);
    for (const n of names) assert.deepEqual(Array.from(b[n].data), Array.from(a[n].data), n);
    // The seed reaches the LoRA initialisation: another seed gives other weights.
    assert.ok(names.some((n) => a[n].data.some((v, i) => v !== c[n].data[i])));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
