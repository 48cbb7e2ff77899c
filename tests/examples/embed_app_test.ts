// examples/embed_app is a separate Deno app that uses texforce by package name (linked to this
// checkout with deno.json "links"): it trains, generates with the LoRA and scores the image.
// Everything it prints is its own: the library stays silent. The README's Embedding section
// shows exactly its code.
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const APP = join(ROOT, "examples", "embed_app");

Deno.test("embed app: a separate app uses @texforce/core by name", async (t) => {
  await t.step("it imports the package by name, not by path", async () => {
    const config = JSON.parse(await Deno.readTextFile(join(APP, "deno.json")));
    assert.equal(config.imports["@texforce/core"], "jsr:@texforce/core@^0.1.0");
    assert.deepEqual(config.links, ["../.."]);
    const main = await Deno.readTextFile(join(APP, "main.ts"));
    assert.match(main, /from "@texforce\/core"/);
    assert.ok(!/from "\.\.?\//.test(main), "no relative imports");
  });

  await t.step("the README's Embedding snippet is the app's code", async () => {
    const readme = await Deno.readTextFile(join(ROOT, "README.md"));
    const main = await Deno.readTextFile(join(APP, "main.ts"));
    assert.ok(readme.includes("```ts\n" + main + "```"), "README.md shows main.ts verbatim");
  });

  await t.step("it trains, generates and scores; only the app prints", async () => {
    const dir = await Deno.makeTempDir({ prefix: "texforce_embed_" });
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        // -q: Deno's own notices (downloads and lockfile updates on a fresh clone) are not the
        // app's output; only what the library or the app prints counts here.
        args: ["run", "-q", "-A", "main.ts", `output.dir=${join(dir, "run")}`, "train.epochs=1"],
        cwd: APP,
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
      const dec = new TextDecoder();
      const stdout = dec.decode(out.stdout);
      const stderr = dec.decode(out.stderr);
      assert.equal(out.code, 0, `${stdout}\n${stderr}`);
      assert.equal(stderr, "", "nothing on stderr");
      const lines = stdout.trimEnd().split("\n");
      for (const l of lines) assert.match(l, /^app: /, `a line the app did not print: ${l}`);
      assert.match(stdout, /^app: epoch 1\/1 sampling 0\/1 · step 0/m);
      assert.match(stdout, /^app: trained to step 1, checkpoint .*step-00000001$/m);
      assert.match(lines.at(-1)!, /^app: image 32×32×3, brightness 0\.\d{4}$/);
      await Deno.stat(join(dir, "run", "export", "peft", "adapter_model.safetensors"));
      await Deno.stat(join(dir, "run", "report.html"));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});
