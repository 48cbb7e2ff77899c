/**
 * The run folder (`output.dir`) and everything a run writes into it: the policy that decides
 * whether a run may start there (checked before any weight loads, with nothing written), the
 * run's `pipeline.json`, `metrics.jsonl` rows keyed by epoch and step (rows past a resumed
 * checkpoint are dropped), and folders written atomically (exports).
 *
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { type Checkpoint, latestIntactCheckpoint, listCheckpoints } from "./checkpoint.ts";
import { writeFileAtomic } from "./io/safetensors.ts";
import type { Pipeline } from "./pipeline_schema.ts";

/**
 * A run folder that cannot be used as asked (it holds another run, it is not writable, the
 * resumed config differs). The message names `output.dir` or the changed keys.
 *
 * @example
 * ```ts
 * import { RunFolderError } from "@texforce/core";
 * const e = new RunFolderError("output.dir: /runs/a already holds a run");
 * ```
 */
export class RunFolderError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "RunFolderError";
  }
}

/**
 * Keys a resumed run may change: how long it runs, evaluation, logging and checkpoint cadence,
 * where things are. Everything else changes what is trained and needs `--force`.
 *
 * @example
 * ```ts
 * import { RESUME_SAFE_KEYS } from "@texforce/core";
 * console.log(RESUME_SAFE_KEYS.includes("train.epochs")); // true
 * ```
 */
export const RESUME_SAFE_KEYS: readonly string[] = [
  "name",
  "baseDir",
  "train.epochs",
  "train.microBatchSize",
  "eval",
  "checkpoint.every",
  "checkpoint.keep",
  "checkpoint.resume",
  "output.dir",
  "output.saveImages",
  "output.exportFormats",
];

/**
 * One difference between two configs.
 *
 * @example
 * ```ts
 * import type { ConfigDifference } from "@texforce/core";
 * const d: ConfigDifference = { path: "optimizer.lr", before: 1e-4, after: 3e-4, safe: false };
 * ```
 */
export interface ConfigDifference {
  /** Dotted path, e.g. `optimizer.lr`. */
  path: string;
  /** Value in the checkpoint's config (undefined: absent). */
  before: unknown;
  /** Value now. */
  after: unknown;
  /** Whether {@linkcode RESUME_SAFE_KEYS} allows it. */
  safe: boolean;
}

function isSafe(path: string): boolean {
  return RESUME_SAFE_KEYS.some((k) => path === k || path.startsWith(`${k}.`));
}

/**
 * The differences between the config a checkpoint was trained with and a new one, leaf by leaf
 * (lists compare whole).
 *
 * @example
 * ```ts
 * import { configDifferences } from "@texforce/core";
 * const d = configDifferences({ optimizer: { lr: 1 } }, { optimizer: { lr: 2 } });
 * console.log(d[0].path, d[0].safe); // optimizer.lr false
 * ```
 */
export function configDifferences(before: unknown, after: unknown): ConfigDifference[] {
  const out: ConfigDifference[] = [];
  const walk = (a: unknown, b: unknown, path: string) => {
    const obj = (x: unknown) => x !== null && typeof x === "object" && !Array.isArray(x);
    if (obj(a) && obj(b)) {
      const keys = new Set([...Object.keys(a as object), ...Object.keys(b as object)]);
      for (const k of [...keys].sort()) {
        walk(
          (a as Record<string, unknown>)[k],
          (b as Record<string, unknown>)[k],
          path ? `${path}.${k}` : k,
        );
      }
      return;
    }
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      out.push({ path, before: a, after: b, safe: isSafe(path) });
    }
  };
  walk(before, after, "");
  return out;
}

function show(v: unknown): string {
  return v === undefined ? "(absent)" : JSON.stringify(v);
}

/**
 * What {@linkcode preflightRunFolder} decided.
 *
 * @example
 * ```ts
 * import type { RunFolderPlan } from "@texforce/core";
 * const plan: RunFolderPlan = { dir: "runs/demo", resumeFrom: null, existing: false };
 * ```
 */
export interface RunFolderPlan {
  /** The run folder. */
  dir: string;
  /** The checkpoint to resume from (verified), or null for a fresh start. */
  resumeFrom: { path: string; checkpoint: Checkpoint } | null;
  /** Whether the folder already holds a run. */
  existing: boolean;
}

/**
 * How a run may use a folder that already holds one.
 *
 * @example
 * ```ts
 * import type { RunFolderPolicy } from "@texforce/core";
 * const policy: RunFolderPolicy = { resume: true, force: false, warn: console.error };
 * ```
 */
export interface RunFolderPolicy {
  /** Continue the run in the folder (`--resume`). */
  resume: boolean;
  /** Resume even when the config changed in keys that are not safe (`--force`). */
  force?: boolean;
  /** Warnings (a damaged checkpoint skipped, safe config changes). */
  warn?: (line: string) => void;
}

/**
 * Whether `dir` already holds a run: checkpoints, metrics or a pipeline.json.
 *
 * @example
 * ```ts
 * import { holdsRun } from "@texforce/core";
 * console.log(await holdsRun("runs/demo"));
 * ```
 */
export async function holdsRun(dir: string): Promise<boolean> {
  if ((await listCheckpoints(join(dir, "checkpoints"))).length) return true;
  for (const f of ["metrics.jsonl", "pipeline.json"]) {
    try {
      await Deno.stat(join(dir, f));
      return true;
    } catch { /* absent */ }
  }
  try {
    for await (const e of Deno.readDir(join(dir, "checkpoints"))) if (e.name) return true;
  } catch { /* absent */ }
  return false;
}

/** The nearest folder at or above `dir` that exists; an error naming output.dir if a file. */
async function nearestFolder(dir: string): Promise<string> {
  let d = resolve(dir);
  for (;;) {
    try {
      const st = await Deno.stat(d);
      if (!st.isDirectory) {
        throw new RunFolderError(
          `output.dir: ${dir} cannot be created: ${d} is a file, not a folder`,
        );
      }
      return d;
    } catch (e) {
      if (e instanceof RunFolderError) throw e;
      const up = dirname(d);
      if (up === d) throw new RunFolderError(`output.dir: ${dir}: no existing parent folder`);
      d = up;
    }
  }
}

/**
 * Decide, before any weight is loaded and without writing anything lasting, whether a run may
 * start in `pipeline.output.dir`: the folder (or the nearest existing parent) must be writable;
 * a folder holding a run needs `resume`; a resumed config may differ from the checkpoint's only
 * in {@linkcode RESUME_SAFE_KEYS} unless `force`. A damaged newest checkpoint falls back to the
 * newest intact one (with a warning). Throws a {@linkcode RunFolderError}.
 *
 * @example
 * ```ts
 * import { loadPipeline, preflightRunFolder } from "@texforce/core";
 * const p = await loadPipeline("examples/tiny_brightness.yaml");
 * const plan = await preflightRunFolder(p, { resume: false });
 * console.log(plan.existing);
 * ```
 */
export async function preflightRunFolder(
  pipeline: Pipeline,
  policy: RunFolderPolicy,
): Promise<RunFolderPlan> {
  const dir = pipeline.output.dir;
  const warn = policy.warn ?? (() => {});
  const parent = await nearestFolder(dir);
  try {
    // A probe file, removed at once: the run folder keeps no trace of the check.
    const probe = await Deno.makeTempFile({ dir: parent, prefix: ".texforce-write-check-" });
    await Deno.remove(probe);
  } catch (e) {
    throw new RunFolderError(
      `output.dir: ${dir} is not writable (${parent}: ${(e as Error).message})`,
    );
  }
  const existing = parent === resolve(dir) && await holdsRun(dir);
  if (!existing) return { dir, resumeFrom: null, existing };
  if (!policy.resume) {
    throw new RunFolderError(
      `output.dir: ${dir} already holds a run (checkpoints, metrics.jsonl or pipeline.json); ` +
        "resume it (--resume, or checkpoint.resume: true), or choose another output.dir " +
        "(--set output.dir=…); nothing in it was changed",
    );
  }
  const resumeFrom = await latestIntactCheckpoint(join(dir, "checkpoints"), warn);
  let before: unknown = resumeFrom?.checkpoint.pipeline;
  if (before === undefined) {
    try {
      before = JSON.parse(await Deno.readTextFile(join(dir, "pipeline.json")));
    } catch { /* a run killed before it wrote anything: nothing to compare */ }
  }
  if (before !== undefined) {
    const diffs = configDifferences(before, JSON.parse(JSON.stringify(pipeline)));
    const unsafe = diffs.filter((d) => !d.safe);
    const lines = (ds: ConfigDifference[]) =>
      ds.map((d) => `  ${d.path}: ${show(d.before)} → ${show(d.after)}`).join("\n");
    const from = resumeFrom?.path ?? join(dir, "pipeline.json");
    if (unsafe.length && !policy.force) {
      throw new RunFolderError(
        `--resume: the pipeline differs from the one ${from} was trained with:\n` +
          `${lines(unsafe)}\n` +
          "resume with the same config, or pass --force to continue with the new one " +
          `(only ${RESUME_SAFE_KEYS.join(", ")} may change freely)`,
      );
    }
    if (diffs.length) {
      warn(
        `resuming with a changed config${unsafe.length ? " (--force)" : ""}:\n${lines(diffs)}`,
      );
    }
  }
  return { dir, resumeFrom, existing };
}

/**
 * Write the run's normalised `pipeline.json` (atomically).
 *
 * @example
 * ```ts
 * import { loadPipeline, writeRunPipeline } from "@texforce/core";
 * await writeRunPipeline(await loadPipeline("examples/tiny_brightness.yaml"));
 * ```
 */
export async function writeRunPipeline(pipeline: Pipeline): Promise<void> {
  await Deno.mkdir(pipeline.output.dir, { recursive: true });
  await writeFileAtomic(
    join(pipeline.output.dir, "pipeline.json"),
    new TextEncoder().encode(JSON.stringify(pipeline, null, 2)),
  );
}

/**
 * Append one row to `metrics.jsonl` (one `write` of one line, so a killed process leaves whole
 * rows only).
 *
 * @example
 * ```ts
 * import { appendMetric } from "@texforce/core";
 * await appendMetric("runs/demo", { type: "train", epoch: 1, step: 1, loss: 0.1 });
 * ```
 */
export async function appendMetric(dir: string, row: Record<string, unknown>): Promise<void> {
  const line = JSON.stringify({ time: new Date().toISOString(), ...row }) + "\n";
  const f = await Deno.open(join(dir, "metrics.jsonl"), {
    append: true,
    create: true,
    write: true,
  });
  try {
    const bytes = new TextEncoder().encode(line);
    let off = 0;
    while (off < bytes.byteLength) off += await f.write(bytes.subarray(off));
  } finally {
    f.close();
  }
}

/**
 * Whether `metrics.jsonl` holds an evaluation row labelled `label` (a resumed run evaluates
 * "before" only once).
 *
 * @example
 * ```ts
 * import { hasEvalRow } from "@texforce/core";
 * console.log(await hasEvalRow("runs/demo", "before"));
 * ```
 */
export async function hasEvalRow(dir: string, label: string): Promise<boolean> {
  let text = "";
  try {
    text = await Deno.readTextFile(join(dir, "metrics.jsonl"));
  } catch {
    return false;
  }
  return text.split("\n").some((l) => {
    try {
      const r = JSON.parse(l);
      return r.type === "eval" && r.label === label;
    } catch {
      return false;
    }
  });
}

/**
 * Whether a metrics row belongs to the state of a checkpoint that completed `epoch` epochs and
 * `step` optimizer steps: train rows up to `step`, other rows (epoch, eval) up to `epoch`.
 */
function withinCheckpoint(row: Record<string, unknown>, epoch: number, step: number): boolean {
  const s = typeof row.step === "number" ? row.step : 0;
  if (s > step) return false;
  if (row.type === "train") return true;
  const e = typeof row.epoch === "number" ? row.epoch : 0;
  return e <= epoch;
}

/**
 * Rewrite `metrics.jsonl` (atomically) keeping only the rows of the state being resumed: those
 * of a checkpoint at `{ epoch, step }`, or none when the run restarts from nothing (`null`).
 * Rows a killed run wrote past its last checkpoint (and a torn last line) go. Returns the number
 * of rows dropped.
 *
 * @example
 * ```ts
 * import { truncateMetrics } from "@texforce/core";
 * const dropped = await truncateMetrics("runs/demo", { epoch: 2, step: 2 });
 * ```
 */
export async function truncateMetrics(
  dir: string,
  at: { epoch: number; step: number } | null,
): Promise<number> {
  const file = join(dir, "metrics.jsonl");
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch {
    return 0;
  }
  const kept: string[] = [];
  let dropped = 0;
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let row: Record<string, unknown> | null = null;
    try {
      row = JSON.parse(line);
    } catch { /* a torn line */ }
    if (row && at && withinCheckpoint(row, at.epoch, at.step)) kept.push(line);
    else dropped++;
  }
  if (dropped) {
    await writeFileAtomic(file, new TextEncoder().encode(kept.map((l) => l + "\n").join("")));
  }
  return dropped;
}

/**
 * Fill a folder atomically: `fill` writes into a temporary sibling, which then replaces `dir`
 * (the old contents stay whole until the new ones are). With `replace: false` (a folder the
 * user named, which may hold other files) the new files are renamed into `dir` one by one
 * instead, each atomically, and nothing else in `dir` is touched. Paths `fill` returns under
 * the temporary folder are mapped to `dir`.
 *
 * @example
 * ```ts
 * import { writeFolderAtomic } from "@texforce/core";
 * const files = await writeFolderAtomic("runs/demo/export/peft", async (tmp) => {
 *   await Deno.writeTextFile(`${tmp}/a.txt`, "a");
 *   return [`${tmp}/a.txt`];
 * });
 * ```
 */
export async function writeFolderAtomic(
  dir: string,
  fill: (tmp: string) => Promise<string[]>,
  options: { replace?: boolean } = {},
): Promise<string[]> {
  const final = resolve(dir);
  await Deno.mkdir(dirname(final), { recursive: true });
  const tag = crypto.randomUUID().slice(0, 8);
  const tmp = `${final}.${tag}.tmp`;
  const old = `${final}.${tag}.old.tmp`;
  await Deno.mkdir(tmp);
  let files: string[];
  try {
    files = await fill(tmp);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  if (options.replace === false) {
    await Deno.mkdir(final, { recursive: true });
    const move = async (from: string, to: string) => {
      for await (const e of Deno.readDir(from)) {
        if (e.isDirectory) {
          await Deno.mkdir(join(to, e.name), { recursive: true });
          await move(join(from, e.name), join(to, e.name));
        } else await Deno.rename(join(from, e.name), join(to, e.name));
      }
    };
    await move(tmp, final);
    await Deno.remove(tmp, { recursive: true });
  } else {
    let replaced = false;
    try {
      await Deno.rename(final, old);
      replaced = true;
    } catch { /* first write */ }
    await Deno.rename(tmp, final);
    if (replaced) await Deno.remove(old, { recursive: true }).catch(() => {});
  }
  // Leftovers of earlier writers of this folder that were killed.
  const base = final.slice(dirname(final).length + 1);
  for await (const e of Deno.readDir(dirname(final))) {
    if (e.name.startsWith(`${base}.`) && e.name.endsWith(".tmp")) {
      await Deno.remove(join(dirname(final), e.name), { recursive: true }).catch(() => {});
    }
  }
  return files.map((f) => (f.startsWith(tmp) ? final + f.slice(tmp.length) : f));
}
