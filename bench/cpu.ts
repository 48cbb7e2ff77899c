/**
 * `deno task bench cpu [--threads 1,2] [--batches 2,16,64,256] [--iters 3] [--rounds 3]
 * [--no-clip] [--no-unet] [--no-torch] [--micro N]`: the CPU workloads side by side, one fresh process per
 * wasm thread count:
 *
 * - the SD 1.5 CLIP ViT-L/14 text encoder (random weights) with LoRA r16 on q/k/v/out, batch
 *   2 × 77: forward, and forward + backward into the LoRA;
 * - the tiny UNet (the test fixture's shape, random weights) forward, and forward + backward into
 *   the encoder states, at each batch, with the per-sample time (with two threads or more,
 *   batches of 2 and up are shared between this thread and sample workers, as
 *   loadStableDiffusion sets them up; `TEXFORCE_SAMPLE_WORKERS=off` times the threaded backend
 *   alone);
 * - when `python3` imports `torch` (Debian: `apt-get install python3-torch
 *   libopenblas0-pthread`), the same CLIP work in PyTorch on as many cores, in the same run, in
 *   the faster of two thread configurations (see `torchClipConfigs`), and the ratio texforce /
 *   PyTorch; the two sides then take turns (`--rounds` of 2 calls each, `_clip_turns.ts`), both
 *   loaded at once, so their medians come from the same stretches of the run;
 * - a 2048² matMul on each side, the raw GEMM rate (GFLOP/s) both stacks' CLIP work rests on:
 *   tfjs' own (XNNPACK) and texforce's packed SIMD kernel (adapters/wasm/packed_matmul.ts),
 *   which the text encoder's products use.
 *
 * `--micro N` (default 64) runs the UNet's forward + backward N samples at a time (a batch of
 * 256 in one pass outgrows the 4 GB wasm heap; the trainer splits minibatches the same way).
 *
 * Prints wall-clock medians, the process CPU time per call, peak RSS, and the load average
 * (timings on a shared machine drift; compare rows of one run). The CLIP rows and products take
 * `--iters` calls at least, and as many as fit in 3 s for short ones, up to 25. The UNet rows
 * are timed in `--rounds` turns, each running every batch's forward and forward + backward
 * (short ones repeated for 1 s, up to 12 calls), so that their per-sample times, compared with
 * each other, come from the same stretches of the run.
 *
 * @module
 */
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { useBackend, wasmThreadCount } from "../core/backend.ts";
import { clipLoraWorkload, tinyUNetWorkload } from "./_cpu_workloads.ts";
import { formatBytes, peakRss } from "./_peak_rss.ts";
import { packedMatMul, packWeight } from "../adapters/wasm/packed_matmul.ts";
import { clipInTurns, serveClipTurns } from "./_clip_turns.ts";
import { median, type Samples, timeCalls } from "./_call_timer.ts";

const MARK = "@@cpu ";

/** Calls each side makes per turn of the CLIP-L comparison with PyTorch. */
const TURN_CALLS = 2;

/** One timed workload. */
interface Row {
  what: string;
  batch: number;
  /** Median wall ms per call. */
  ms: number;
  /** Process CPU ms per call (all threads), median. */
  cpuMs: number;
  peakRss: number;
}

/** What one child process (one thread count) measured. */
interface ChildResult {
  threads: number;
  device: string;
  rows: Row[];
}

/** Short workloads repeat until this much time is timed (or MAX_RUNS calls). */
const MIN_TIMED_MS = 3000;
const MAX_RUNS = 25;
const WARM_UP_MS = 1500;
const MAX_WARM_UP_CALLS = 15;

// Warm-up: V8 compiles the hot paths in tiers over the first calls (the tiny UNet's batch-2
// pass took 75–90 ms in its first five calls and about 60 from the tenth), so short calls
// repeat for WARM_UP_MS before any is timed; long ones (a large batch) warm up once.
async function warmUp(fn: () => Promise<void>): Promise<void> {
  const warm = performance.now();
  for (let i = 0; i < 1 || (i < MAX_WARM_UP_CALLS && performance.now() - warm < WARM_UP_MS); i++) {
    await fn();
  }
}

// The row of the samples' medians, logged with every call's time after `how` ("runs", …).
function rowOf(what: string, batch: number, s: Samples, how: string): Row {
  const row = { what, batch, ms: median(s.ms), cpuMs: median(s.cpu), peakRss: peakRss() };
  console.error(
    `  ${what} batch ${batch}: ${row.ms.toFixed(0)} ms (cpu ${row.cpuMs.toFixed(0)} ms), ` +
      `${how} ${s.ms.map((m) => m.toFixed(0)).join(", ")}`,
  );
  return row;
}

async function timed(
  what: string,
  batch: number,
  runs: number,
  fn: () => Promise<void>,
): Promise<Row> {
  await warmUp(fn);
  // At least `runs` timed calls, more for short ones (until MIN_TIMED_MS, at most MAX_RUNS): on
  // this shared VM one call of the tiny UNet at batch 2 varied from 54 to 102 ms in a row, so a
  // median of three was a draw.
  const s: Samples = { ms: [], cpu: [] };
  await timeCalls(fn, s, runs, MIN_TIMED_MS, MAX_RUNS);
  return rowOf(what, batch, s, "runs");
}

// The CLIP-L rows (unless PyTorch's turns time them: `encoder` false) and the 2048² products.
async function clipRows(iters: number, encoder: boolean): Promise<Row[]> {
  const rows: Row[] = [];
  if (encoder) {
    const clip = await clipLoraWorkload();
    rows.push(
      await timed("CLIP-L forward", 2, iters, clip.forward),
      await timed("CLIP-L LoRA forward+backward", 2, iters, clip.forwardBackward),
    );
    clip.dispose();
  }
  const a = tf.randomNormal([2048, 2048], 0, 1, "float32", 1);
  const b = tf.randomNormal([2048, 2048], 0, 1, "float32", 2);
  rows.push(
    await timed("matMul 2048² (XNNPACK)", 1, iters, async () => {
      const y = tf.matMul(a, b);
      await y.data();
      y.dispose();
    }),
  );
  const packed = packWeight(b as tf.Tensor2D);
  rows.push(
    await timed("matMul 2048² (texforce packed)", 1, iters, async () => {
      const y = packedMatMul(a as tf.Tensor2D, packed);
      await y.data();
      y.dispose();
    }),
  );
  tf.dispose([a, b]);
  packed.dispose();
  return rows;
}

/** A workload timed in rounds with the others (see {@linkcode timedInRounds}). */
interface RoundWorkload {
  what: string;
  batch: number;
  fn: () => Promise<void>;
}

/** Each round gives a workload at least this much time (or MAX_RUNS_PER_ROUND calls). */
const ROUND_SLOT_MS = 1000;
const MAX_RUNS_PER_ROUND = 12;

// The UNet's rows are compared with each other (the per-sample time over the best batch's), so
// they are timed in turns: every round runs each workload, short ones repeated for
// ROUND_SLOT_MS. One after the other, the batch-2 calls took their 3 s in one minute of a run and
// the batch-256 ones theirs in another, and this machine's speed drifts by 20–40 % over seconds
// (one thread, one process: batch 2 ran 43 ms a call for a while, then 70–78 ms, then 45 again),
// so the ratio measured the drift as much as the batch.
async function timedInRounds(work: RoundWorkload[], rounds: number): Promise<Row[]> {
  const samples = work.map((): Samples => ({ ms: [], cpu: [] }));
  for (const w of work) await warmUp(w.fn);
  for (let round = 0; round < rounds; round++) {
    for (const [k, w] of work.entries()) {
      await timeCalls(w.fn, samples[k], 1, ROUND_SLOT_MS, MAX_RUNS_PER_ROUND);
    }
  }
  return work.map((w, k) =>
    rowOf(w.what, w.batch, samples[k], `${samples[k].ms.length} runs in ${rounds} rounds:`)
  );
}

async function unetRows(batches: number[], rounds: number, micro: number): Promise<Row[]> {
  const { unet, inputs } = await tinyUNetWorkload();
  // As loadStableDiffusion does: with two threads or more, batches of 2 and up are shared by
  // whole samples between this thread and workers (UNet2DConditionModel.startSampleWorkers).
  const workers = await unet.startDefaultSampleWorkers();
  console.error(
    `tiny UNet: ${
      workers ? `${workers} sample worker(s) beside this thread` : "no sample workers"
    }`,
  );
  const work: RoundWorkload[] = [];
  const made: tf.Tensor[] = [];
  for (const batch of batches) {
    const { x, states, t } = inputs(batch);
    made.push(x, states);
    work.push({
      what: "tiny UNet forward",
      batch,
      fn: async () => {
        const y = unet.forward(x, t, states);
        await y.data();
        y.dispose();
      },
    });
    // Forward + backward into the encoder states, `micro` samples at a time (the gradient of a
    // per-sample loss needs no accumulation across chunks: each chunk's rows are its own).
    const chunk = micro > 0 ? Math.min(micro, batch) : batch;
    work.push({
      what: "tiny UNet forward+backward",
      batch,
      fn: async () => {
        const parts: tf.Tensor[] = [];
        for (let s = 0; s < batch; s += chunk) {
          const n = Math.min(chunk, batch - s);
          const [xs, es] = tf.tidy(() => [x.slice(s, n), states.slice(s, n)]);
          const g = tf.grad((e: tf.Tensor) =>
            unet.forward(xs as tf.Tensor4D, t.slice(s, s + n), e as tf.Tensor3D).square().sum()
          )(es);
          tf.dispose([xs, es]);
          await g.data();
          parts.push(g);
        }
        tf.dispose(parts);
      },
    });
  }
  const rows = await timedInRounds(work, rounds);
  tf.dispose(made);
  unet.dispose();
  return rows;
}

async function child(values: Record<string, unknown>): Promise<void> {
  const threads = Number(values.threads);
  const info = await useBackend("wasm", { wasmThreads: threads });
  console.error(`wasm, ${info.device}`);
  const iters = Number(values.iters);
  const rows: Row[] = [];
  if (values.clip) rows.push(...await clipRows(iters, !values["clip-turns"]));
  if (values.unet) {
    const batches = String(values.batches).split(",").map(Number);
    rows.push(...await unetRows(batches, Number(values.rounds), Number(values.micro)));
  }
  const out: ChildResult = { threads, device: info.device, rows };
  console.log(MARK + JSON.stringify(out));
}

/** A python3 that imports torch: `$TEXFORCE_PYTHON`, `python3` on PATH, or Debian's. */
async function torchPython(): Promise<string | null> {
  const candidates = [Deno.env.get("TEXFORCE_PYTHON"), "python3", "/usr/bin/python3"];
  for (const py of candidates) {
    if (!py) continue;
    try {
      const r = await new Deno.Command(py, {
        args: ["-c", "import torch"],
        stdout: "null",
        stderr: "null",
      }).output();
      if (r.success) return py;
    } catch { /* not installed */ }
  }
  return null;
}

function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "?";
  }
}

/**
 * Run the CPU benchmark.
 *
 * @example
 * ```ts
 * import benchCpu from "./cpu.ts";
 * await benchCpu(["--threads", "1,2", "--batches", "2,16", "--no-torch"]);
 * ```
 */
export default async function benchCpu(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      threads: { type: "string" },
      batches: { type: "string", default: "2,16,64,256" },
      iters: { type: "string", default: "3" },
      micro: { type: "string", default: "64" },
      rounds: { type: "string", default: "3" },
      clip: { type: "boolean", default: true },
      unet: { type: "boolean", default: true },
      torch: { type: "boolean", default: true },
      child: { type: "boolean", default: false },
      // Internal: the child times no CLIP-L rows (the turns do); the turns' texforce process.
      "clip-turns": { type: "boolean", default: false },
      "clip-serve": { type: "boolean", default: false },
    },
    allowNegative: true,
  });
  if (values.child) return await child(values);
  if (values["clip-serve"]) return await serveClipTurns(Number(values.threads));
  const all = wasmThreadCount();
  const threadList = (values.threads ?? (all > 1 ? `1,${all}` : "1")).split(",").map(Number);
  console.log(
    `bench cpu: ${navigator.hardwareConcurrency} logical cores, load average ${loadAverage()}`,
  );
  const py = values.torch && values.clip ? await torchPython() : null;
  if (values.torch && values.clip && !py) {
    console.log("PyTorch: python3 cannot import torch; no comparison (see the module doc)");
  }
  const rounds = Number(values.rounds);
  const results: ChildResult[] = [];
  const torch = new Map<number, Record<string, number> | string>();
  for (const threads of threadList) {
    const passOn = args.filter((a, i) => a !== "--threads" && args[i - 1] !== "--threads");
    if (py) passOn.push("--clip-turns");
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("./cpu.ts", import.meta.url).href,
        ...passOn,
        "--child",
        "--threads",
        String(threads),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const line = new TextDecoder().decode(r.stdout).split("\n").find((l) => l.startsWith(MARK));
    if (!r.success || !line) throw new Error(`bench cpu: the ${threads}-thread run failed`);
    const result = JSON.parse(line.slice(MARK.length)) as ChildResult;
    if (py) {
      try {
        const turns = await clipInTurns(py, threads, rounds, TURN_CALLS);
        result.rows.unshift(...turns.rows);
        torch.set(threads, turns.torch);
      } catch (e) {
        torch.set(threads, e instanceof Error ? e.message : String(e));
      }
    }
    results.push(result);
  }
  console.log(`\nload average after: ${loadAverage()}\n`);
  console.log(
    "| workload | batch | threads | ms | ms / sample | × best per sample | CPU ms | PyTorch ms | ratio |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  const torchKey: Record<string, string> = {
    "CLIP-L forward": "clip_text_fwd_ms",
    "CLIP-L LoRA forward+backward": "clip_text_fwd_bwd_ms",
  };
  const gflops = (r: ChildResult, kind: string) => {
    const row = r.rows.find((x) => x.what === `matMul 2048² (${kind})`);
    return row ? (2 * 2048 ** 3 / row.ms / 1e6).toFixed(1) : "–";
  };
  const keys = [...new Set(results.flatMap((r) => r.rows.map((x) => `${x.what}@${x.batch}`)))];
  for (const key of keys) {
    for (const r of results) {
      const row = r.rows.find((x) => `${x.what}@${x.batch}` === key);
      if (!row) continue;
      const t = torch.get(r.threads);
      const ref = typeof t === "object" && torchKey[row.what] ? t[torchKey[row.what]] : undefined;
      // Per-sample time over the best per-sample time of the same workload and thread count
      // (the "linear in batch" check for the UNet rows).
      const best = Math.min(
        ...r.rows.filter((x) => x.what === row.what).map((x) => x.ms / x.batch),
      );
      const overBest = row.what.startsWith("tiny UNet")
        ? (row.ms / row.batch / best).toFixed(2)
        : "–";
      console.log(
        `| ${row.what} | ${row.batch} | ${r.threads} | ${row.ms.toFixed(0)} | ${
          (row.ms / row.batch).toFixed(1)
        } | ${overBest} | ${row.cpuMs.toFixed(0)} | ${ref ?? "–"} | ${
          ref ? (row.ms / ref).toFixed(2) : "–"
        } |`,
      );
    }
  }
  for (const [threads, t] of torch) {
    if (typeof t === "string") console.log(`PyTorch ${threads} cores failed: ${t}`);
    else {
      console.log(
        `PyTorch on ${threads} cores, fastest configuration (torch threads ${t.threads}, ` +
          `OpenBLAS threads ${t.blas_threads}): ${JSON.stringify(t)}`,
      );
    }
  }
  for (const r of results) {
    if (gflops(r, "XNNPACK") === "–") continue;
    const t = torch.get(r.threads);
    const ref = typeof t === "object" ? t.matmul2048_gflops : "–";
    console.log(
      `matMul 2048², ${r.threads} threads: wasm XNNPACK ${gflops(r, "XNNPACK")} GFLOP/s, ` +
        `texforce packed ${gflops(r, "texforce packed")}, PyTorch ${ref}`,
    );
  }
  for (const r of results) {
    const peak = Math.max(...r.rows.map((x) => x.peakRss));
    console.log(`${r.device}: peak RSS ${formatBytes(peak)}`);
  }
}

if (import.meta.main) await benchCpu(Deno.args);
