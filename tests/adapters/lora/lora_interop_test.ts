// The interoperability check as a test: every export × loader × Python stack behaves as the
// documented loader table (adapters/lora/lora_loaders.ts) says. Needs a Python with torch,
// transformers and peft (diffusers optional), named by TEXFORCE_INTEROP_PYTHONS (see
// tests/interop/run_lora_interop.ts); without one it prints why and checks nothing.
import assert from "node:assert/strict";
import {
  formatTable,
  pythonStacks,
  runInterop,
  stackLabel,
} from "../../interop/run_lora_interop.ts";

Deno.test("LoRA exports load as documented in transformers, peft and diffusers", async () => {
  const { cells, reports, skipped } = await runInterop({ stacks: pythonStacks() });
  for (const s of skipped) console.log(`  skipped: ${s}`);
  if (reports.length === 0) {
    console.log(
      "  interop not checked: no Python with torch, transformers and peft " +
        "(set TEXFORCE_INTEROP_PYTHONS, see tests/interop/run_lora_interop.ts)",
    );
    return;
  }
  console.log(formatTable(cells));
  const bad = cells.filter((c) => !c.ok).map((c) =>
    `${c.stack}: ${c.call} on ${c.name}: ${
      c.expected ? "documented as loading" : "documented as not loading"
    } (error ${c.error ?? "none"}, warnings ${c.warnings?.length ?? 0}, max err ${c.max_error})`
  );
  assert.deepEqual(bad, []);
  // Every format loads with at least one call on every stack that has diffusers, except kohya
  // on transformers 5 (diffusers issue #13984).
  for (const r of reports) {
    const label = stackLabel(r.stack);
    for (const format of ["merged", "peft", "diffusers", "kohya"]) {
      const passing = cells.filter((c) => c.stack === label && c.format === format && c.loads);
      if (format === "kohya" && Number(r.stack.transformers.split(".")[0]) >= 5) continue;
      if ((format === "diffusers" || format === "kohya") && !r.stack.diffusers) continue;
      assert.ok(passing.length > 0, `${label}: no loader reads the ${format} export`);
    }
  }
});
