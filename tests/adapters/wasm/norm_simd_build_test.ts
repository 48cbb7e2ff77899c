// The committed SIMD binaries are what norm_simd.wat builds to (build_norm_simd.ts, wabt).
import assert from "node:assert/strict";
import { buildNormSimdModule } from "../../../adapters/wasm/build_norm_simd.ts";

Deno.test("norm SIMD: _norm_simd_wasm.ts is built from norm_simd.wat", async () => {
  const dir = new URL("../../../adapters/wasm/", import.meta.url);
  const wat = await Deno.readTextFile(new URL("norm_simd.wat", dir));
  const committed = await Deno.readTextFile(new URL("_norm_simd_wasm.ts", dir));
  assert.equal(
    committed,
    await buildNormSimdModule(wat),
    "rebuild with: deno run -A adapters/wasm/build_norm_simd.ts",
  );
});
