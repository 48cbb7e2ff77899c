// Advantages as DDPO's PerPromptStatTracker computes them, on numbers worked out by hand.
import assert from "node:assert/strict";
import { normalizeAdvantages, PerPromptTracker } from "../../core/advantages.ts";

function close(actual: number[], expected: number[], what: string): void {
  assert.equal(actual.length, expected.length, what);
  for (const [i, e] of expected.entries()) {
    assert.ok(
      Math.abs(actual[i] - e) <= 1e-9 * Math.max(1, Math.abs(e)),
      `${what}[${i}]: ${actual[i]} vs ${e}`,
    );
  }
}

/** Population mean and std, as numpy's defaults. */
function stats(xs: number[]): [number, number] {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  return [m, Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length)];
}

Deno.test("advantages", async (t) => {
  await t.step("global normalisation: (r − mean) / (std + 1e-8) over the batch", () => {
    const r = [1, 2, 3, 6];
    const [m, s] = stats(r);
    close(normalizeAdvantages(r), r.map((x) => (x - m) / (s + 1e-8)), "global");
  });

  await t.step("below minCount a prompt uses the batch statistics", () => {
    const tracker = new PerPromptTracker(8, 3);
    const prompts = ["cat", "cat", "dog", "dog"];
    const rewards = [1, 3, 10, 14];
    const [m, s] = stats(rewards);
    close(tracker.update(prompts, rewards), rewards.map((x) => (x - m) / (s + 1e-6)), "batch");
  });

  await t.step("from minCount on, each prompt uses its own buffer", () => {
    const tracker = new PerPromptTracker(8, 3);
    tracker.update(["cat", "cat", "dog", "dog"], [1, 3, 10, 14]);
    // Now cat has [1, 3, 5] (3 ≥ minCount), dog [10, 14, 20].
    const adv = tracker.update(["cat", "dog"], [5, 20]);
    const [cm, cs] = stats([1, 3, 5]);
    const [dm, ds] = stats([10, 14, 20]);
    close(adv, [(5 - cm) / (cs + 1e-6), (20 - dm) / (ds + 1e-6)], "per prompt");
    // The batch statistics would give ±1: the per-prompt values differ from them.
    assert.ok(Math.abs(adv[0] + 1) > 0.1 && Math.abs(adv[1] - 1) > 0.1);
  });

  await t.step("the buffer keeps only the last bufferSize rewards", () => {
    const tracker = new PerPromptTracker(3, 1);
    tracker.update(["p", "p", "p"], [100, 1, 2]);
    const adv = tracker.update(["p"], [3]);
    const [m, s] = stats([1, 2, 3]);
    close(adv, [(3 - m) / (s + 1e-6)], "window");
    assert.deepEqual(tracker.getState().buffers.p, [1, 2, 3]);
  });

  await t.step("state round trip continues identically", () => {
    const a = new PerPromptTracker(4, 2);
    a.update(["x", "y", "x"], [1, 2, 4]);
    const b = new PerPromptTracker(4, 2);
    b.setState(a.getState());
    close(b.update(["x", "y"], [7, 3]), a.update(["x", "y"], [7, 3]), "resumed");
  });
});
