// Loading pipeline files (YAML, JSON, TS), --set overrides, environment variables, validation
// of the model folder, plugins and their options; every example pipeline validates.
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { builtinRegistry } from "../../builtin_plugins.ts";
import {
  applyPipelineOverrides,
  loadPipeline,
  parsePipeline,
  pipelineSteps,
  validatePipeline,
} from "../../mod.ts";
import { definePipeline } from "../../cli.ts";
import { PipelineError } from "../../core/pipeline_error.ts";
import { PROJECT_TINY_SD, TINY_SD, tinyPipeline } from "../_helpers.ts";
import { pathExists } from "../../core/io/path_exists.ts";

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const EXAMPLES = join(ROOT, "examples");
/** Where the SD 1.5 examples look for the model (`SD15_PATH`, else examples/../models/…). */
const SD15 = Deno.env.get("SD15_PATH") || join(ROOT, "models", "stable-diffusion-v1-5");

async function issuesOf(p: Promise<unknown>): Promise<Map<string, string>> {
  try {
    await p;
  } catch (e) {
    assert(e instanceof PipelineError, `expected a PipelineError, got ${(e as Error).stack}`);
    return new Map(e.issues.map((i) => [i.path, i.message]));
  }
  throw new Error("expected the pipeline to be invalid");
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "texforce_pipeline_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("loadPipeline reads YAML, JSON and TypeScript", async (t) => {
  await withTempDir(async (dir) => {
    await t.step("YAML, relative paths against the file", async () => {
      const file = join(dir, "a.yaml");
      await Deno.writeTextFile(
        file,
        stringify({ ...tinyPipeline(), prompts: { file: "prompts.txt" } }),
      );
      await Deno.writeTextFile(join(dir, "prompts.txt"), "a red circle\n");
      const p = await loadPipeline(file);
      assert.equal(p.name, "a");
      assert.equal(p.baseDir, dir);
      assert.deepEqual(p.prompts, { file: join(dir, "prompts.txt") });
      assert.equal(p.sampler.steps, 2);
    });

    await t.step("JSON", async () => {
      const file = join(dir, "b.json");
      await Deno.writeTextFile(file, JSON.stringify(tinyPipeline({ name: "json-run" })));
      const p = await loadPipeline(file);
      assert.equal(p.name, "json-run");
    });

    await t.step("a TS module's default export", async () => {
      const file = join(dir, "c.ts");
      await Deno.writeTextFile(
        file,
        `export default ${JSON.stringify(tinyPipeline({ model: "./model-link" }))};\n`,
      );
      await Deno.symlink(TINY_SD, join(dir, "model-link"));
      const p = await loadPipeline(file);
      assert.equal(p.model, join(dir, "model-link"));
    });

    await t.step("file errors name the file", async () => {
      let issues = await issuesOf(loadPipeline(join(dir, "missing.yaml")));
      assert.equal(issues.get(""), "pipeline file not found");
      await Deno.writeTextFile(join(dir, "x.toml"), "");
      issues = await issuesOf(loadPipeline(join(dir, "x.toml")));
      assert.match(issues.get("")!, /unknown pipeline file type; expected \.yaml/);
      await Deno.writeTextFile(join(dir, "bad.yaml"), "model: [\n  a: b: c\n");
      issues = await issuesOf(loadPipeline(join(dir, "bad.yaml")));
      assert.match(issues.get("")!, /invalid YAML: .* at line 2/);
      await Deno.writeTextFile(join(dir, "bad.json"), "{ model: 1 }");
      issues = await issuesOf(loadPipeline(join(dir, "bad.json")));
      assert.match(issues.get("")!, /invalid JSON/);
      await Deno.writeTextFile(join(dir, "nodefault.ts"), "export const pipeline = {};\n");
      issues = await issuesOf(loadPipeline(join(dir, "nodefault.ts")));
      assert.match(issues.get("")!, /no pipeline default export/);
      try {
        await loadPipeline(join(dir, "bad.json"));
      } catch (e) {
        assert.match(
          (e as Error).message,
          new RegExp(`^${join(dir, "bad.json")}: invalid pipeline`),
        );
      }
    });
  });
});

Deno.test("--set overrides", async (t) => {
  await t.step("dotted paths, YAML values, created objects", () => {
    const input = { train: { epochs: 100 }, rewards: [{ use: "a", weight: 1 }] };
    const out = applyPipelineOverrides(input, [
      "train.epochs=3",
      "sampler.guidance=7.5",
      "rewards.0.weight=2",
      "rewards[0].options={quality: 80}",
      "rewards.1.use=brightness",
      "name=my run",
      "eval.seeds=[0, 1, 2]",
      "output.saveImages=false",
      "sampler.negativePrompt=",
      "optimizer.lr=1e-5",
    ]) as Record<string, Record<string, unknown>>;
    assert.deepEqual(out, {
      train: { epochs: 3 },
      sampler: { guidance: 7.5, negativePrompt: "" },
      rewards: [{ use: "a", weight: 2, options: { quality: 80 } }, { use: "brightness" }],
      name: "my run",
      eval: { seeds: [0, 1, 2] },
      output: { saveImages: false },
      optimizer: { lr: 1e-5 },
    });
    assert.equal(input.train.epochs, 100, "the input is not modified");
  });

  await t.step("bad overrides name the override", () => {
    try {
      applyPipelineOverrides({ train: { epochs: 1 }, rewards: [] }, [
        "train.epochs",
        "=3",
        "train.epochs.max=3",
        "rewards.5.weight=2",
        "rewards.x.weight=2",
      ]);
      assert.fail("expected an error");
    } catch (e) {
      assert(e instanceof PipelineError);
      const m = new Map(e.issues.map((i) => [i.path, i.message]));
      assert.match(m.get("--set train.epochs")!, /expected key=value/);
      assert.match(m.get("--set =3")!, /expected key=value/);
      assert.match(m.get("--set train.epochs.max=3")!, /train\.epochs is 1, not an object/);
      assert.match(m.get("--set rewards.5.weight=2")!, /rewards is a list of 0/);
      assert.match(m.get("--set rewards.x.weight=2")!, /'x' is not an index/);
    }
  });

  await t.step("applied before validation", async () => {
    await withTempDir(async (dir) => {
      const file = join(dir, "p.yaml");
      await Deno.writeTextFile(file, stringify(tinyPipeline()));
      const p = await loadPipeline(file, {
        set: ["train.epochs=3", "sampler.guidance=7.5", "rewards.0.weight=2"],
      });
      assert.equal(p.train.epochs, 3);
      assert.equal(p.sampler.guidance, 7.5);
      assert.equal(p.rewards[0].weight, 2);
      const issues = await issuesOf(loadPipeline(file, { set: ["train.epochs=zero"] }));
      assert.equal(issues.get("train.epochs"), 'expected number, got "zero"');
      // An override can also repair a file.
      await Deno.writeTextFile(file, stringify(tinyPipeline({ model: join(dir, "nope") })));
      await loadPipeline(file, { set: [`model=${TINY_SD}`] });
    });
  });
});

Deno.test("environment variables in YAML and JSON strings", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "env.yaml");
    Deno.env.set("TEXFORCE_TEST_MODEL", TINY_SD);
    try {
      await Deno.writeTextFile(
        file,
        stringify(tinyPipeline({
          model: "${TEXFORCE_TEST_MODEL}",
          rewards: [{ use: "brightness", name: "${TEXFORCE_TEST_UNSET:-bright}" }],
          prompts: ["costs $${PRICE}"],
        })),
      );
      const p = await loadPipeline(file);
      assert.equal(p.model, TINY_SD);
      assert.equal(p.rewards[0].name, "bright");
      assert.deepEqual(p.prompts, { list: ["costs ${PRICE}"] });
      await Deno.writeTextFile(file, stringify(tinyPipeline({ model: "${TEXFORCE_TEST_UNSET}" })));
      const issues = await issuesOf(loadPipeline(file));
      assert.match(issues.get("model")!, /environment variable TEXFORCE_TEST_UNSET is not set/);
    } finally {
      Deno.env.delete("TEXFORCE_TEST_MODEL");
    }
  });
});

Deno.test("validatePipeline", async (t) => {
  await withTempDir(async (dir) => {
    const write = async (name: string, config: unknown) => {
      const file = join(dir, name);
      await Deno.writeTextFile(file, stringify(config));
      return file;
    };
    await Deno.writeTextFile(join(dir, "no_plugin.ts"), "export const answer = 42;\n");
    await Deno.writeTextFile(
      join(dir, "sampler_plugin.ts"),
      `import plugin from "${join(EXAMPLES, "custom_reward", "mod.ts")}";\n` +
        "export default { ...plugin, kind: 'sampler' };\n",
    );

    await t.step("a missing model folder", async () => {
      const issues = await issuesOf(
        loadPipeline(await write("m.yaml", tinyPipeline({ model: "./nope" }))),
      );
      assert.equal(issues.get("model"), `${join(dir, "nope")}: model folder not found`);
    });

    await t.step("a model folder without a component", async () => {
      const model = join(dir, "half-model");
      await Deno.mkdir(model);
      await Deno.writeTextFile(
        join(model, "model_index.json"),
        JSON.stringify({ _class_name: "StableDiffusionPipeline" }),
      );
      const issues = await issuesOf(loadPipeline(await write("h.yaml", tinyPipeline({ model }))));
      assert.match(issues.get("model")!, /has no 'text_encoder' component/);
    });

    await t.step("an unknown plugin", async () => {
      const issues = await issuesOf(loadPipeline(
        await write(
          "u.yaml",
          tinyPipeline({ rewards: [{ use: "brightnes" }], sampler: { use: "ddpm" } }),
        ),
      ));
      assert.match(
        issues.get("rewards[0].use")!,
        /unknown reward plugin 'brightnes' \(did you mean 'brightness'\?\); built-in: .*jpeg-compressibility/,
      );
      assert.match(issues.get("sampler.use")!, /unknown sampler plugin 'ddpm'/);
    });

    await t.step("a plugin module without a plugin, or of the wrong kind", async () => {
      const issues = await issuesOf(loadPipeline(
        await write(
          "n.yaml",
          tinyPipeline({
            rewards: [{ use: "./no_plugin.ts" }, { use: "./sampler_plugin.ts" }, {
              use: "./gone.ts",
            }],
          }),
        ),
      ));
      assert.match(issues.get("rewards[0].use")!, /module '\.\/no_plugin\.ts' exports no plugin/);
      assert.match(
        issues.get("rewards[1].use")!,
        /exports a sampler plugin 'saturation', but a reward plugin is needed here/,
      );
      assert.match(issues.get("rewards[2].use")!, /cannot import plugin module '\.\/gone\.ts'/);
    });

    await t.step("bad plugin options", async () => {
      const issues = await issuesOf(loadPipeline(
        await write(
          "o.yaml",
          tinyPipeline({
            encoder: { options: { rank: 0, targetz: [] } },
            sampler: { steps: 2, options: { attentionSlice: -1, steps: 3 } },
            rewards: [{ use: "jpeg-compressibility", options: { quality: "high" } }],
            optimizer: { betas: [0.9, 0.999] },
          }),
        ),
      ));
      assert.equal(issues.get("rewards[0].options.quality"), 'expected number, got "high"');
      assert.match(issues.get("encoder.options.rank")!, />0|>=1/);
      assert.match(
        issues.get("encoder.options.targetz")!,
        /unknown key \(did you mean 'targets'\?\)/,
      );
      assert.ok(issues.has("sampler.options.attentionSlice"));
      assert.equal(issues.get("sampler.options.steps"), "set sampler.steps instead");
    });

    await t.step("prompt sources", async () => {
      let issues = await issuesOf(
        loadPipeline(await write("p.yaml", tinyPipeline({ prompts: { builtin: "birds" } }))),
      );
      assert.match(
        issues.get("prompts.builtin")!,
        /unknown built-in prompt set 'birds'; expected one of: simple-animals/,
      );
      issues = await issuesOf(
        loadPipeline(await write("q.yaml", tinyPipeline({ prompts: { file: "nope.txt" } }))),
      );
      assert.equal(issues.get("prompts.file"), `${join(dir, "nope.txt")}: prompt file not found`);
    });

    await t.step("every problem at once; checks can be turned off", async () => {
      const config = tinyPipeline({
        model: "./nope",
        rewards: [{ use: "nope" }],
        prompts: { builtin: "x" },
      });
      const issues = await issuesOf(loadPipeline(await write("all.yaml", config)));
      assert.deepEqual([...issues.keys()].sort(), ["model", "prompts.builtin", "rewards[0].use"]);
      const p = parsePipeline(config, { baseDir: dir });
      const onlyPrompts = await issuesOf(
        validatePipeline(p, { checkModel: false, checkPlugins: false }),
      );
      assert.deepEqual([...onlyPrompts.keys()], ["prompts.builtin"]);
      await loadPipeline(await write("ok.yaml", tinyPipeline({ model: "./nope" })), {
        checkModel: false,
      });
      await loadPipeline(await write("ok2.yaml", tinyPipeline({ model: "./nope" })), {
        validate: false,
      });
    });
  });
});

Deno.test("pipelineSteps maps each step to the options its plugin receives", () => {
  const p = parsePipeline(tinyPipeline({
    sampler: { steps: 3, eta: 0.5, guidance: 7, options: { attentionSlice: 64 } },
    rewards: [{ use: "brightness", options: { scale: 2 } }],
    optimizer: { betas: [0.8, 0.99], weightDecay: 0, eps: 1e-6, lr: 1e-4 },
  }));
  assert.deepEqual(pipelineSteps(p), [
    {
      kind: "encoder",
      use: "clip-lora",
      options: {},
      usePath: "encoder.use",
      optionsPath: "encoder.options",
    },
    {
      kind: "sampler",
      use: "ddim",
      options: { attentionSlice: 64, steps: 3, eta: 0.5, guidance: 7 },
      usePath: "sampler.use",
      optionsPath: "sampler.options",
    },
    {
      kind: "reward",
      use: "brightness",
      options: { scale: 2 },
      usePath: "rewards[0].use",
      optionsPath: "rewards[0].options",
    },
    {
      kind: "optimizer",
      use: "adamw",
      options: { betas: [0.8, 0.99], weightDecay: 0, eps: 1e-6 },
      usePath: "optimizer.use",
      optionsPath: "optimizer",
    },
  ]);
});

Deno.test("every example pipeline validates", async (t) => {
  const registry = builtinRegistry();
  for (const name of ["tiny_brightness.yaml", "custom_reward.yaml"]) {
    await t.step(name, async () => {
      const p = await loadPipeline(join(EXAMPLES, name));
      assert.equal(p.model, PROJECT_TINY_SD);
    });
  }
  const sd15Present = await pathExists(SD15);
  for (const name of ["sd15_compressibility.json", "sd15_aesthetic.ts"]) {
    await t.step(name, async () => {
      const path = join(EXAMPLES, name);
      // The schema, the plugins that exist here and the prompts always validate.
      const p = await loadPipeline(path, { validate: false });
      assert.equal(p.model, SD15);
      const missing = p.rewards.filter((r) => !registry.get("reward", r.use)).map((r) => r.use);
      if (missing.length === 0) await validatePipeline(p, { checkModel: false, registry });
      else {
        console.log(
          `  ${name}: reward plugin(s) ${
            missing.join(", ")
          } not built in yet; checked the schema only`,
        );
      }
      if (!sd15Present) {
        console.log(`  ${name}: ${SD15} absent (set SD15_PATH); model folder not checked`);
      } else if (missing.length === 0) {
        await loadPipeline(path);
      }
    });
  }
});

Deno.test("a TS pipeline only runs as the main module", async (t) => {
  await t.step("importing it returns the config and starts nothing", async () => {
    const mod = await import("../../examples/sd15_aesthetic.ts");
    assert.equal(mod.default.name, "sd15_aesthetic");
    assert.deepEqual(mod.default.prompts, { builtin: "simple-animals" });
    const config = { model: "m", rewards: [{ use: "brightness" }], prompts: ["a"] };
    assert.equal(definePipeline(config), config);
    assert.equal(definePipeline(config, { ...import.meta, main: false }), config);
  });

  await t.step("in a subprocess, import exits at once without training", async () => {
    const code = `import p from ${JSON.stringify(join(EXAMPLES, "sd15_aesthetic.ts"))};\n` +
      "console.log(JSON.stringify(p.sampler));";
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.deepEqual(JSON.parse(stdout.trim()), { steps: 50, eta: 1, guidance: 5, batchSize: 2 });
    assert.doesNotMatch(stderr + stdout, /backend|epoch|invalid pipeline/);
  });

  await t.step("run as the main module it trains (deno run pipeline.ts)", async () => {
    await withTempDir(async (dir) => {
      const file = join(dir, "main_pipeline.ts");
      await Deno.writeTextFile(
        file,
        `import { definePipeline } from ${JSON.stringify(join(ROOT, "cli.ts"))};\n` +
          `export default definePipeline(${
            JSON.stringify({
              model: TINY_SD,
              backend: "wasm",
              encoder: { options: { rank: 2, alpha: 2 } },
              sampler: { steps: 2, batchSize: 2 },
              rewards: [{ use: "brightness" }],
              prompts: ["a red circle"],
              train: { epochs: 1, batchesPerEpoch: 1, perPromptTracking: { enabled: false } },
              output: { dir: "./out", saveImages: false },
            })
          }, import.meta);\n`,
      );
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--config", join(ROOT, "deno.json"), file, "--set", "seed=3"],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, stderr);
      assert.match(stdout, new RegExp(`checkpoint: ${join(dir, "out", "checkpoints")}`));
      const saved = JSON.parse(await Deno.readTextFile(join(dir, "out", "pipeline.json")));
      assert.equal(saved.seed, 3);
    });
  });
});
