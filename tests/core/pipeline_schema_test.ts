// The pipeline schema: defaults, normalisation, strictness and messages; prompt sets and files.
import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { parsePipeline, type Pipeline } from "../../core/pipeline_schema.ts";
import { PipelineError } from "../../core/pipeline_error.ts";
import { PROMPT_SETS, promptSet, promptSetNames } from "../../core/prompt_sets.ts";
import { readPromptFile, resolvePrompts } from "../../core/prompts.ts";
import { TINY_SD } from "../_helpers.ts";

const FILE = "/work/pipelines/demo.yaml";
const minimal = () => ({ model: "./sd15", rewards: [{ use: "brightness" }], prompts: ["a cat"] });

function issuesOf(input: unknown): Map<string, string> {
  try {
    parsePipeline(input, { file: FILE });
  } catch (e) {
    assert(e instanceof PipelineError, `expected a PipelineError, got ${e}`);
    assert(e.message.startsWith(`${FILE}: invalid pipeline\n`), e.message);
    return new Map(e.issues.map((i) => [i.path, i.message]));
  }
  throw new Error("expected the pipeline to be invalid");
}

Deno.test("pipeline schema", async (t) => {
  await t.step("defaults reproduce the TexForce paper", () => {
    const p = parsePipeline(minimal(), { file: FILE });
    const expected: Pipeline = {
      name: "demo",
      baseDir: "/work/pipelines",
      model: "/work/pipelines/sd15",
      backend: "auto",
      seed: 0,
      encoder: { use: "clip-lora", options: {} },
      sampler: {
        use: "ddim",
        steps: 50,
        eta: 1,
        guidance: 5,
        batchSize: 2,
        negativePrompt: "",
        options: {},
      },
      rewards: [{ use: "brightness", weight: 1, options: {} }],
      optimizer: {
        use: "adamw",
        lr: 3e-4,
        betas: [0.9, 0.999],
        weightDecay: 1e-4,
        eps: 1e-8,
        maxGradNorm: 1,
        schedule: { type: "constant", warmupSteps: 0, minLr: 0 },
      },
      train: {
        epochs: 100,
        batchesPerEpoch: 2,
        batchSize: 2,
        innerEpochs: 1,
        timestepFraction: 0.5,
        clipRange: 1e-4,
        advClipMax: 5,
        gradientAccumulation: 1,
        microBatchSize: 2,
        perPromptTracking: { enabled: true, bufferSize: 16, minCount: 16 },
      },
      prompts: { list: ["a cat"] },
      checkpoint: { every: 1, keep: 3, resume: false },
      output: { dir: resolve("runs", "demo"), saveImages: true, exportFormats: ["peft"] },
    };
    assert.deepEqual(p, expected);
  });

  await t.step("paths resolve against the pipeline file's folder", () => {
    const p = parsePipeline({
      ...minimal(),
      name: "run-1",
      model: "../models/sd15",
      prompts: { file: "prompts.txt" },
      output: { dir: "out" },
    }, { file: FILE });
    assert.equal(p.model, "/work/models/sd15");
    assert.deepEqual(p.prompts, { file: "/work/pipelines/prompts.txt" });
    assert.equal(p.output.dir, "/work/pipelines/out");
    assert.equal(p.name, "run-1");
    const abs = parsePipeline({ ...minimal(), model: "/abs/sd15" }, { file: FILE });
    assert.equal(abs.model, "/abs/sd15");
    const noFile = parsePipeline(minimal());
    assert.equal(noFile.baseDir, Deno.cwd());
    assert.equal(noFile.name, "run");
  });

  await t.step("defaults do not leak between parses", () => {
    const a = parsePipeline(minimal(), { file: FILE });
    a.encoder.options.rank = 4;
    a.output.exportFormats.push("kohya");
    const b = parsePipeline(minimal(), { file: FILE });
    assert.deepEqual(b.encoder.options, {});
    assert.deepEqual(b.output.exportFormats, ["peft"]);
  });

  await t.step("prompt sources: a list, a file or a built-in set", () => {
    assert.deepEqual(parsePipeline({ ...minimal(), prompts: { builtin: "tiny" } }).prompts, {
      builtin: "tiny",
    });
    assert.deepEqual(parsePipeline({ ...minimal(), prompts: { list: ["x", "y"] } }).prompts, {
      list: ["x", "y"],
    });
    assert.match(issuesOf({ ...minimal(), prompts: {} }).get("prompts")!, /give one of/);
    assert.match(
      issuesOf({ ...minimal(), prompts: { list: ["a"], builtin: "tiny" } }).get("prompts")!,
      /only one of list, file or builtin \(got list and builtin\)/,
    );
    assert.match(issuesOf({ ...minimal(), prompts: [] }).get("prompts.list")!, /at least one/);
    assert.match(issuesOf({ ...minimal(), prompts: ["ok", ""] }).get("prompts.list[1]")!, /empty/);
  });

  await t.step("unknown keys are errors at every level, with the allowed keys", () => {
    const issues = issuesOf({
      ...minimal(),
      modle: "x",
      baseDir: "/tmp",
      sampler: { stepz: 3 },
      train: { perPromptTracking: { buffer: 3 } },
      optimizer: { schedule: { kind: "cosine" } },
      rewards: [{ use: "brightness", optionz: {} }],
      output: { formats: ["peft"] },
    });
    assert.match(
      issues.get("modle")!,
      /unknown key \(did you mean 'model'\?\); expected one of: name, model/,
    );
    assert.match(issues.get("baseDir")!, /unknown key/);
    assert.match(issues.get("sampler.stepz")!, /did you mean 'steps'/);
    assert.match(
      issues.get("train.perPromptTracking.buffer")!,
      /expected one of: enabled, bufferSize, minCount/,
    );
    assert.match(
      issues.get("optimizer.schedule.kind")!,
      /expected one of: type, warmupSteps, minLr/,
    );
    assert.match(issues.get("rewards[0].optionz")!, /did you mean 'options'/);
    assert.match(issues.get("output.formats")!, /unknown key/);
  });

  await t.step("wrong types and values name their path", () => {
    const issues = issuesOf({
      ...minimal(),
      seed: 1.5,
      backend: "cuda",
      sampler: { steps: "ten", guidance: -1 },
      train: { timestepFraction: 1.5, epochs: 0 },
      optimizer: { betas: [0.9] },
      output: { exportFormats: ["onnx"] },
      rewards: [{ use: "brightness", weight: "high" }],
      name: "my run",
    });
    assert.equal(issues.get("seed"), "expected an integer, got 1.5");
    assert.match(issues.get("backend")!, /auto.*cpu.*wasm.*webgpu.*tensorflow/);
    assert.equal(issues.get("sampler.steps"), 'expected number, got "ten"');
    assert.match(issues.get("sampler.guidance")!, />=0/);
    assert.match(issues.get("train.timestepFraction")!, /<=1/);
    assert.match(issues.get("train.epochs")!, />=1/);
    assert.ok(issues.has("optimizer.betas") || issues.has("optimizer.betas[1]"));
    assert.match(issues.get("output.exportFormats[0]")!, /peft/);
    assert.equal(issues.get("rewards[0].weight"), 'expected number, got "high"');
    assert.match(issues.get("name")!, /letters, digits/);
  });

  await t.step("missing required fields", () => {
    const issues = issuesOf({});
    assert.equal(issues.get("model"), "required (expected string)");
    assert.equal(issues.get("rewards"), "required (expected array)");
    assert.ok(issues.has("prompts"));
    assert.match(issuesOf({ ...minimal(), rewards: [] }).get("rewards")!, /at least one reward/);
    assert.equal(issuesOf("model: x").get(""), 'expected object, got "model: x"');
  });

  await t.step("cross-field checks", () => {
    assert.match(
      issuesOf({ ...minimal(), train: { perPromptTracking: { bufferSize: 8, minCount: 16 } } })
        .get("train.perPromptTracking.minCount")!,
      /at most bufferSize \(8\)/,
    );
    assert.match(
      issuesOf({ ...minimal(), sampler: { batchSize: 3 }, train: { batchesPerEpoch: 1 } })
        .get("train.batchSize")!,
      /divide the samples per epoch .* = 3/,
    );
    assert.match(
      issuesOf({ ...minimal(), sampler: { steps: 1 } }).get("train.timestepFraction")!,
      /trains no timestep/,
    );
    assert.match(
      issuesOf({ ...minimal(), optimizer: { lr: 1e-4, schedule: { minLr: 1e-3 } } })
        .get("optimizer.schedule.minLr")!,
      /at most lr/,
    );
    // Tracking disabled: its buffer settings do not matter.
    parsePipeline({
      ...minimal(),
      train: { perPromptTracking: { enabled: false, bufferSize: 1, minCount: 4 } },
    });
  });

  await t.step("eval defaults", () => {
    const p = parsePipeline({ ...minimal(), eval: { prompts: ["a"] } });
    assert.deepEqual(p.eval, { prompts: ["a"], seeds: [0, 1], every: 1 });
    assert.equal(parsePipeline(minimal()).eval, undefined);
  });
});

Deno.test("prompt sets and prompt files", async (t) => {
  await t.step("built-in sets", () => {
    assert.deepEqual(promptSetNames(), ["simple-animals", "hands", "faces", "tiny"]);
    assert.equal(promptSet("simple-animals").length, 45);
    const copy = promptSet("tiny");
    copy.push("x");
    assert.notEqual(promptSet("tiny").length, copy.length);
    assert.throws(
      () => promptSet("animals"),
      /unknown built-in prompt set 'animals'; expected one of: simple-animals, hands, faces, tiny/,
    );
    assert.throws(() => promptSet("toString"), /unknown built-in prompt set/);
    for (const [name, set] of Object.entries(PROMPT_SETS)) {
      assert.ok(set.length > 0, name);
      assert.equal(new Set(set).size, set.length, `${name} has duplicates`);
    }
  });

  await t.step("every word of the tiny set is in the tiny model's vocabulary", async () => {
    const vocab = JSON.parse(
      await Deno.readTextFile(join(TINY_SD, "tokenizer", "vocab.json")),
    ) as Record<string, number>;
    for (const prompt of promptSet("tiny")) {
      for (const word of prompt.split(" ")) {
        assert.ok(`${word}</w>` in vocab, `'${word}' of '${prompt}' is not one token`);
      }
    }
  });

  await t.step("prompt files: text, JSON and errors naming the file", async () => {
    const dir = await Deno.makeTempDir();
    try {
      const txt = join(dir, "p.txt");
      await Deno.writeTextFile(txt, "# animals\ncat\n\n  dog  \r\nhorse\n");
      assert.deepEqual(await readPromptFile(txt), ["cat", "dog", "horse"]);
      const json = join(dir, "p.json");
      await Deno.writeTextFile(json, '["a cat", "a dog"]');
      assert.deepEqual(await readPromptFile(json), ["a cat", "a dog"]);
      await Deno.writeTextFile(json, '{"prompts": []}');
      await assert.rejects(readPromptFile(json), new RegExp(`${json}: expected a JSON array`));
      await Deno.writeTextFile(json, '["a", 3]');
      await assert.rejects(readPromptFile(json), /item 1 is not a non-empty string/);
      await Deno.writeTextFile(txt, "# only a comment\n\n");
      await assert.rejects(readPromptFile(txt), /holds no prompts/);
      const missing = join(dir, "missing.txt");
      await assert.rejects(
        readPromptFile(missing),
        new RegExp(`${missing}: prompt file not found`),
      );

      await Deno.writeTextFile(txt, "cat\ndog\n");
      const p = parsePipeline({ ...minimal(), prompts: { file: "p.txt" } }, { baseDir: dir });
      assert.deepEqual(await resolvePrompts(p), ["cat", "dog"]);
      assert.deepEqual(await resolvePrompts({ builtin: "tiny" }), promptSet("tiny"));
      assert.deepEqual(await resolvePrompts(parsePipeline(minimal())), ["a cat"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});
