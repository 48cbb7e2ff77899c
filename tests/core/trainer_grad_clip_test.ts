// The trainer clips the global gradient norm before the optimizer sees the gradients: an
// optimizer that records what it receives never sees a norm above maxGradNorm.
import assert from "node:assert/strict";
import type * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import { useBackend } from "../../core/backend.ts";
import { globalNorm } from "../../core/gradients.ts";
import type { Optimizer } from "../../core/optimizer.ts";
import { Trainer } from "../../core/trainer.ts";
import { disposeParts, fakeParts, fakePipeline } from "../_fake_parts.ts";

Deno.test("trainer: gradients reach the optimizer clipped to maxGradNorm", async () => {
  await useBackend("wasm");
  const dir = await Deno.makeTempDir();
  try {
    const parts = fakeParts();
    const inner = parts.optimizer;
    const seen: Promise<number>[] = [];
    const spy: Optimizer = {
      name: "spy",
      get stepCount() {
        return inner.stepCount;
      },
      step(grads: Map<string, tf.Tensor>, lr: number) {
        // Read the norm before the step: the step may not change the gradients it is given.
        seen.push(globalNorm(grads));
        inner.step(grads, lr);
      },
      getState: () => inner.getState(),
      setState: (s) => inner.setState(s),
      dispose: () => inner.dispose(),
    };
    parts.optimizer = spy;
    const maxGradNorm = 1e-4;
    const cfg = fakePipeline(join(dir, "run"), { optimizer: { lr: 0.05, maxGradNorm } });
    await new Trainer(cfg, parts, { log: () => {} }).run();
    const norms = await Promise.all(seen);
    assert.ok(norms.length > 0);
    for (const n of norms) {
      assert.ok(n <= maxGradNorm * (1 + 1e-5), `the optimizer saw a gradient norm of ${n}`);
    }
    // The fake task's raw gradients are far larger, so the clip really acted.
    assert.ok(norms.some((n) => n > maxGradNorm * 0.5), `norms ${norms}`);
    disposeParts(parts);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
