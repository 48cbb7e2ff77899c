// The progress model: the run plan's counts, the ETA clock, the terminal bar and plain lines,
// and a trainer that prints nothing unless the app passes callbacks.
import assert from "node:assert/strict";
import { join } from "node:path";
import { useBackend } from "../../core/backend.ts";
import {
  formatDuration,
  formatProgressLine,
  ProgressClock,
  progressPrinter,
  type TrainProgress,
} from "../../core/progress.ts";
import { planRun } from "../../core/run_plan.ts";
import { Trainer } from "../../core/trainer.ts";
import { disposeParts, fakeParts, fakePipeline } from "../_fake_parts.ts";

Deno.test("progress: the plan counts images, UNet calls and steps", () => {
  const p = fakePipeline("/tmp/x", { eval: { prompts: ["a", "b", "c"], seeds: [0, 1], every: 2 } });
  const plan = planRun(p);
  // 2 batches × 2 images; 4 samples in minibatches of 4 → 1 minibatch × 2 timesteps.
  assert.equal(plan.imagesPerEpoch, 4);
  assert.equal(plan.samplingUnetCallsPerEpoch, 2 * 4);
  assert.equal(plan.trainingPassesPerEpoch, 1 * 2);
  assert.equal(plan.optimizerStepsPerEpoch, 1);
  assert.equal(plan.evalRuns, 1 + 2, "before, after epochs 2 and 4");
  assert.equal(plan.total.evalImages, 3 * 6);
  assert.equal(plan.total.samplingUnetCalls, 4 * 8 + 3 * 2 * 4);
  assert.equal(planRun(p, 3).evalRuns, 1, "resumed at epoch 3: only epoch 4's");
  assert.equal(planRun(p, 3).total.images, 4);
});

Deno.test("progress: the clock's rate and ETA", () => {
  const plan = planRun(fakePipeline("/tmp/x"));
  const clock = new ProgressClock(plan, plan.epochs, 0);
  assert.equal(clock.snapshot(1000).etaSeconds, undefined, "nothing timed yet");
  // One sampling batch of 2 images took 2 s (of 2 s elapsed).
  clock.finished("batch", 2, 2);
  const a = clock.snapshot(2000);
  assert.equal(a.imagesPerSecond, 1);
  // 7 batches left at 2 s, 8 PPO passes estimated at 3 × 2 s / 4 steps × (4 / 2) = 3 s each.
  assert.ok(Math.abs(a.etaSeconds! - (7 * 2 + 8 * 3)) < 1e-9, String(a.etaSeconds));
  // Once a pass is timed its own mean is used, and the overhead beyond timed work scales it.
  clock.finished("pass", 1);
  const b = clock.snapshot(6000); // 6 s elapsed for 3 s of timed work: overhead ×2
  assert.ok(Math.abs(b.etaSeconds! - 2 * (7 * 2 + 7 * 1)) < 1e-9, String(b.etaSeconds));
  assert.ok(b.fraction > 0 && b.fraction < 1);
  assert.equal(formatDuration(185), "3m05s");
  assert.equal(formatDuration(7260), "2h01m");
});

const ESC = "\x1b";
const CLEAR = `\r${ESC}[K`;

function event(over: Partial<TrainProgress> = {}): TrainProgress {
  return {
    epoch: 2,
    epochs: 8,
    step: 3,
    phase: "sampling",
    done: 1,
    total: 2,
    fraction: 0.25,
    imagesPerSecond: 3.25,
    etaSeconds: 95,
    elapsedSeconds: 31,
    message: "",
    ...over,
  };
}

Deno.test("progress: a bar on a terminal, plain lines otherwise", async (t) => {
  await t.step("terminal: one line redrawn in place, log lines above it", () => {
    let out = "";
    const p = progressPrinter({ terminal: true, write: (s) => (out += s), columns: 120 });
    p.onProgress(event());
    assert.ok(out.startsWith(CLEAR), "the bar starts by clearing the line");
    assert.match(
      out.slice(CLEAR.length),
      /^\[█+░+\] 25% epoch 2\/8 sampling 1\/2 · step 3 · 3\.3 images\/s/,
    );
    assert.match(out, /ETA 1m35s/);
    assert.ok(!out.includes("\n"), "the bar is redrawn, not scrolled");
    p.log("epoch 2/8: reward 0.5");
    assert.ok(out.includes(`${CLEAR}epoch 2/8: reward 0.5\n[█`), "log line, then the bar again");
    p.log("step 4: loss", "detail");
    assert.ok(!out.includes("step 4: loss"), "detail lines only with verbose");
    p.close();
    assert.ok(out.endsWith(CLEAR));
    // A narrow terminal keeps the ETA and drops the details.
    let narrow = "";
    progressPrinter({ terminal: true, write: (s) => (narrow = s), columns: 60 }).onProgress(
      event(),
    );
    const shown = narrow.slice(CLEAR.length);
    assert.ok(shown.length <= 59, shown);
    assert.match(shown, /^\[█+░+\] 25% epoch 2\/8 sampling 1\/2 · ETA 1m35s$/);
  });
  await t.step("not a terminal: a line per interval and per epoch, no control codes", () => {
    let out = "";
    const p = progressPrinter({
      terminal: false,
      write: (s) => (out += s),
      intervalSeconds: 3600,
      verbose: true,
    });
    p.onProgress(event());
    p.onProgress(event({ done: 2 })); // same epoch, within the interval: not printed
    p.onProgress(event({ epoch: 3, done: 0 }));
    p.log("step 4: loss", "detail");
    const lines = out.trimEnd().split("\n");
    assert.deepEqual(lines, [
      "epoch 2/8 sampling 1/2 · step 3 · 3.3 images/s · ETA 1m35s · elapsed 31s",
      "epoch 3/8 sampling 0/2 · step 3 · 3.3 images/s · ETA 1m35s · elapsed 31s",
      "step 4: loss",
    ]);
    assert.ok(!out.includes("\r") && !out.includes(ESC), "no control codes");
    assert.equal(
      formatProgressLine(event({ epoch: 0, phase: "eval", etaSeconds: undefined })),
      "before training: eval 1/2 · step 3 · 3.3 images/s · ETA after the first batch · elapsed 31s",
    );
  });
});

Deno.test("progress: the trainer prints nothing without callbacks, and numbers epochs 1…N", async () => {
  await useBackend("wasm");
  const dir = await Deno.makeTempDir();
  const printed: string[] = [];
  const saved = {
    log: console.log,
    error: console.error,
    warn: console.warn,
    info: console.info,
    out: Deno.stdout.writeSync,
    err: Deno.stderr.writeSync,
  };
  const spy = (...a: unknown[]) => void printed.push(a.map(String).join(" "));
  try {
    console.log =
      console.error =
      console.warn =
      console.info =
        spy;
    Deno.stdout.writeSync = Deno.stderr.writeSync = (b: Uint8Array) => {
      printed.push(new TextDecoder().decode(b));
      return b.length;
    };
    const p = fakeParts();
    await new Trainer(fakePipeline(join(dir, "silent"), { train: { epochs: 2 } }), p).run();
    disposeParts(p);
  } finally {
    Object.assign(console, {
      log: saved.log,
      error: saved.error,
      warn: saved.warn,
      info: saved.info,
    });
    Deno.stdout.writeSync = saved.out;
    Deno.stderr.writeSync = saved.err;
  }
  assert.deepEqual(printed, [], "the library printed on its own");
  // With callbacks: events carry epoch i of N, rate and ETA; log lines come per epoch.
  const events: TrainProgress[] = [];
  const lines: string[] = [];
  const p = fakeParts();
  await new Trainer(fakePipeline(join(dir, "loud"), { train: { epochs: 2 } }), p, {
    onProgress: (e) => events.push(e),
    log: (l) => lines.push(l),
  }).run();
  disposeParts(p);
  await Deno.remove(dir, { recursive: true });
  assert.deepEqual([...new Set(events.map((e) => e.epoch))], [1, 2]);
  assert.ok(events.every((e) => e.epochs === 2));
  assert.deepEqual(
    [...new Set(events.map((e) => e.phase))],
    ["sampling", "rewards", "training", "checkpoint", "done"],
  );
  const late = events.filter((e) => e.epoch === 2);
  assert.ok(late.every((e) => e.etaSeconds !== undefined && e.imagesPerSecond! > 0));
  assert.equal(events.at(-1)!.fraction, 1);
  assert.match(lines.join("\n"), /^epoch 1\/2: reward .* ETA /m);
  assert.match(lines.join("\n"), /^time: {5}epoch 1 done after .* for the run/m);
});
