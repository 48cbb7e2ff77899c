// Every bad input is caught before a weight loads, by `validate` and by `run`, with an error
// naming the pipeline key and the file, and nothing written; plugin modules from outside the
// pipeline's folder are never imported without consent.
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { fixture, TINY_SD, tinyPipeline } from "../_helpers.ts";

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI with the permissions of `deno task texforce`. */
async function cli(...args: string[]): Promise<Result> {
  const task: string = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json"))).tasks.texforce;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...task.split(/\s+/).slice(1), ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { TEXFORCE_DEBUG: "" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyDir(join(from, e.name), join(to, e.name));
    else await Deno.copyFile(join(from, e.name), join(to, e.name));
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * `validate` and `run` both fail with exit 2 and a message matching every pattern, before any
 * model is loaded (train() logs the backend first), and the run folder is never created.
 */
async function assertCaught(file: string, outDir: string, ...patterns: RegExp[]): Promise<void> {
  for (const cmd of ["validate", "run"]) {
    const r = await cli(cmd, file);
    assert.equal(r.code, 2, `${cmd}: exit ${r.code}\n${r.stderr}`);
    for (const p of patterns) assert.match(r.stderr, p, `${cmd}:\n${r.stderr}`);
    assert.ok(!r.stderr.includes("    at "), `a stack trace:\n${r.stderr}`);
    assert.ok(!r.stderr.includes("backend:"), `${cmd} got as far as loading models`);
    assert.ok(!(await exists(outDir)), `${cmd} created ${outDir}`);
  }
}

Deno.test("preflight: bad inputs are caught before weights load", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "texforce_preflight_" });
  const pipeline = async (name: string, extra: Record<string, unknown>) => {
    const file = join(dir, `${name}.yaml`);
    const out = join(dir, "runs", name);
    await Deno.writeTextFile(file, stringify(tinyPipeline({ output: { dir: out }, ...extra })));
    return { file, out };
  };
  /** A copy of the tiny model with `damage` applied. */
  const model = async (name: string, damage: (m: string) => Promise<void>) => {
    const m = join(dir, name);
    await copyDir(TINY_SD, m);
    await damage(m);
    return m;
  };
  try {
    await t.step("the tiny model passes", async () => {
      const { file, out } = await pipeline("good", {});
      const r = await cli("validate", file);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(!(await exists(out)));
    });

    await t.step("a truncated UNet safetensors file", async () => {
      const m = await model("truncated", async (m) => {
        const f = join(m, "unet", "diffusion_pytorch_model.safetensors");
        const bytes = await Deno.readFile(f);
        await Deno.writeFile(f, bytes.subarray(0, bytes.length - 1000));
      });
      const { file, out } = await pipeline("truncated", { model: m });
      await assertCaught(
        file,
        out,
        /model: .*unet\/diffusion_pytorch_model\.safetensors.*truncated/,
      );
    });

    await t.step("a missing vocab.json", async () => {
      const m = await model("novocab", (m) => Deno.remove(join(m, "tokenizer", "vocab.json")));
      const { file, out } = await pipeline("novocab", { model: m });
      await assertCaught(file, out, /model: .*tokenizer\/vocab\.json: file not found/);
    });

    await t.step("a vocab.json that is not JSON", async () => {
      const m = await model(
        "badvocab",
        (m) => Deno.writeTextFile(join(m, "tokenizer", "vocab.json"), '{"a": 1,'),
      );
      const { file, out } = await pipeline("badvocab", { model: m });
      await assertCaught(file, out, /model: .*tokenizer\/vocab\.json: invalid JSON/);
    });

    await t.step("text encoder weights lacking a layer their config implies", async () => {
      const m = await model("nolayer", async (m) => {
        const f = join(m, "text_encoder", "config.json");
        const c = JSON.parse(await Deno.readTextFile(f));
        c.num_hidden_layers += 1;
        await Deno.writeTextFile(f, JSON.stringify(c));
      });
      const { file, out } = await pipeline("nolayer", { model: m });
      await assertCaught(
        file,
        out,
        /model: .*text_encoder\/model\.safetensors: no tensor '.*encoder\.layers\.\d+\.self_attn\.q_proj\.weight'/,
      );
    });

    await t.step("a UNet whose conv_in does not match its config", async () => {
      const m = await model("unetcfg", async (m) => {
        const f = join(m, "unet", "config.json");
        const c = JSON.parse(await Deno.readTextFile(f));
        c.in_channels = 9;
        await Deno.writeTextFile(f, JSON.stringify(c));
      });
      const { file, out } = await pipeline("unetcfg", { model: m });
      await assertCaught(
        file,
        out,
        /model: .*'conv_in\.weight' has shape \[32,4,3,3\].*\[32,9,3,3\]/,
      );
    });

    await t.step(
      "an aesthetic reward whose CLIP folder lacks preprocessor_config.json",
      async () => {
        const clip = join(dir, "clip-no-preprocessor");
        await copyDir(fixture("clip-tiny", "clip"), clip);
        await Deno.remove(join(clip, "preprocessor_config.json"));
        const { file, out } = await pipeline("aesthetic", {
          rewards: [{
            use: "aesthetic",
            options: { clipModel: clip, head: fixture("clip-tiny", "aesthetic_mlp.safetensors") },
          }],
        });
        await assertCaught(
          file,
          out,
          /rewards\[0\]\.options\.clipModel: .*clip-no-preprocessor\/preprocessor_config\.json: file not found/,
        );
      },
    );

    await t.step("an aesthetic head file that is missing", async () => {
      const { file, out } = await pipeline("nohead", {
        rewards: [{
          use: "aesthetic",
          options: {
            clipModel: fixture("clip-tiny", "clip"),
            head: join(dir, "nohead.safetensors"),
          },
        }],
      });
      await assertCaught(
        file,
        out,
        /rewards\[0\]\.options\.head: .*nohead\.safetensors: file not found/,
      );
    });

    await t.step("an output folder that cannot be created", async () => {
      const blocker = join(dir, "a-file");
      await Deno.writeTextFile(blocker, "not a folder");
      const file = join(dir, "unwritable.yaml");
      await Deno.writeTextFile(
        file,
        stringify(tinyPipeline({ output: { dir: join(blocker, "run") } })),
      );
      for (const cmd of ["validate", "run"]) {
        const r = await cli(cmd, file);
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, /output\.dir: .*a-file\/run cannot be created: .*a-file is a file/);
        assert.ok(!r.stderr.includes("backend:"));
      }
      assert.equal(await Deno.readTextFile(blocker), "not a folder");
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("trust: plugin modules from outside the pipeline's folder need consent", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "texforce_trust_" });
  try {
    const marker = join(dir, "IMPORTED");
    const outside = join(dir, "downloads");
    await Deno.mkdir(outside);
    // A module that does something the moment it is imported.
    const evil = join(outside, "evil.ts");
    await Deno.writeTextFile(
      evil,
      `Deno.writeTextFileSync(${JSON.stringify(marker)}, "imported");\n` +
        `export * from ${
          JSON.stringify(new URL("../../rewards/brightness.ts", import.meta.url).href)
        };\n`,
    );
    const pipelines = join(dir, "pipelines");
    await Deno.mkdir(pipelines);
    const write = async (name: string, use: string) => {
      const file = join(pipelines, `${name}.yaml`);
      await Deno.writeTextFile(
        file,
        stringify(tinyPipeline({
          rewards: [{ use }],
          output: { dir: join(dir, "runs", name) },
        })),
      );
      return file;
    };

    await t.step(
      "a path outside the folder: refused by validate and run, nothing imported",
      async () => {
        const file = await write("outside", "../downloads/evil.ts");
        for (const cmd of ["validate", "run"]) {
          const r = await cli(cmd, file);
          assert.equal(r.code, 2, `${cmd}: ${r.stderr}`);
          assert.match(r.stderr, /rewards\[0\]\.use: not importing \.\.\/downloads\/evil\.ts/);
          assert.match(
            r.stderr,
            /rewards\[0\]\.use: '\.\.\/downloads\/evil\.ts' is a file outside the pipeline's folder.*--allow-plugin \.\.\/downloads\/evil\.ts/,
          );
          assert.ok(!(await exists(marker)), `${cmd} imported the module`);
          assert.ok(!(await exists(join(dir, "runs"))));
        }
      },
    );

    await t.step(
      "remote and registry specifiers are refused without a network access",
      async () => {
        for (const use of ["https://example.invalid/evil.ts", "npm:evil-reward@1", "jsr:@evil/r"]) {
          const file = await write("remote", use);
          const r = await cli("validate", file);
          assert.equal(r.code, 2, r.stderr);
          assert.ok(r.stderr.includes(`rewards[0].use: '${use}' is a`), r.stderr);
          assert.match(r.stderr, /not imported without consent/);
        }
      },
    );

    await t.step(
      "a symbolic link inside the folder to a file outside counts as outside",
      async () => {
        await Deno.symlink(evil, join(pipelines, "linked.ts"));
        const file = await write("linked", "./linked.ts");
        const r = await cli("validate", file);
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, /is a file outside the pipeline's folder/);
        assert.ok(!(await exists(marker)));
      },
    );

    await t.step(
      "--allow-plugin, or texforce.allow beside the pipeline, gives consent",
      async () => {
        const file = await write("outside", "../downloads/evil.ts");
        const r = await cli("validate", file, "--allow-plugin", "../downloads/evil.ts");
        assert.equal(r.code, 0, r.stderr);
        assert.match(
          r.stderr,
          /rewards\[0\]\.use: importing \.\.\/downloads\/evil\.ts \(a file outside the pipeline's folder, allowed\)/,
        );
        assert.ok(await exists(marker));
        await Deno.remove(marker);
        await Deno.writeTextFile(
          join(pipelines, "texforce.allow"),
          "# mine\n../downloads/evil.ts\n",
        );
        const r2 = await cli("validate", file);
        assert.equal(r2.code, 0, r2.stderr);
        assert.ok(await exists(marker));
        await Deno.remove(join(pipelines, "texforce.allow"));
      },
    );

    await t.step("modules inside the pipeline's folder load as before", async () => {
      const r = await cli("validate", join(ROOT, "examples", "custom_reward.yaml"));
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /rewards\[0\]\.use: importing \.\/custom_reward\/mod\.ts \(inside/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
