// The packed product's job protocol (adapters/wasm/_gemm_slots.ts), without threads: every
// panel is claimed exactly once, a claim for another job's sequence number takes nothing, and
// a failing share is reported and still ends the job (its panels, and the ones given up, count
// as completed); a job's take caps each claim.
import assert from "node:assert/strict";
import {
  giveUpPanels,
  JOB,
  PANELS_PER_TAKE,
  SLOT,
  slotAt,
  takePanels,
  takeSize,
  ticketOf,
} from "../../../adapters/wasm/_gemm_slots.ts";

function post(control: Int32Array, seq: number, panels: number): void {
  control[JOB.panels] = panels;
  Atomics.store(control, JOB.completed, 0);
  Atomics.store(control, JOB.ticket, ticketOf(seq));
  Atomics.store(control, JOB.seq, seq);
}

Deno.test("gemm slots: panels claimed once each, stale jobs take none, failures end the job", async (t) => {
  const control = new Int32Array(new SharedArrayBuffer(4 * slotAt(2)));

  await t.step("every panel once, in claims shrinking to single panels", () => {
    for (const panels of [10, 40]) {
      post(control, 7, panels);
      const runs: [number, number][] = [];
      takePanels(control, (p0, p1) => runs.push([p0, p1]), 7);
      const want: [number, number][] = [];
      for (let p = 0; p < panels; p += takeSize(panels - p)) {
        want.push([p, p + takeSize(panels - p)]);
      }
      assert.deepEqual(runs, want);
      assert.equal(control[JOB.completed], panels);
      takePanels(control, () => assert.fail("no panel is left"), 7);
    }
    // A quarter of what is left, at most PANELS_PER_TAKE, at least one.
    assert.deepEqual([40, 16, 10, 7, 3, 1].map((n) => takeSize(n)), [
      PANELS_PER_TAKE,
      4,
      2,
      1,
      1,
      1,
    ]);
  });

  await t.step("a job's take caps its claims (attention pairs: one at a time)", () => {
    post(control, 10, 40);
    control[JOB.take] = 1;
    const runs: [number, number][] = [];
    takePanels(control, (p0, p1) => runs.push([p0, p1]), 10);
    assert.deepEqual(runs, Array.from({ length: 40 }, (_, p) => [p, p + 1]));
    assert.equal(control[JOB.completed], 40);
    control[JOB.take] = 0;
  });

  await t.step("a thread holding an older job's number takes nothing", () => {
    post(control, 8, 4);
    takePanels(control, () => assert.fail("job 7 is over"), 7);
    assert.equal(control[JOB.completed], 0);
    takePanels(control, () => {}, 8);
    assert.equal(control[JOB.completed], 4);
  });

  await t.step("a failing share is reported, counted, and the rest given up", () => {
    post(control, 9, 12);
    const failedAt = slotAt(1) + SLOT.failed;
    assert.throws(() =>
      takePanels(
        control,
        () => {
          throw new Error("trap");
        },
        9,
        failedAt,
      ), /trap/);
    assert.equal(control[failedAt], 9, "the failure names the job");
    assert.equal(control[JOB.completed], takeSize(12), "the claimed panels count");
    giveUpPanels(control, 9);
    assert.equal(control[JOB.completed], 12, "the job ends");
  });
});
