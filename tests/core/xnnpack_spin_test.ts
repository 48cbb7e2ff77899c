// The XNNPACK worker-spin patch of tfjs-backend-wasm's threaded binary (core/_xnnpack_spin.ts):
// the site is found once in the installed package's binary and only its three bytes change,
// the patched binary is valid WebAssembly, anything unexpected leaves the stock binary in use,
// and the written copy is reused.
import assert from "node:assert/strict";
import {
  patchedThreadedWasm,
  patchWorkerSpin,
  THREADED_SIMD_WASM,
  WORKER_SPIN_ITERATIONS,
} from "../../core/_xnnpack_spin.ts";

const SITE = [0x41, 0xc0, 0x84, 0x3d, 0x21, 7, 0x20, 6, 0x41, 2, 0x71, 0x45, 4, 0x40];
const distDir = new URL(".", import.meta.resolve("@tensorflow/tfjs-backend-wasm")).pathname;

Deno.test("XNNPACK worker spin patch", async (t) => {
  await t.step("a synthetic site: the count is rewritten as a 3-byte LEB128", () => {
    const binary = new Uint8Array([1, 2, ...SITE, 9]);
    const out = patchWorkerSpin(binary, 5)!;
    assert.deepEqual([...out.slice(3, 6)], [0x85, 0x80, 0x00]);
    assert.deepEqual([...out.slice(0, 3)], [1, 2, 0x41]);
    assert.deepEqual([...out.slice(6)], [...binary.slice(6)], "nothing else changes");
    assert.deepEqual([...patchWorkerSpin(binary, 20000)!.slice(3, 6)], [0xa0, 0x9c, 0x01]);
  });

  await t.step("no site, or two: null (the stock binary stays)", () => {
    assert.equal(patchWorkerSpin(new Uint8Array([...SITE.slice(0, 4), 0x20]), 5), null);
    assert.equal(patchWorkerSpin(new Uint8Array([...SITE, ...SITE]), 5), null);
  });

  await t.step("counts the worker loop cannot count down to: refused", () => {
    for (const bad of [0, 3, 7, -5, 1 << 21]) {
      assert.throws(() => patchWorkerSpin(new Uint8Array(SITE), bad), /positive multiple of 5/);
    }
  });

  await t.step("the installed tfjs binary: one site, three bytes, still valid", async () => {
    const stock = await Deno.readFile(distDir + THREADED_SIMD_WASM);
    const patched = patchWorkerSpin(stock, WORKER_SPIN_ITERATIONS);
    assert.ok(patched, "the spin site is in tfjs-backend-wasm's threaded build");
    const changed = [...stock.keys()].filter((i) => stock[i] !== patched[i]);
    assert.equal(changed.length, 3);
    assert.equal(changed[2] - changed[0], 2);
    assert.ok(WebAssembly.validate(new Uint8Array(patched)));
  });

  await t.step("the patched copy is written once and reused", async () => {
    const first = await patchedThreadedWasm(distDir);
    assert.ok(first !== null && first.endsWith(THREADED_SIMD_WASM));
    const stat = await Deno.stat(first);
    assert.equal(await patchedThreadedWasm(distDir), first);
    assert.equal((await Deno.stat(first)).mtime?.getTime(), stat.mtime?.getTime(), "not rewritten");
    assert.equal(await patchedThreadedWasm("/nonexistent/"), null);
  });
});
