// The loader table printed by `inspect` and help agrees with the verdicts the interop check
// asserts against the real libraries (tests/adapters/lora/lora_interop_test.ts).
import assert from "node:assert/strict";
import {
  type LoaderCall,
  loaderVerdict,
  type LoraExportFormat,
  loraLoaders,
} from "../../../adapters/lora/lora_loaders.ts";
import { EXPORT_LAYOUTS, type ExportLayout } from "../../../core/pipeline_schema.ts";

const TF4 = { transformers: "4.57.6", peft: "0.21.0", diffusers: "0.33.1" };
const TF5 = { transformers: "5.18.0", peft: "0.21.0", diffusers: "0.40.0.dev0" };

/** The Python call a printed loader line stands for. */
function callOf(text: string): LoaderCall | null {
  for (
    const c of [
      "PeftModel.from_pretrained",
      "pipe.text_encoder.load_adapter",
      "pipe.load_lora_weights",
      "CLIPTextModel.from_pretrained",
    ] as const
  ) if (text.startsWith(c)) return c;
  return null;
}

Deno.test("loader table", async (t) => {
  await t.step("every printed Python loader says the transformers majors it works on", () => {
    const cases: [LoraExportFormat, ExportLayout | null][] = [
      ...(["merged", "peft", "diffusers"] as const).flatMap((f) =>
        EXPORT_LAYOUTS.map((l) => [f, l] as [LoraExportFormat, ExportLayout])
      ),
      ["kohya", null],
    ];
    for (const [format, layout] of cases) {
      const uses = loraLoaders(format, layout);
      assert.ok(uses.some((u) => callOf(u.call)), `${format} ${layout}: no Python loader`);
      for (const u of uses) {
        const call = callOf(u.call);
        if (!call) continue;
        const on4 = loaderVerdict(format, layout, call, TF4).reads;
        const on5 = loaderVerdict(format, layout, call, TF5).reads;
        const what = `${format} ${layout} ${call}: '${u.works}'`;
        assert.equal(/transformers 4/.test(u.works), on4, what);
        assert.equal(/transformers (4 and )?5/.test(u.works), on5, what);
      }
    }
  });

  await t.step("the measured facts the docs rely on", () => {
    // The default layout loads with every call on transformers 4 ...
    assert.ok(loaderVerdict("peft", "transformers-4", "PeftModel.from_pretrained", TF4).reads);
    assert.ok(
      loaderVerdict("merged", "transformers-4", "CLIPTextModel.from_pretrained", TF5).reads,
    );
    assert.ok(loaderVerdict("diffusers", "transformers-4", "pipe.load_lora_weights", TF5).reads);
    // ... but PeftModel.from_pretrained needs the layout of the running major.
    const v = loaderVerdict("peft", "transformers-4", "PeftModel.from_pretrained", TF5);
    assert.equal(v.reads, false);
    assert.match(v.reason!, /--layout transformers-5/);
    // pipe.load_lora_weights never reads a PEFT folder.
    for (const s of [TF4, TF5]) {
      for (const l of EXPORT_LAYOUTS) {
        assert.equal(loaderVerdict("peft", l, "pipe.load_lora_weights", s).reads, false);
      }
    }
    // The upstream bug is named where kohya fails.
    assert.match(
      loaderVerdict("kohya", null, "pipe.load_lora_weights", TF5).reason!,
      /diffusers issue #13984/,
    );
    assert.match(loraLoaders("kohya", null).map((u) => u.caveat ?? "").join(" "), /#13984/);
  });
});
