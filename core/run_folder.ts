/**
 * The run folder (`output.dir`) and everything a run writes into it: the policy that decides
 * whether a run may start there (checked before any weight loads, with nothing written), the
 * run's `pipeline.json`, `metrics.jsonl` rows keyed by epoch and step (rows past a resumed
 * checkpoint are dropped), and folders written atomically (exports); {@linkcode RunFolder} owns
 * all of it and is handed to the trainer.
 *
 * @module
 */
import { dirname, join, resolve } from "node:path";
import {
  type Checkpoint,
  latestIntactCheckpoint,
  listCheckpoints,
  saveCheckpoint,
} from "./checkpoint.ts";
import type { Encoder } from "./encoder.ts";
import { faultPoint } from "./_fault.ts";
import { writeFileAtomic } from "./io/atomic_file.ts";
import type { ExportFormat, Pipeline } from "./pipeline_schema.ts";
import { writeReport } from "./report.ts";
import type { Tensor4D } from "./tensor_types.ts";

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

/**
 * Writes an image grid (NHWC in [0, 1]) with one caption per image, and the single images.
 *
 * @example
 * ```ts
 * import type { ImageWriter } from "@texforce/core";
 * const skip: ImageWriter = () => Promise.resolve();
 * ```
 */
export type ImageWriter = (path: string, images: Tensor4D, captions: string[]) => Promise<void>;

/**
 * Options of {@linkcode RunFolder.open}.
 *
 * @example
 * ```ts
 * import type { RunFolderOpenOptions } from "@texforce/core";
 * const o: RunFolderOpenOptions = { resume: false, runInfo: { backend: "wasm" } };
 * ```
 */
export interface RunFolderOpenOptions extends RunFolderPolicy {
  /** What produced the run's numbers besides the pipeline, written to `run.json`. */
  runInfo?: Record<string, unknown>;
}

/**
 * Everything a run writes, in one place: `pipeline.json`, `run.json`, `metrics.jsonl`,
 * `checkpoints/`, `images/` and `eval/` grids, `export/<format>/` and `report.html`. The
 * trainer is handed one and writes nothing itself.
 *
 * @example
 * ```ts
 * import { loadPipeline, RunFolder } from "@texforce/core";
 * const pipeline = await loadPipeline("examples/tiny_brightness.yaml");
 * const folder = await RunFolder.open(pipeline, { resume: false });
 * await folder.appendMetric({ type: "note", epoch: 0, step: 0 });
 * ```
 */
export class RunFolder {
  /** The run folder (`output.dir`). */
  readonly dir: string;
  /** Writes image grids; images are skipped without one (or with `output.saveImages: false`). */
  readonly imageWriter?: ImageWriter;
  /** What {@linkcode RunFolder.open} found (unset for a folder not opened for a run). */
  readonly plan?: RunFolderPlan;

  /** A run folder at `dir` (nothing is checked or written). */
  constructor(dir: string, imageWriter?: ImageWriter, plan?: RunFolderPlan) {
    this.dir = dir;
    this.imageWriter = imageWriter;
    this.plan = plan;
  }

  /**
   * Accept `pipeline.output.dir` for a run ({@linkcode preflightRunFolder}), then write the
   * run's `pipeline.json` and, given `runInfo`, `run.json`.
   */
  static async open(
    pipeline: Pipeline,
    options: RunFolderOpenOptions,
    imageWriter?: ImageWriter,
  ): Promise<RunFolder> {
    const plan = await preflightRunFolder(pipeline, options);
    const folder = new RunFolder(pipeline.output.dir, imageWriter, plan);
    await writeRunPipeline(pipeline);
    if (options.runInfo) await folder.writeJson("run.json", options.runInfo);
    return folder;
  }

  /** The checkpoints folder. */
  get checkpointsDir(): string {
    return join(this.dir, "checkpoints");
  }

  /** Write `value` as JSON to `name` under the folder (atomically). */
  async writeJson(name: string, value: unknown): Promise<void> {
    await Deno.mkdir(dirname(join(this.dir, name)), { recursive: true });
    await writeFileAtomic(
      join(this.dir, name),
      new TextEncoder().encode(JSON.stringify(value, null, 2)),
    );
  }

  /** Append a `metrics.jsonl` row ({@linkcode appendMetric}). */
  async appendMetric(row: Record<string, unknown>): Promise<void> {
    await appendMetric(this.dir, row);
  }

  /** Whether an evaluation labelled `label` was recorded ({@linkcode hasEvalRow}). */
  async hasEvalRow(label: string): Promise<boolean> {
    return await hasEvalRow(this.dir, label);
  }

  /** Drop metrics rows past a checkpoint ({@linkcode truncateMetrics}). */
  async truncateMetrics(at: { epoch: number; step: number } | null): Promise<number> {
    return await truncateMetrics(this.dir, at);
  }

  /** The newest intact checkpoint, or null. */
  async latestCheckpoint(): Promise<{ path: string; checkpoint: Checkpoint } | null> {
    return await latestIntactCheckpoint(this.checkpointsDir);
  }

  /** Save a checkpoint, keeping the newest `keep`; returns its folder. */
  async saveCheckpoint(checkpoint: Checkpoint, keep: number): Promise<string> {
    return await saveCheckpoint(this.checkpointsDir, checkpoint, keep);
  }

  /** The grid of the first sampling batch of `epoch` (1-based), when images are written. */
  async saveEpochImages(epoch: number, images: Tensor4D, captions: string[]): Promise<void> {
    const name = `epoch-${String(epoch).padStart(4, "0")}.png`;
    await this.imageWriter?.(join(this.dir, "images", name), images, captions);
  }

  /** The grid of an evaluation, when images are written. */
  async saveEvalImages(label: string, images: Tensor4D, captions: string[]): Promise<void> {
    await this.imageWriter?.(join(this.dir, "eval", `${label}.png`), images, captions);
  }

  /**
   * Export the trained weights in each format to `export/<format>/` (each folder written
   * atomically); returns the files of each format.
   */
  async writeExports(
    encoder: Encoder,
    formats: readonly ExportFormat[],
  ): Promise<{ format: ExportFormat; files: string[] }[]> {
    const out: { format: ExportFormat; files: string[] }[] = [];
    if (!encoder.exportWeights) return out;
    for (const format of formats) {
      const files = await writeFolderAtomic(join(this.dir, "export", format), async (tmp) => {
        const written = await encoder.exportWeights!(tmp, format);
        await faultPoint("export-write", tmp);
        return written;
      });
      out.push({ format, files });
    }
    return out;
  }

  /** Write `report.html` from the metrics and images; returns its path. */
  async writeReport(name: string): Promise<string> {
    return await writeReport(this.dir, name);
  }
}

/**
 * The image writer of a run that saves images: each grid as PNG, and beside it a folder with the
 * single images and their captions (for the report). Loads sharp, a native package, only when
 * called for, so that GPU bundles (which cannot contain sharp) never import it.
 *
 * @example
 * ```ts
 * import { pngImageWriter, RunFolder } from "@texforce/core";
 * const folder = new RunFolder("runs/demo", await pngImageWriter());
 * ```
 */
export async function pngImageWriter(): Promise<ImageWriter> {
  const spec = "./image_output.ts";
  const mod = await import(spec);
  return async (path: string, images: Tensor4D, captions: string[]) => {
    await Deno.mkdir(dirname(path), { recursive: true });
    await mod.writeImageGrid(path, images, { captions, columns: Math.min(captions.length, 4) });
    const dir = path.replace(/\.png$/, "");
    await mod.saveImages(images, dir);
    await writeFileAtomic(
      join(dir, "captions.json"),
      new TextEncoder().encode(JSON.stringify(captions, null, 1)),
    );
  };
}
