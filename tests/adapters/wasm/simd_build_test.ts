// The committed SIMD binaries are what their sources build to (build_simd.ts, wabt).
import assert from "node:assert/strict";
import { buildSimdModule, simdModuleSources } from "../../../adapters/wasm/build_simd.ts";

Deno.test("wasm SIMD modules: the committed binaries are built from their sources", async (t) => {
  const dir = new URL("../../../adapters/wasm/", import.meta.url);
  for (const m of await simdModuleSources()) {
    await t.step(m.file, async () => {
      const committed = await Deno.readTextFile(new URL(m.file, dir));
      assert.equal(
        committed,
        await buildSimdModule(m),
        `${m.file} differs from ${m.source}: rebuild with deno run -A adapters/wasm/build_simd.ts`,
      );
    });
  }
});
