// A run never loses or corrupts what it made: the real command line (with the permissions of
// `deno task texforce`) trains the fake parts of _fake_parts.ts, is killed with SIGKILL at six
// points of an epoch and resumed, stopped with SIGTERM/SIGHUP, and hit by a full disk while
// checkpointing; every run ends bit for bit where an uninterrupted run ends, and metrics.jsonl
// holds each row once.
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { latestCheckpoint, listCheckpoints, loadCheckpoint } from "../../core/checkpoint.ts";
import { TINY_SD } from "../_helpers.ts";

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const FAKE_PLUGINS = new URL("../_fake_plugins.ts", import.meta.url).href;

/** The flags of `deno task texforce` (deno.json), so the tests run with its permissions. */
async function taskArgs(): Promise<string[]> {
  const task: string = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json"))).tasks.texforce;
  const words = task.split(/\s+/);
  assert.equal(words[0], "deno");
  assert.ok(!words.includes("-A") && !words.includes("--allow-all"), task);
  return words.slice(1);
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the CLI; with `killAt`, send `signal` once stderr reports the armed fault point. */
async function cli(
  args: string[],
  opts: { fault?: string; signal?: Deno.Signal } = {},
): Promise<Result> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...await taskArgs(), ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { TEXFORCE_FAULT: opts.fault ?? "", TEXFORCE_DEBUG: "" },
  }).spawn();
  const dec = new TextDecoder();
  let stderr = "";
  let sent = false;
  const errDone = (async () => {
    for await (const chunk of child.stderr) {
      stderr += dec.decode(chunk, { stream: true });
      if (opts.signal && !sent && stderr.includes("texforce-fault: ")) {
        sent = true;
        child.kill(opts.signal);
      }
    }
  })();
  const outDone = new Response(child.stdout).text();
  const [status, stdout] = await Promise.all([child.status, outDone, errDone]);
  if (opts.signal) assert.ok(sent, `the fault ${opts.fault} was never reached:\n${stderr}`);
  return { code: status.code, stdout, stderr };
}

function ok(r: Result, what: string): void {
  assert.equal(r.code, 0, `${what}: exit ${r.code}\n${r.stderr}`);
}

/** A pipeline on the fake parts, in `dir` (with the plugin module beside it). */
async function fakeRun(dir: string, extra: Record<string, unknown> = {}): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    join(dir, "fake.ts"),
    `export * from ${JSON.stringify(FAKE_PLUGINS)};\n`,
  );
  const file = join(dir, "fault.yaml");
  await Deno.writeTextFile(
    file,
    stringify({
      name: "fault",
      model: TINY_SD,
      backend: "cpu",
      seed: 7,
      encoder: { use: "./fake.ts" },
      sampler: { use: "./fake.ts", steps: 4, batchSize: 4 },
      rewards: [{ use: "brightness" }],
      prompts: ["a cat", "a dog", "a red circle"],
      train: {
        epochs: 3,
        batchesPerEpoch: 2,
        batchSize: 4,
        timestepFraction: 0.5,
        clipRange: 0.2,
        perPromptTracking: { minCount: 2 },
      },
      optimizer: { lr: 0.05 },
      eval: { prompts: ["a cat"], seeds: [1] },
      checkpoint: { every: 1, keep: 2 },
      output: { dir: "./run", saveImages: false, exportFormats: ["peft"] },
      ...extra,
    }),
  );
  return file;
}

/** Every file under `dir` (relative path → bytes). */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      const p = join(d, e.name);
      if (e.isDirectory) await walk(p);
      else out.set(p.slice(dir.length + 1), new TextDecoder().decode(await Deno.readFile(p)));
    }
  };
  await walk(dir).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
  return out;
}

/** The bytes that must match an uninterrupted run: final LoRA, optimizer state, export. */
async function finalState(run: string): Promise<Record<string, Uint8Array>> {
  const last = await latestCheckpoint(join(run, "checkpoints"));
  assert.ok(last, `no checkpoint in ${run}`);
  return {
    checkpoint: new TextEncoder().encode(last.slice(run.length)),
    lora: await Deno.readFile(join(last, "lora.safetensors")),
    optimizer: await Deno.readFile(join(last, "optimizer.safetensors")),
    export: await Deno.readFile(join(run, "export", "peft", "lora.safetensors")),
  };
}

/** metrics.jsonl rows as (type, label, epoch, step) keys; each must appear once. */
async function metricKeys(run: string): Promise<string[]> {
  const rows = (await Deno.readTextFile(join(run, "metrics.jsonl"))).split("\n").filter(Boolean)
    .map((l) => JSON.parse(l));
  const keys = rows.map((r) => `${r.type}:${r.label ?? ""}:${r.epoch}:${r.step}`);
  const dupes = keys.filter((k, i) => keys.indexOf(k) !== i);
  assert.deepEqual(dupes, [], "metrics.jsonl has duplicate rows");
  for (const r of rows) {
    assert.equal(typeof r.epoch, "number", JSON.stringify(r));
    assert.equal(typeof r.step, "number", JSON.stringify(r));
  }
  return keys;
}

async function assertNoLeftovers(run: string): Promise<void> {
  for await (const e of Deno.readDir(join(run, "checkpoints"))) {
    assert.match(e.name, /^step-\d{8}$/, `leftover in checkpoints/: ${e.name}`);
  }
  try {
    for await (const e of Deno.readDir(join(run, "export"))) {
      assert.ok(!e.name.endsWith(".tmp"), `leftover in export/: ${e.name}`);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e; // not exported yet
  }
}

Deno.test("run safety: faults during a run", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "texforce_faults_" });
  try {
    const refFile = await fakeRun(join(root, "ref"));
    ok(await cli(["run", refFile]), "uninterrupted run");
    const refRun = join(root, "ref", "run");
    const ref = await finalState(refRun);
    const refKeys = await metricKeys(refRun);
    assert.equal(refKeys.filter((k) => k.startsWith("epoch:")).length, 3);

    // Six points of epoch 2 (two sampling batches, four PPO passes per epoch; four files per
    // checkpoint, so write 7 is inside the second checkpoint), then the export after the last.
    const points = [
      "sampling@3",
      "scoring@4",
      "training@6",
      "metrics-written@2",
      "checkpoint-write@7",
      "export-write@1",
    ];
    for (const point of points) {
      await t.step(
        `SIGKILL at ${point}, then --resume: identical to the uninterrupted run`,
        async () => {
          const dir = join(root, point.replace("@", "_"));
          const file = await fakeRun(dir);
          const killed = await cli(["run", file], { fault: `${point}=pause`, signal: "SIGKILL" });
          assert.notEqual(killed.code, 0, "the run was killed");
          const run = join(dir, "run");
          const resumed = await cli(["run", file, "--resume"]);
          ok(resumed, `resume after ${point}`);
          const got = await finalState(run);
          for (const k of Object.keys(ref)) {
            assert.deepEqual(got[k as keyof typeof got], ref[k], `${point}: ${k} differs`);
          }
          assert.deepEqual(
            (await metricKeys(run)).sort(),
            [...refKeys].sort(),
            `${point}: metrics`,
          );
          await assertNoLeftovers(run);
        },
      );
    }

    await t.step(
      "ENOSPC inside a checkpoint write keeps the previous checkpoint and says so",
      async () => {
        const dir = join(root, "enospc");
        const file = await fakeRun(dir);
        const r = await cli(["run", file], { fault: "checkpoint-write@6=enospc" });
        assert.equal(r.code, 1, r.stderr);
        const run = join(dir, "run");
        const kept = join(run, "checkpoints", "step-00000002");
        assert.match(r.stderr, /No space left on device/);
        assert.ok(r.stderr.includes(`the previous checkpoint ${kept} is kept intact`), r.stderr);
        assert.deepEqual(await listCheckpoints(join(run, "checkpoints")), [kept]);
        assert.equal((await loadCheckpoint(kept)).state.step, 2);
        await assertNoLeftovers(run);
        ok(await cli(["run", file, "--resume"]), "resume after ENOSPC");
        const got = await finalState(run);
        for (const k of Object.keys(ref)) assert.deepEqual(got[k as keyof typeof got], ref[k], k);
        assert.deepEqual((await metricKeys(run)).sort(), [...refKeys].sort());
      },
    );

    for (const [signal, code] of [["SIGTERM", 143], ["SIGHUP", 129]] as const) {
      await t.step(
        `${signal} leaves a checkpoint and prints the exact resume command`,
        async () => {
          const dir = join(root, signal);
          const file = await fakeRun(dir);
          const args = ["run", file, "--set", "train.epochs=3", "--set", "optimizer.lr=0.05"];
          const r = await cli(args, { fault: "training@6=pause", signal });
          assert.equal(r.code, code, r.stderr);
          const run = join(dir, "run");
          const last = await latestCheckpoint(join(run, "checkpoints"));
          assert.ok(last);
          const c = await loadCheckpoint(last);
          assert.ok(c.state.interrupted, "an interrupted checkpoint was written");
          assert.equal(c.state.step, 3, "stopped after the current step");
          const hint = `texforce run ${file} --set train.epochs=3 --set optimizer.lr=0.05 --resume`;
          assert.ok(r.stderr.includes(hint), `hint missing:\n${r.stderr}`);
          // Following the hint continues this run to its end.
          const resumed = await cli(hint.split(" ").slice(1));
          ok(resumed, "following the hint");
          assert.match(resumed.stderr, /resumed from .*step-00000003/);
          // The interrupted epoch is sampled again (its samples are not checkpointed): 3 steps
          // before the stop, then epochs 2 and 3 with 2 steps each.
          const end = await loadCheckpoint((await latestCheckpoint(join(run, "checkpoints")))!);
          assert.equal(end.state.step, 7);
          assert.equal(end.state.epoch, 3);
          await metricKeys(run);
        },
      );
    }

    await t.step("SIGTERM before the first step: resumed, 'before' is evaluated once", async () => {
      const dir = join(root, "early");
      const file = await fakeRun(dir);
      const r = await cli(["run", file], { fault: "sampling@1=pause", signal: "SIGTERM" });
      assert.equal(r.code, 143, r.stderr);
      ok(await cli(["run", file, "--resume"]), "resume");
      const keys = await metricKeys(join(dir, "run"));
      assert.deepEqual(keys.filter((k) => k.startsWith("eval:before")), ["eval:before:0:0"]);
      assert.equal(keys.filter((k) => k.startsWith("epoch:")).length, 3);
    });

    await t.step(
      "a damaged newest checkpoint: resume falls back to the newest intact one",
      async () => {
        const dir = join(root, "damaged");
        const file = await fakeRun(dir);
        const killed = await cli(["run", file], { fault: "sampling@5=pause", signal: "SIGKILL" });
        assert.notEqual(killed.code, 0);
        const run = join(dir, "run");
        const [older, newest] = await listCheckpoints(join(run, "checkpoints"));
        const f = join(newest, "lora.safetensors");
        const bytes = await Deno.readFile(f);
        bytes[bytes.length - 1] ^= 0xff;
        await Deno.writeFile(f, bytes);
        const r = await cli(["run", file, "--resume"]);
        ok(r, "resume past a damaged checkpoint");
        assert.ok(r.stderr.includes(`${f}: SHA-256 differs from the manifest`), r.stderr);
        assert.ok(r.stderr.includes(`falling back to ${older}`), r.stderr);
        const got = await finalState(run);
        for (const k of Object.keys(ref)) assert.deepEqual(got[k as keyof typeof got], ref[k], k);
        assert.deepEqual((await metricKeys(run)).sort(), [...refKeys].sort());
      },
    );

    await t.step(
      "a folder holding a run: a fresh run is refused with nothing changed",
      async () => {
        const before = await snapshot(refRun);
        const r = await cli(["run", refFile, "--set", "encoder.options.rank=8"]);
        assert.equal(r.code, 2, r.stderr);
        assert.ok(r.stderr.includes(`output.dir: ${refRun} already holds a run`), r.stderr);
        assert.ok(!r.stderr.includes("backend:"), "refused before any model was loaded");
        assert.deepEqual(await snapshot(refRun), before, "the run folder is unchanged");
      },
    );

    await t.step("--resume with a changed config is refused, listing the differences", async () => {
      const before = await snapshot(refRun);
      const r = await cli([
        "run",
        refFile,
        "--resume",
        "--set",
        "optimizer.lr=0.01",
        "--set",
        "encoder.options.rank=8",
      ]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /optimizer\.lr: 0\.05 → 0\.01/);
      assert.match(r.stderr, /encoder\.options\.rank: \(absent\) → 8/);
      assert.match(r.stderr, /--force/);
      assert.ok(!r.stderr.includes("backend:"), "refused before any model was loaded");
      assert.deepEqual(await snapshot(refRun), before, "the run folder is unchanged");
      // Safe keys may change: more epochs continue the run.
      const more = await cli(["run", refFile, "--resume", "--set", "train.epochs=4"]);
      ok(more, "resume with more epochs");
      assert.match(more.stderr, /train\.epochs: 3 → 4/);
      assert.equal((await metricKeys(refRun)).filter((k) => k.startsWith("epoch:")).length, 4);
    });

    await t.step(
      "export reads the LoRA settings from the checkpoint, not pipeline.json",
      async () => {
        // A later pipeline.json claiming rank 8 (what issue 18's first report did to a run).
        const pj = join(refRun, "pipeline.json");
        const p = JSON.parse(await Deno.readTextFile(pj));
        p.encoder.options = { rank: 8 };
        await Deno.writeTextFile(pj, JSON.stringify(p));
        const out = join(root, "exported");
        const r = await cli(["export", refRun, "--format", "peft", "--out", out]);
        ok(r, "export");
        const last = (await latestCheckpoint(join(refRun, "checkpoints")))!;
        const c = await loadCheckpoint(last);
        assert.deepEqual(c.state.lora?.options, { rank: 4 });
        assert.deepEqual(c.state.lora?.layout, { "lora.w": [4] });
        const exported = await Deno.readFile(join(out, "lora.safetensors"));
        assert.deepEqual(
          exported,
          await Deno.readFile(join(refRun, "export", "peft", "lora.safetensors")),
        );
      },
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
