// Plugins own their options: a third-party sampler and optimizer with strict schemas validate
// and train a step (the core hands them nothing they did not ask for); the built-ins' shorthand
// defaults are their own schema defaults; DDPO / trl keys get our name in the error.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { z } from "zod";
import { builtinRegistry, validatePipeline } from "../../builtin_plugins.ts";
import { assemble, pipelineSteps } from "../../core/assemble.ts";
import { PipelineError } from "../../core/pipeline_error.ts";
import { builtinShorthandDefaults, parsePipeline } from "../../core/pipeline_schema.ts";
import { definePlugin, parsePluginOptions } from "../../core/plugin.ts";
import type { Optimizer } from "../../core/optimizer.ts";
import { readMetrics } from "../../core/report.ts";
import { train } from "../../core/train.ts";
import { adamwPlugin } from "../../adapters/optim/adamw.ts";
import { ddimSampler, ddimSamplerPlugin } from "../../samplers/mod.ts";
import { TINY_SD } from "../_helpers.ts";

/** A sampler plugin with options of its own (none of ddim's names), strictly checked. */
const strictSampler = definePlugin({
  kind: "sampler",
  name: "strict-sampler",
  version: "1.0.0",
  options: z.strictObject({ denoisingSteps: z.int().min(1), cfgScale: z.number().default(5) }),
  create: (o, ctx) =>
    ddimSampler({ modelPath: ctx.modelPath, steps: o.denoisingSteps, guidance: o.cfgScale }),
});

/** Plain SGD with momentum: an optimizer with no betas, weight decay or epsilon. */
const sgd = definePlugin({
  kind: "optimizer",
  name: "sgd",
  version: "1.0.0",
  options: z.strictObject({ momentum: z.number().min(0).lt(1).default(0) }),
  create: (o, ctx): Optimizer => {
    const vars = ctx.variables!;
    const velocity = new Map<string, tf.Variable>();
    let steps = 0;
    return {
      name: "sgd",
      get stepCount() {
        return steps;
      },
      step(grads, lr) {
        tf.tidy(() => {
          for (const [k, g] of grads) {
            const v = vars.get(k)!;
            if (!velocity.has(k)) velocity.set(k, tf.variable(tf.zerosLike(v), false));
            const m = velocity.get(k)!;
            m.assign(m.mul(o.momentum).add(g));
            v.assign(v.sub(m.mul(lr)));
          }
        });
        steps++;
      },
      getState: () => Promise.resolve({ step: steps, tensors: {} }),
      setState: (s) => void (steps = s.step),
      dispose: () => {
        for (const m of velocity.values()) m.dispose();
      },
    };
  },
});

function registry() {
  const r = builtinRegistry();
  r.register(strictSampler);
  r.register(sgd);
  return r;
}

Deno.test("third-party sampler and optimizer with strict schemas", async (t) => {
  const dir = await Deno.makeTempDir();
  const config = {
    model: TINY_SD,
    backend: "wasm",
    sampler: { use: "strict-sampler", batchSize: 2, options: { denoisingSteps: 2 } },
    optimizer: { use: "sgd", lr: 1e-3, options: { momentum: 0.5 } },
    rewards: [{ use: "brightness" }],
    prompts: ["a red circle"],
    train: { epochs: 1, batchesPerEpoch: 1, perPromptTracking: { enabled: false } },
    output: { dir, saveImages: false, exportFormats: [] },
  };
  try {
    await t.step("the core hands them only their own options", () => {
      const steps = pipelineSteps(parsePipeline(config));
      assert.deepEqual(steps[1].options, { denoisingSteps: 2 });
      assert.deepEqual(steps[3].options, { momentum: 0.5 });
    });

    await t.step("they validate", async () => {
      await validatePipeline(parsePipeline(config), { registry: registry() });
    });

    await t.step("their errors name where the option is written", async () => {
      const bad = parsePipeline({
        ...config,
        sampler: { ...config.sampler, steps: 3 },
        optimizer: { ...config.optimizer, options: { momentum: 2 } },
      });
      const issues = await validatePipeline(bad, { registry: registry(), checkModel: false })
        .then(() => [], (e: PipelineError) => e.issues);
      const paths = issues.map((i) => i.path).sort();
      assert.deepEqual(paths, ["optimizer.options.momentum", "sampler.steps"]);
    });

    await t.step("one training step", async () => {
      const pipeline = parsePipeline(config);
      const r = registry();
      const assembly = await assemble(pipeline, r);
      assert.equal(assembly.sampler.plugin.name, "strict-sampler");
      const result = await train(pipeline, { registry: r, log: () => {} });
      assert.equal(result.steps, 1);
      const rows = await readMetrics(dir);
      const step = rows.find((row) => row.type === "train")!;
      assert.ok(Number(step.grad_norm) > 0, "gradients reached the LoRA");
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the built-ins' shorthand defaults are their own schema defaults", () => {
  const ddim = parsePluginOptions(ddimSamplerPlugin, {}, "sampler.options");
  const adamw = parsePluginOptions(adamwPlugin, {}, "optimizer");
  const filledSampler = builtinShorthandDefaults("sampler", "ddim");
  const filledOptimizer = builtinShorthandDefaults("optimizer", "adamw");
  for (const [k, v] of Object.entries(filledSampler)) {
    assert.deepEqual(ddim[k as keyof typeof ddim], v, `ddim ${k}`);
  }
  for (const [k, v] of Object.entries(filledOptimizer)) {
    assert.deepEqual(adamw[k as keyof typeof adamw], v, `adamw ${k}`);
  }
  assert.deepEqual(Object.keys(filledSampler).sort(), ["eta", "guidance", "steps"]);
  assert.deepEqual(Object.keys(filledOptimizer).sort(), ["betas", "eps", "weightDecay"]);
  assert.deepEqual(builtinShorthandDefaults("sampler", "./euler.ts"), {});
});

Deno.test("DDPO and trl keys name ours", () => {
  let issues = new Map<string, string>();
  try {
    parsePipeline({
      model: "m",
      rewards: [{ use: "brightness" }],
      prompts: ["a"],
      train: { learning_rate: 1e-4, clip_range: 1e-4 },
      sample: { num_steps: 20 },
      train_timestep_fraction: 0.5,
    });
  } catch (e) {
    assert(e instanceof PipelineError);
    issues = new Map(e.issues.map((i) => [i.path, i.message]));
  }
  assert.match(
    issues.get("train.learning_rate")!,
    /DDPO's 'train\.learning_rate' is .*optimizer\.lr/,
  );
  assert.match(issues.get("train.clip_range")!, /train\.clipRange/);
  assert.match(issues.get("sample.num_steps")!, /sampler\.steps/);
  assert.match(issues.get("train_timestep_fraction")!, /trl's .* train\.timestepFraction/);
  assert.ok(!issues.has("sample"), "the whole DDPO section is explained key by key");
});
