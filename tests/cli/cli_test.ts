// The command line, run as a subprocess: help, exit codes, validation messages without stack
// traces, --set, inspect, and a short run on the tiny model.
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";
import { SafetensorsFile } from "../../core/io/safetensors.ts";
import { decodeImage } from "../../core/image_output.ts";
import { fixture, fixtureJson, PROJECT_TINY_SD, TINY_SD, tinyPipeline } from "../_helpers.ts";

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const EXAMPLES = join(ROOT, "examples");

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(...args: string[]): Promise<Result> {
  return await cliWith({}, ...args);
}

async function cliWith(env: Record<string, string>, ...args: string[]): Promise<Result> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", "cli.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { TEXFORCE_DEBUG: "", ...env },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Exit code 2, the message names `path`, and no stack trace. */
function assertUsageError(r: Result, ...patterns: RegExp[]): void {
  assert.equal(r.code, 2, `exit code ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  for (const p of patterns) assert.match(r.stderr, p);
  assert.ok(!r.stderr.includes("    at "), `a stack trace was printed:\n${r.stderr}`);
}

Deno.test("cli: help and usage", async (t) => {
  await t.step("top-level help", async () => {
    for (const args of [["--help"], ["-h"], ["help"]]) {
      const r = await cli(...args);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Usage: texforce <command>/);
      for (const c of ["run", "validate", "generate", "export", "inspect"]) {
        assert.match(r.stdout, new RegExp(`\\n  ${c} `));
      }
    }
    const v = await cli("--version");
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^texforce \d+\.\d+\.\d+/);
  });

  await t.step(
    "export --help names the loader call of each format and the upstream bugs",
    async () => {
      const r = await cli("export", "--help");
      for (
        const call of [
          "CLIPTextModel.from_pretrained(dir)",
          "PeftModel.from_pretrained(text_encoder, dir)",
          "pipe.text_encoder.load_adapter(dir)",
          "NOT pipe.load_lora_weights(dir)",
          "pipe.load_lora_weights(file)",
          "AUTOMATIC1111",
          "ComfyUI",
          "diffusers issue #13984",
          "before 0.34",
          "--layout <layout>      transformers-4 or transformers-5 (default transformers-4)",
        ]
      ) assert.ok(r.stdout.includes(call), `export --help lacks '${call}'`);
    },
  );

  await t.step("each command's help", async () => {
    for (const c of ["run", "validate", "generate", "export", "inspect"]) {
      const r = await cli(c, "--help");
      assert.equal(r.code, 0, `${c}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`Usage: texforce ${c}`));
      const viaHelp = await cli("help", c);
      assert.equal(viaHelp.stdout, r.stdout);
    }
  });

  await t.step("usage errors exit 2 without a stack trace", async () => {
    const none = await cli();
    assert.equal(none.code, 2);
    assert.match(none.stdout, /Usage/);
    assertUsageError(await cli("train", "x.yaml"), /unknown command 'train'/);
    assertUsageError(await cli("validate"), /texforce validate: missing <pipeline>/, /--help/);
    assertUsageError(await cli("validate", "a.yaml", "b.yaml"), /unexpected argument 'b\.yaml'/);
    assertUsageError(await cli("validate", "--frobnicate", "a.yaml"), /--frobnicate/);
    assertUsageError(await cli("run"), /texforce run: missing <pipeline>/);
    assertUsageError(await cli("inspect"), /missing <model>/);
  });
});

Deno.test("cli: validate", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "texforce_cli_" });
  const write = async (name: string, config: unknown, raw = false) => {
    const file = join(dir, name);
    await Deno.writeTextFile(file, raw ? String(config) : stringify(config));
    return file;
  };
  try {
    await t.step("the examples validate and print normalised YAML", async () => {
      for (const name of ["tiny_brightness.yaml", "custom_reward.yaml"]) {
        const r = await cli("validate", join("examples", name));
        assert.equal(r.code, 0, r.stderr);
        const p = parse(r.stdout);
        assert.equal(p.model, PROJECT_TINY_SD);
        assert.equal(p.baseDir, EXAMPLES);
        assert.ok(p.optimizer.lr > 0 && p.train.clipRange === 1e-4);
        assert.match(r.stderr, /valid/);
      }
      const json = await cli("validate", "--json", "examples/tiny_brightness.yaml");
      assert.equal(JSON.parse(json.stdout).name, "tiny_brightness");
      const sd = await cli("validate", "--skip-model-check", "examples/sd15_compressibility.json");
      assert.equal(sd.code, 0, sd.stderr);
    });

    await t.step("--set overrides apply", async () => {
      const r = await cli(
        "validate",
        "examples/tiny_brightness.yaml",
        "--set",
        "train.epochs=7",
        "--set",
        "sampler.guidance=7.5",
        "-s",
        "rewards.0.weight=2",
      );
      assert.equal(r.code, 0, r.stderr);
      const p = parse(r.stdout);
      assert.equal(p.train.epochs, 7);
      assert.equal(p.sampler.guidance, 7.5);
      assert.equal(p.rewards[0].weight, 2);
      assertUsageError(
        await cli("validate", "examples/tiny_brightness.yaml", "--set", "train.epochs"),
        /--set train\.epochs: expected key=value/,
      );
      assertUsageError(
        await cli("validate", "examples/tiny_brightness.yaml", "--set", "train.epochs=-1"),
        /train\.epochs: .*>=1/,
      );
    });

    await t.step("an unknown key", async () => {
      assertUsageError(
        await cli("validate", await write("k.yaml", tinyPipeline({ train: { epochz: 3 } }))),
        /invalid pipeline/,
        / {2}train\.epochz: unknown key \(did you mean 'epochs'\?\)/,
      );
    });

    await t.step("a wrong type", async () => {
      assertUsageError(
        await cli("validate", await write("t.yaml", tinyPipeline({ sampler: { steps: "many" } }))),
        / {2}sampler\.steps: expected number, got "many"/,
      );
    });

    await t.step("a missing model folder", async () => {
      assertUsageError(
        await cli("validate", await write("m.yaml", tinyPipeline({ model: "./no-model" }))),
        new RegExp(`  model: ${join(dir, "no-model")}: model folder not found`),
      );
    });

    await t.step("an unknown plugin", async () => {
      assertUsageError(
        await cli(
          "validate",
          await write("u.yaml", tinyPipeline({ rewards: [{ use: "aesthetics" }] })),
        ),
        / {2}rewards\[0\]\.use: unknown reward plugin 'aesthetics'/,
      );
    });

    await t.step("a plugin module without a plugin", async () => {
      await write("not_a_plugin.ts", "export const x = 1;\n", true);
      assertUsageError(
        await cli(
          "validate",
          await write("n.yaml", tinyPipeline({ rewards: [{ use: "./not_a_plugin.ts" }] })),
        ),
        / {2}rewards\[0\]\.use: module '\.\/not_a_plugin\.ts' exports no plugin/,
      );
    });

    await t.step("bad plugin options", async () => {
      assertUsageError(
        await cli(
          "validate",
          await write(
            "o.yaml",
            tinyPipeline({ rewards: [{ use: "jpeg-compressibility", options: { quality: 0 } }] }),
          ),
        ),
        / {2}rewards\[0\]\.options\.quality: .*>=1/,
      );
    });

    await t.step("a bad file", async () => {
      assertUsageError(await cli("validate", join(dir, "missing.yaml")), /pipeline file not found/);
      assertUsageError(
        await cli("validate", await write("y.yaml", "rewards: [\n  a: b: c\n", true)),
        /invalid YAML/,
      );
      assertUsageError(
        await cli("validate", await write("throws.ts", "throw new Error('boom');\n", true)),
        /cannot import pipeline module: .*boom/,
      );
    });

    await t.step("run refuses an invalid pipeline the same way", async () => {
      assertUsageError(
        await cli("run", await write("r.yaml", tinyPipeline({ train: { epochs: "x" } }))),
        / {2}train\.epochs: expected number/,
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: inspect", async () => {
  const r = await cli("inspect", TINY_SD);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /pipeline: StableDiffusionPipeline/);
  assert.match(r.stdout, /text_encoder\s+transformers\.CLIPTextModel/);
  // What inspect prints is what the model folder's own files say.
  const te = await fixtureJson<Record<string, number>>(
    "sd-tiny",
    "tiny-sd",
    "text_encoder",
    "config.json",
  );
  const vocab = await fixtureJson("sd-tiny", "tiny-sd", "tokenizer", "vocab.json");
  assert.match(
    r.stdout,
    new RegExp(`hidden_size=${te.hidden_size} num_hidden_layers=${te.num_hidden_layers}`),
  );
  assert.match(r.stdout, /unet\s+diffusers\.UNet2DConditionModel/);
  assert.match(r.stdout, new RegExp(`vocab: ${Object.keys(vocab).length} tokens`));
  assert.match(r.stdout, /weights: [\d.]+[KM] parameters in \d+ tensors \(F32/);
  const json = await cli("inspect", "--json", TINY_SD);
  const s = JSON.parse(json.stdout);
  assert.equal(s.components.text_encoder.config.hidden_size, te.hidden_size);
  assert.equal(s.components.vae.weights.byDtype.F32, s.components.vae.weights.parameters);
  assert.equal(s.components.tokenizer.weights, undefined);
  const sum = Object.values(s.components as Record<string, { weights?: { parameters: number } }>)
    .reduce((a, c) => a + (c.weights?.parameters ?? 0), 0);
  assert.equal(s.totalParameters, sum);
  // Every parameter of every weights file of the folder, counted from the headers.
  let fromHeaders = 0;
  for (const c of ["text_encoder", "unet", "vae"]) {
    for (const e of Deno.readDirSync(join(TINY_SD, c))) {
      if (!e.name.endsWith(".safetensors")) continue;
      const f = await SafetensorsFile.open(join(TINY_SD, c, e.name));
      for (const k of f.keys()) fromHeaders += f.info(k).shape.reduce((a, b) => a * b, 1);
      f.close();
    }
  }
  assert.equal(sum, fromHeaders);
  assertUsageError(
    await cli("inspect", "/no/such/model"),
    /\/no\/such\/model: model folder not found/,
  );
});

Deno.test("cli: run, export and generate on the tiny model", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "texforce_cli_run_" });
  const run = join(dir, "run");
  try {
    await t.step("run trains and exports", async () => {
      const r = await cli(
        "run",
        "examples/tiny_brightness.yaml",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batchesPerEpoch=1",
        "--set",
        "train.batchSize=4",
        "--set",
        "train.timestepFraction=0.5",
        "--set",
        "backend=wasm",
        "--set",
        "output.saveImages=false",
        "--set",
        `output.dir=${run}`,
        "--quiet",
      );
      assert.equal(r.code, 0, r.stderr);
      // --quiet: only the result, nothing else on either stream.
      assert.match(
        r.stdout,
        new RegExp(`^output: ${run}\\ncheckpoint: ${run}/checkpoints/step-\\d+\\n$`),
      );
      assert.equal(r.stderr, "", "--quiet printed more than the result");
      await Deno.stat(join(run, "pipeline.json"));
      await Deno.stat(join(run, "export", "peft", "adapter_model.safetensors"));
    });

    await t.step(
      "a run to a pipe prints a header and progress lines with rate and ETA",
      async () => {
        const out = join(dir, "progress");
        const r = await cliWith(
          { TEXFORCE_PROGRESS_SECONDS: "0" },
          "run",
          "examples/tiny_brightness.yaml",
          ...[
            "train.epochs=2",
            "train.batchesPerEpoch=1",
            "train.batchSize=2",
            "sampler.batchSize=2",
            "sampler.steps=2",
            "eval.every=100",
            "backend=wasm",
            "output.saveImages=false",
            `output.dir=${out}`,
          ].flatMap((s) => ["--set", s]),
        );
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^output: .*\ncheckpoint: .*\n$/, "the result alone on stdout");
        const err = r.stderr;
        assert.ok(
          !err.includes("\r") && !err.includes("\x1b"),
          "no terminal control codes when not a terminal",
        );
        for (
          const header of [
            /^texforce run: tiny_brightness → /m,
            /^model: {4}.*tiny-sd$/m,
            /^backend: {2}wasm on WebAssembly/m,
            /^plan: {5}2 epochs × 2 images \(1 batch of 2\), 2 DDIM steps/m,
            /^epoch: {4}2 UNet calls sampling .* 1 optimizer step$/m,
            /^time: {5}estimated once the first epoch is timed$/m,
          ]
        ) assert.match(err, header);
        // Progress lines: epoch i/N, the phase, the step, images/s and the ETA.
        const progress = err.split("\n").filter((l) =>
          /^epoch 2\/2 \w+ .* · step \d+ · [\d.]+ images\/s · ETA \d+s · elapsed/.test(l)
        );
        assert.ok(progress.length >= 3, `progress lines with rate and ETA:\n${err}`);
        assert.match(err, /^epoch 1\/2: reward \d\.\d{4} ± \d\.\d{4}, step 1, .* ETA \d+/m);
        assert.match(err, /^time: {5}epoch 1 done after \d+s: about \S+ for the run, done ≈ /m);
        assert.match(err, /^report: .*report\.html$/m);
        assert.ok(!/step 1: loss/.test(err), "per-step diagnostics only with -v");
      },
    );

    await t.step("export rebuilds the run's LoRA from its checkpoint", async () => {
      const r = await cli(
        "export",
        run,
        "--format",
        "peft,kohya",
        "--format",
        "merged",
        "-o",
        join(dir, "exp"),
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^peft: .*adapter_model\.safetensors/m);
      assert.match(r.stdout, /^kohya: .*\.safetensors/m);
      assert.match(r.stdout, /^merged: .*model\.safetensors/m);
      assert.deepEqual(
        await Deno.readFile(join(dir, "exp", "peft", "adapter_model.safetensors")),
        await Deno.readFile(join(run, "export", "peft", "adapter_model.safetensors")),
        "the same weights as the trainer's own export",
      );
      const [ckpt] = [...Deno.readDirSync(join(run, "checkpoints"))].map((e) => e.name);
      const one = await cli("export", join(run, "checkpoints", ckpt), "-o", join(dir, "one"));
      assert.equal(one.code, 0, one.stderr);
      await Deno.stat(join(dir, "one", "adapter_config.json"));
      assertUsageError(await cli("export", run, "--format", "onnx"), /--format: expected peft/);
      assertUsageError(
        await cli("export", run, "--layout", "transformers-6"),
        /--layout: expected transformers-4 or transformers-5, got 'transformers-6'/,
      );
      assertUsageError(await cli("export", join(dir, "nothing")), /not found/);
      assertUsageError(await cli("export", dir), /neither a checkpoint folder/);
    });

    await t.step("export --layout, and inspect says which loaders read each export", async () => {
      const exp = join(dir, "exp5");
      const r = await cli(
        "export",
        run,
        "--format",
        "peft,diffusers,merged",
        "--layout",
        "transformers-5",
        "-o",
        exp,
      );
      assert.equal(r.code, 0, r.stderr);
      const keysOf = async (file: string): Promise<string[]> => {
        const bytes = await Deno.readFile(file);
        const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
        const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
        return Object.keys(header).filter((k) => k !== "__metadata__");
      };
      for (
        const [file, re] of [
          [join(exp, "peft", "adapter_model.safetensors"), /^base_model\.model\.encoder\./],
          [join(exp, "diffusers", "pytorch_lora_weights.safetensors"), /^text_encoder\.encoder\./],
          [join(exp, "merged", "model.safetensors"), /^(embeddings|encoder|final_layer_norm)\./],
          [
            join(dir, "exp", "peft", "adapter_model.safetensors"),
            /^base_model\.model\.text_model\./,
          ],
          [join(dir, "exp", "merged", "model.safetensors"), /^text_model\./],
        ] as const
      ) {
        const keys = await keysOf(file);
        assert.ok(keys.length > 0 && keys.every((k) => re.test(k)), `${file}: ${keys[0]}`);
      }

      const peft4 = await cli("inspect", join(dir, "exp", "peft"));
      assert.equal(peft4.code, 0, peft4.stderr);
      assert.match(
        peft4.stdout,
        /format: peft\n {2}layout: transformers-4 \(keys with text_model\.\)/,
      );
      assert.match(peft4.stdout, /lora: rank \d+, alpha \d+/);
      assert.match(peft4.stdout, /PeftModel\.from_pretrained\(.*\n {6}works: transformers 4 only/);
      assert.match(
        peft4.stdout,
        /pipe\.text_encoder\.load_adapter\(dir\)\n {6}works: transformers 4 and 5/,
      );
      assert.match(peft4.stdout, /not pipe\.load_lora_weights\(dir\)/);
      const peft5 = await cli("inspect", join(exp, "peft"));
      assert.match(peft5.stdout, /layout: transformers-5/);
      assert.match(peft5.stdout, /PeftModel\.from_pretrained\(.*\n {6}works: transformers 5 only/);
      const diff = await cli("inspect", join(exp, "diffusers", "pytorch_lora_weights.safetensors"));
      assert.equal(diff.code, 0, diff.stderr);
      assert.match(diff.stdout, /format: diffusers/);
      assert.match(diff.stdout, /pipe\.load_lora_weights\(file\)/);
      assert.doesNotMatch(diff.stdout, /warning:/);
      const kohya = await cli("inspect", join(dir, "exp", "kohya"));
      assert.match(kohya.stdout, /format: kohya/);
      assert.match(kohya.stdout, /AUTOMATIC1111/);
      assert.match(kohya.stdout, /ComfyUI/);
      assert.match(kohya.stdout, /diffusers issue #13984/);
      const merged5 = await cli("inspect", join(exp, "merged"));
      assert.match(merged5.stdout, /merged text encoder/);
      assert.match(merged5.stdout, /CLIPTextModel\.from_pretrained\(dir\)/);
      assert.match(merged5.stdout, /works: transformers 5 only/);
      assert.match(merged5.stdout, /warning: .*randomly initialised/);
      const json = JSON.parse((await cli("inspect", "--json", join(dir, "exp", "merged"))).stdout);
      assert.equal(json.format, "merged");
      assert.equal(json.layout, "transformers-4");
      assert.equal(json.loaders[0].works, "transformers 4 and 5");
    });

    await t.step("generate writes base and LoRA images and a grid", async () => {
      const out = join(dir, "gen");
      const r = await cli(
        "generate",
        TINY_SD,
        "--prompt",
        "a red circle",
        "-p",
        "a blue square",
        "--seeds",
        "0-1",
        "--steps",
        "2",
        "--backend",
        "wasm",
        "--lora",
        join(run, "export", "peft"),
        "--out",
        out,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /images: 8 in /);
      const index = JSON.parse(await Deno.readTextFile(join(out, "index.json")));
      assert.equal(index.images.length, 8);
      for (const img of index.images) await Deno.stat(img.file);
      const png = await Deno.readFile(join(out, "grid.png"));
      assert.deepEqual([...png.slice(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
      // Rows base / LoRA, columns prompt × seed, each 32 px image scaled to 256 px, with a label
      // margin on the left (row names) and on top (prompts).
      const grid = await decodeImage(png);
      assert.ok(grid.width > 4 * 256 + 5 * 8 + 40, `grid width ${grid.width}`);
      assert.ok(grid.height > 2 * 256 + 3 * 8 + 10, `grid height ${grid.height}`);
      const inkIn = (x0: number, y0: number, x1: number, y1: number) => {
        let n = 0;
        for (let y = y0; y < y1; y++) {
          for (let x = x0; x < x1; x++) if (grid.data[(y * grid.width + x) * 3] < 64) n++;
        }
        return n;
      };
      const left = grid.width - (4 * 256 + 5 * 8);
      const top = grid.height - (2 * 256 + 3 * 8);
      assert.ok(inkIn(0, top, left, grid.height) > 100, "row labels are drawn");
      assert.ok(inkIn(left, 0, grid.width, top) > 400, "column labels are drawn");
      assertUsageError(await cli("generate", TINY_SD), /at least one --prompt/);
      assertUsageError(
        await cli("generate", TINY_SD, "-p", "x", "--lora", join(dir, "missing")),
        /--lora .*missing: not found/,
      );
      assertUsageError(
        await cli("generate", TINY_SD, "-p", "x", "--steps", "0"),
        /--steps: expected an integer ≥ 1/,
      );
      assertUsageError(
        await cli("generate", join(dir, "no-model"), "-p", "x"),
        /model folder not found/,
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: Ctrl-C stops a run with exit code 130", async () => {
  const dir = await Deno.makeTempDir({ prefix: "texforce_cli_sigint_" });
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-webgpu",
        "cli.ts",
        "run",
        "examples/tiny_brightness.yaml",
        "--set",
        "train.epochs=1000",
        "--set",
        "backend=wasm",
        "--set",
        "output.saveImages=false",
        "--set",
        `output.dir=${dir}`,
      ],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stdout = new Response(child.stdout).text();
    const dec = new TextDecoder();
    let stderr = "";
    let sent = false;
    for await (const chunk of child.stderr) {
      stderr += dec.decode(chunk);
      if (!sent && /sampling/.test(stderr)) {
        child.kill("SIGINT");
        sent = true;
      }
    }
    const status = await child.status;
    await stdout;
    assert.ok(sent, stderr);
    assert.equal(status.code, 130, stderr);
    assert.match(stderr, /interrupt: stopping after the current step/);
    // The hint is the exact command that continues this run, --set flags included.
    // Under `deno task` (INIT_CWD set, and inherited by the child) it is the task's form.
    const task = Deno.env.get("INIT_CWD") !== undefined ? "deno task " : "";
    const hint =
      `${task}texforce run examples/tiny_brightness.yaml --set train.epochs=1000 --set ` +
      `backend=wasm --set output.saveImages=false --set output.dir=${dir} --resume`;
    assert.ok(stderr.includes(`continue this run with:\n  ${hint}`), stderr);
    assert.ok(!stderr.includes("    at "), stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Copy a safetensors file, adding one F32 tensor of `bytes` bytes as a sparse region. */
async function withPadding(from: string, to: string, bytes: number): Promise<void> {
  const src = await Deno.readFile(from);
  const n = Number(new DataView(src.buffer, src.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(src.subarray(8, 8 + n)));
  const data = src.subarray(8 + n);
  header.texforce_test_padding = {
    dtype: "F32",
    shape: [bytes / 4],
    data_offsets: [data.length, data.length + bytes],
  };
  const h = new TextEncoder().encode(JSON.stringify(header));
  const size = new Uint8Array(8);
  new DataView(size.buffer).setBigUint64(0, BigInt(h.length), true);
  const file = await Deno.open(to, { create: true, write: true, truncate: true });
  for (const part of [size, h, data]) await file.write(part);
  await file.truncate(8 + h.length + data.length + bytes);
  file.close();
}

Deno.test("cli: run --dry-run prints the plan and reads no weights", async () => {
  const dir = await Deno.makeTempDir({ prefix: "texforce_cli_dry_" });
  try {
    // A copy of the tiny model whose UNet file also holds an 8 GiB tensor (a sparse region of
    // zeros) that no config names: preflight parses the headers, which stay valid, and the dry
    // run sizes the weights from them; reading the file's data would take long and fill memory.
    const model = join(dir, "model");
    await Deno.mkdir(model);
    for await (const e of Deno.readDir(TINY_SD)) {
      const src = join(TINY_SD, e.name);
      if (e.isFile) {
        await Deno.copyFile(src, join(model, e.name));
        continue;
      }
      await Deno.mkdir(join(model, e.name));
      for await (const f of Deno.readDir(src)) {
        const to = join(model, e.name, f.name);
        if (f.name.endsWith(".safetensors") && e.name === "unet") {
          await withPadding(join(src, f.name), to, 8 * 2 ** 30);
        } else await Deno.copyFile(join(src, f.name), to);
      }
    }
    const pipeline = join(dir, "p.yaml");
    await Deno.writeTextFile(
      pipeline,
      stringify(tinyPipeline({ model, backend: "wasm", output: { dir: join(dir, "run") } })),
    );
    const t0 = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-webgpu", "cli.ts", "run", pipeline, "--dry-run"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Peak resident memory of the child, sampled from /proc while it runs (Linux).
    let peakKb = 0;
    const poll = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${child.pid}/status`));
        if (m) peakKb = Math.max(peakKb, Number(m[1]));
      } catch { /* exited */ }
    }, 5);
    const out = await child.output();
    clearInterval(poll);
    const seconds = (performance.now() - t0) / 1000;
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(
      stdout,
      /^dry run: .*p\.yaml is valid; nothing is trained and no weights are read/,
    );
    // 8 GiB of padding plus the tiny model's own weights.
    assert.match(stdout, /^model: {4}.*: 8\.6\d GB of weights on disk \(.*unet 8\.6\d GB/m);
    assert.match(stdout, /^backend: {2}wasm on WebAssembly/m);
    assert.match(stdout, /^plan: {5}1 epoch × 4 images \(2 batches of 2\), 2 DDIM steps/m);
    assert.match(stdout, /^total: {4}4 training images .* 2 optimizer steps$/m);
    assert.match(stdout, /^output: {3}.*run \(new\)$/m);
    await assert.rejects(() => Deno.stat(join(dir, "run")), "no run folder is created");
    // Loading 8 GiB is impossible within these bounds; both are far above what the dry run needs.
    assert.ok(seconds < 60, `dry run took ${seconds.toFixed(1)} s`);
    if (Deno.build.os === "linux") {
      assert.ok(peakKb > 0, "peak memory was sampled");
      assert.ok(peakKb < 600_000, `peak RSS ${(peakKb / 1024).toFixed(0)} MB`);
    }
    console.log(`dry run: ${seconds.toFixed(1)} s, peak RSS ${(peakKb / 1024).toFixed(0)} MB`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: --backend tensorflow without tfjs-node fails with one clear message", async () => {
  const r = await cli(
    "generate",
    TINY_SD,
    "-p",
    "x",
    "--steps",
    "1",
    "--backend",
    "tensorflow",
    "-o",
    "/dev/null/none",
  );
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^error: backend 'tensorflow' needs @tensorflow\/tfjs-node/m);
  assert.ok(!/already registered/.test(r.stderr), "no kernel registration warnings");
  // Deno's own "Download …" lines (its npm cache filling on a fresh machine) are not the CLI's.
  const lines = r.stderr.trim().split("\n")
    .filter((l) => !/^Download /.test(l.replaceAll("\u001b", "").replace(/\[[0-9;]*m/g, "")));
  assert.ok(lines.length <= 3, r.stderr);
});

Deno.test("cli: generate with several --lora draws a row for each and one with all", async () => {
  const dir = await Deno.makeTempDir({ prefix: "texforce_cli_gen_" });
  try {
    const out = join(dir, "gen");
    const r = await cli(
      "generate",
      TINY_SD,
      "-p",
      "a red circle",
      "--steps",
      "1",
      "--backend",
      "wasm",
      "--lora",
      fixture("sd-tiny", "lora_peft"),
      "--lora",
      fixture("sd-tiny", "lora_diffusers.safetensors"),
      "--out",
      out,
    );
    assert.equal(r.code, 0, r.stderr);
    const index = JSON.parse(await Deno.readTextFile(join(out, "index.json")));
    const variants = [...new Set(index.images.map((i: { variant: string }) => i.variant))];
    assert.deepEqual(variants, ["base", "lora-1", "lora-2", "lora"]);
    for (const v of variants) await Deno.stat(join(out, v as string));
    // Four rows of one 256 px image each, plus the label margin.
    const grid = await decodeImage(await Deno.readFile(join(out, "grid.png")));
    assert.ok(grid.height > 4 * 256, `grid height ${grid.height}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
