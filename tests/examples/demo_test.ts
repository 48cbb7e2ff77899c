// The demo end to end, shortened (`examples/demo.ts --quick`: 8 held-out images, one epoch of
// 4 images at 4 steps): it trains TexForce on the committed shapes model with the alignment
// reward plugin and writes the run folder, the LoRA in every format, the report with the
// held-out section and summary.json.
import assert from "node:assert/strict";
import { join } from "node:path";

Deno.test("demo: a shortened run writes summary, report and every LoRA export", async () => {
  const out = await Deno.makeTempDir({ prefix: "texforce-demo-" });
  try {
    const demo = new URL("../../examples/demo.ts", import.meta.url).pathname;
    const child = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-webgpu", demo, "--quick", "--out", out, "backend=wasm"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(child.stdout) + new TextDecoder().decode(child.stderr);
    assert.equal(child.code, 0, text);
    const summary = JSON.parse(await Deno.readTextFile(join(out, "summary.json")));
    for (const k of ["before", "after"]) {
      const s = summary.heldout[k];
      assert.equal(s.n, 8);
      assert.ok(s.mean >= 0 && s.mean <= 1, `${k} mean ${s.mean}`);
      assert.ok(s.stderr >= 0, `${k} stderr ${s.stderr}`);
    }
    assert.deepEqual(
      Object.keys(summary.per_attribute).sort(),
      ["background", "colour", "count", "position", "shape", "size"],
    );
    assert.ok(summary.wall_s > 0);
    for (
      const f of [
        "export/peft/adapter_model.safetensors",
        "export/peft/adapter_config.json",
        "export/diffusers/pytorch_lora_weights.safetensors",
        "export/kohya/texforce_lora.safetensors",
        "export/merged/model.safetensors",
        "heldout/before.png",
        "heldout/after.png",
        "metrics.jsonl",
      ]
    ) {
      assert.ok((await Deno.stat(join(out, f))).size > 0, f);
    }
    const report = await Deno.readTextFile(join(out, "report.html"));
    assert.match(report, /Held-out captions/);
    assert.match(report, /heldout\/after\.png/);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
