import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { builtinRegistry } from "../../builtin_plugins.ts";
import { loadPipeline } from "../../builtin_plugins.ts";
import { readMetrics } from "../../core/report.ts";
import { train } from "../../core/train.ts";

Deno.test("the example custom reward loads by specifier and trains one step", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = fileURLToPath(new URL("../../examples/custom_reward.yaml", import.meta.url));
    const pipeline = await loadPipeline(file, {
      set: [
        `output.dir=${dir}`,
        "backend=wasm",
        "train.epochs=1",
        "train.batchesPerEpoch=1",
        "train.timestepFraction=0.25",
        "output.saveImages=false",
      ],
    });
    assert.equal(pipeline.rewards[0].use, "./custom_reward/mod.ts");
    const result = await train(pipeline, { registry: builtinRegistry(), log: () => {} });
    assert.equal(result.steps, 1);
    const rows = await readMetrics(dir);
    const epoch = rows.find((r) => r.type === "epoch")!;
    assert.ok(Number.isFinite(epoch.reward_saturation_mean), "the custom reward was scored");
    assert.ok(Number.isFinite(epoch.reward_brightness_mean));
    const step = rows.find((r) => r.type === "train")!;
    assert.ok(Number(step.grad_norm) > 0, "gradients reached the LoRA");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
