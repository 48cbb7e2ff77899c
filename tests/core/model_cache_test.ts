// ModelCache: one load per key, reference-counted disposal, failed loads not cached.
import assert from "node:assert/strict";
import { ModelCache } from "../../core/model_cache.ts";

Deno.test("ModelCache shares, counts references and forgets failures", async () => {
  const cache = new ModelCache();
  const disposed: string[] = [];
  const load = (v: string) => () => Promise.resolve({ v });
  const [a, b] = await Promise.all([
    cache.acquire("k", load("first"), (m) => disposed.push(m.v)),
    cache.acquire("k", load("second"), (m) => disposed.push(m.v)),
  ]);
  assert.equal(a.value, b.value, "concurrent acquires share one load");
  assert.equal(cache.loads, 1);
  a.release();
  a.release(); // idempotent: does not drop b's reference
  assert.deepEqual(disposed, []);
  b.release();
  assert.deepEqual(disposed, ["first"]);
  assert.deepEqual(cache.keys(), []);
  await assert.rejects(
    cache.acquire("bad", () => Promise.reject(new Error("no such folder")), () => {}),
    /no such folder/,
  );
  const ok = await cache.acquire("bad", load("retry"), () => {});
  assert.equal(ok.value.v, "retry", "a failed load is not cached");
  ok.release();
});
