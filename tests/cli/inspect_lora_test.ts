// `texforce inspect` on LoRA files it did not write: the warnings a user needs.
import assert from "node:assert/strict";
import { join } from "node:path";
import { inspectExport, isExportPath } from "../../cli/_inspect_lora.ts";
import { readLora } from "../../adapters/lora/lora_formats.ts";
import { type WritableTensor, writeSafetensors } from "../../core/io/safetensors.ts";
import { fixture, TINY_SD } from "../_helpers.ts";

Deno.test("inspect on LoRA files", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "texforce_inspect_lora_" });
  try {
    await t.step("a diffusers file with alpha only in its metadata is flagged", async () => {
      // What texforce wrote before the scale was folded: diffusers 0.33 reads it at scale 1.
      const peft = await readLora(fixture("sd-tiny", "lora_peft"));
      const tensors: Record<string, WritableTensor> = {};
      for (const [module, m] of peft.modules) {
        const stem = `text_encoder.text_model.${module}.lora_linear_layer`;
        tensors[`${stem}.down.weight`] = { dtype: "F32", shape: m.down.shape, data: m.down.data };
        tensors[`${stem}.up.weight`] = { dtype: "F32", shape: m.up.shape, data: m.up.data };
      }
      const file = join(dir, "old.safetensors");
      await writeSafetensors(file, tensors, {
        lora_adapter_metadata: JSON.stringify({
          "text_encoder.r": 4,
          "text_encoder.lora_alpha": 8,
        }),
      });
      const s = await inspectExport(file);
      assert.equal(s.format, "diffusers");
      assert.equal(s.layout, "transformers-4");
      assert.equal(s.lora?.scale, 2);
      assert.equal(s.warnings.length, 1);
      assert.match(s.warnings[0], /before 0\.34 ignores it and loads this at scale 1 instead of 2/);
    });

    await t.step("fixtures: layout and format are told apart", async () => {
      const d = await inspectExport(fixture("sd-tiny", "lora_diffusers.safetensors"));
      assert.equal(d.format, "diffusers");
      assert.equal(d.layout, "transformers-5");
      assert.deepEqual(d.warnings, []);
      const p = await inspectExport(fixture("sd-tiny", "lora_peft"));
      assert.equal(p.format, "peft");
      assert.equal(p.layout, "transformers-5");
      assert.match(p.loaders[0].works, /transformers 5 only/);
      const m = await inspectExport(join(TINY_SD, "text_encoder"));
      assert.equal(m.format, "merged");
      assert.equal(m.layout, "transformers-5");
      assert.match(m.warnings[0], /randomly initialised/);
    });

    await t.step("a model folder is not an export", async () => {
      assert.equal(await isExportPath(TINY_SD), false);
      assert.equal(await isExportPath(fixture("sd-tiny", "lora_peft")), true);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
