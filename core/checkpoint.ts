/**
 * Training checkpoints: LoRA weights, AdamW moments, step counters, LR schedule state,
 * advantage-tracker buffers, RNG state, the LoRA's own settings and the pipeline that trained it.
 *
 * A checkpoint is a folder `step-NNNNNNNN/` written first under a temporary name and renamed
 * when complete, so a process killed mid-write leaves the previous checkpoint intact. Its
 * `manifest.json` (written last) records every file's size and SHA-256; loading verifies them, and
 * {@linkcode latestIntactCheckpoint} falls back past a damaged checkpoint to the newest intact one.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { basename, join } from "node:path";
import { faultPoint } from "./_fault.ts";
import type { AdvantageTrackerState } from "./advantages.ts";
import type { OptimizerState } from "./optimizer.ts";
import type { RngState } from "./rng.ts";
import { decodeSafetensors, encodeSafetensors } from "./io/safetensors.ts";
import { syncFolder, writeFileAtomic } from "./io/atomic_file.ts";
import type { Variable } from "./tensor_types.ts";

/** Format version written into `state.json`. */
export const CHECKPOINT_VERSION = 1;

/** The JSON part of a checkpoint. */
export interface CheckpointState {
  /** Format version. */
  version: number;
  /** Optimizer steps taken. */
  step: number;
  /** Epochs completed. */
  epoch: number;
  /** Learning rate used by the last step. */
  lr: number;
  /** Advantage tracker buffers. */
  tracker: AdvantageTrackerState;
  /** Trainer RNG state. */
  rng: RngState;
  /** SHA-256 of the normalised pipeline config that produced it. */
  configHash: string;
  /** True when written because the run was interrupted (Ctrl-C, AbortSignal). */
  interrupted: boolean;
  /** ISO time of writing. */
  savedAt: string;
  /**
   * The trained LoRA's own settings (absent in checkpoints of older versions): what `export`
   * needs to rebuild it, whatever later happens to the run's pipeline.json.
   */
  lora?: LoraSettings;
}

/**
 * The settings of a checkpoint's trainable adapter.
 *
 * @example
 * ```ts
 * import type { LoraSettings } from "@texforce/core";
 * const s: LoraSettings = {
 *   encoder: "clip-lora",
 *   options: { rank: 4, alpha: 4, targets: ["q_proj", "v_proj"] },
 *   model: "/models/sd15",
 *   layout: { "encoder.layers.0.self_attn.q_proj.lora_A": [4, 768] },
 * };
 * ```
 */
export interface LoraSettings {
  /** The encoder plugin (`encoder.use`). */
  encoder: string;
  /** Its options as trained (rank, alpha, targets, …). */
  options: Record<string, unknown>;
  /** The base model folder. */
  model: string;
  /** Each trainable tensor's name and shape: the base model's key layout the LoRA fits. */
  layout: Record<string, number[]>;
}

/**
 * One file of a checkpoint's manifest.
 *
 * @example
 * ```ts
 * import type { ManifestEntry } from "@texforce/core";
 * const e: ManifestEntry = { size: 1024, sha256: "ab12…" };
 * ```
 */
export interface ManifestEntry {
  /** Bytes. */
  size: number;
  /** SHA-256, hex. */
  sha256: string;
}

/**
 * A checkpoint that is missing, incomplete or fails its manifest.
 *
 * @example
 * ```ts
 * import { CheckpointError } from "@texforce/core";
 * const e = new CheckpointError("runs/x/checkpoints/step-00000004/lora.safetensors: damaged");
 * ```
 */
export class CheckpointError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "CheckpointError";
  }
}

/** A whole checkpoint in memory. */
export interface Checkpoint {
  /** JSON state. */
  state: CheckpointState;
  /** Trainable weights by name. */
  weights: Record<string, { shape: number[]; data: Float32Array }>;
  /** Optimizer state. */
  optimizer: OptimizerState;
  /** The normalised pipeline that produced it (stored as `pipeline.json`). */
  pipeline?: unknown;
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * SHA-256 (hex) of a value's canonical JSON (keys sorted).
 *
 * @example
 * ```ts
 * import { hashConfig } from "@texforce/core";
 * const h = await hashConfig({ b: 1, a: 2 });
 * ```
 */
export async function hashConfig(value: unknown): Promise<string> {
  const canon = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(canon) : v && typeof v === "object"
      ? Object.fromEntries(
        Object.keys(v as object).sort().map((k) => [k, canon((v as Record<string, unknown>)[k])]),
      )
      : v;
  const bytes = new TextEncoder().encode(JSON.stringify(canon(value)));
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Host copies of variables, for a checkpoint.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { snapshotVariables } from "@texforce/core";
 * const w = await snapshotVariables(new Map([["w", tf.variable(tf.ones([2]))]]));
 * ```
 */
export async function snapshotVariables(
  variables: Map<string, Variable>,
): Promise<Checkpoint["weights"]> {
  const out: Checkpoint["weights"] = {};
  for (const [name, v] of variables) {
    out[name] = { shape: [...v.shape], data: (await v.data()) as Float32Array };
  }
  return out;
}

/**
 * Assign checkpoint weights to variables; every variable must be present with its shape.
 *
 * @example
 * ```ts
 * import { loadCheckpoint, restoreVariables } from "@texforce/core";
 * declare const vars: Map<string, import("@tensorflow/tfjs").Variable>;
 * restoreVariables(vars, (await loadCheckpoint("runs/x/checkpoints/step-00000004")).weights, "ckpt");
 * ```
 */
export function restoreVariables(
  variables: Map<string, Variable>,
  weights: Checkpoint["weights"],
  where: string,
): void {
  for (const [name, v] of variables) {
    const w = weights[name];
    if (!w) throw new Error(`${where}: checkpoint has no weight '${name}'`);
    if (w.shape.join(",") !== v.shape.join(",")) {
      throw new Error(
        `${where}: weight '${name}' has shape [${w.shape}], the model expects [${v.shape}]`,
      );
    }
    tf.tidy(() => v.assign(tf.tensor(w.data, w.shape, "float32")));
  }
}

const STEP_DIR = /^step-(\d{8})$/;

/** Folder name of the checkpoint of `step`. */
export function checkpointName(step: number): string {
  return `step-${String(step).padStart(8, "0")}`;
}

/**
 * Write a checkpoint under `dir` atomically and keep only the newest `keep` ones. Returns the
 * checkpoint's folder. A failed write (a full disk) removes its partial folder and throws a
 * {@linkcode CheckpointError} naming the previous checkpoint, which is kept untouched.
 *
 * @example
 * ```ts
 * import { saveCheckpoint, type Checkpoint } from "@texforce/core";
 * declare const ckpt: Checkpoint;
 * const path = await saveCheckpoint("runs/demo/checkpoints", ckpt, 3);
 * ```
 */
export async function saveCheckpoint(dir: string, ckpt: Checkpoint, keep = 3): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const name = checkpointName(ckpt.state.step);
  const final = join(dir, name);
  const tmp = join(dir, `.${name}.${crypto.randomUUID().slice(0, 8)}.tmp`);
  const f32 = (t: Record<string, { shape: number[]; data: Float32Array }>) =>
    Object.fromEntries(
      Object.entries(t).map((
        [k, v],
      ) => [k, { dtype: "F32" as const, shape: v.shape, data: v.data }]),
    );
  const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v, null, 2));
  const files: [string, Uint8Array][] = [
    ["lora.safetensors", encodeSafetensors(f32(ckpt.weights), { format: "texforce-checkpoint" })],
    [
      "optimizer.safetensors",
      encodeSafetensors(f32(ckpt.optimizer.tensors), { step: String(ckpt.optimizer.step) }),
    ],
    ...(ckpt.pipeline !== undefined
      ? [["pipeline.json", json(ckpt.pipeline)] as [string, Uint8Array]]
      : []),
    ["state.json", json(ckpt.state)],
  ];
  const manifest: Record<string, ManifestEntry> = {};
  try {
    await Deno.mkdir(tmp);
    for (const [file, bytes] of files) {
      await faultPoint("checkpoint-write", join(tmp, file));
      await writeFileAtomic(join(tmp, file), bytes);
      manifest[file] = { size: bytes.byteLength, sha256: await sha256(bytes) };
    }
    // manifest.json last: a folder without it (or without state.json) is never taken as complete.
    await writeFileAtomic(join(tmp, "manifest.json"), json({ version: 1, files: manifest }));
    // Replace a checkpoint of the same step without a moment where neither exists.
    const old = join(dir, `.${name}.${crypto.randomUUID().slice(0, 8)}.old.tmp`);
    let replaced = false;
    try {
      await Deno.rename(final, old);
      replaced = true;
    } catch { /* first write of this step */ }
    await Deno.rename(tmp, final);
    await syncFolder(dir);
    if (replaced) await Deno.remove(old, { recursive: true }).catch(() => {});
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    const previous = (await listCheckpoints(dir)).filter((p) => basename(p) !== name).pop();
    throw new CheckpointError(
      `cannot write checkpoint ${final} (${(e as Error).message}); ` +
        (previous
          ? `the previous checkpoint ${previous} is kept intact`
          : "no earlier checkpoint exists"),
    );
  }
  await pruneCheckpoints(dir, keep);
  return final;
}

/** Complete checkpoints in `dir`, oldest first. */
export async function listCheckpoints(dir: string): Promise<string[]> {
  const found: [number, string][] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      const m = e.isDirectory ? STEP_DIR.exec(e.name) : null;
      if (!m) continue;
      try {
        await Deno.stat(join(dir, e.name, "state.json"));
        found.push([Number(m[1]), join(dir, e.name)]);
      } catch { /* incomplete */ }
      // (A damaged folder is listed; loading it fails its manifest, see latestIntactCheckpoint.)
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return found.sort((a, b) => a[0] - b[0]).map(([, p]) => p);
}

async function pruneCheckpoints(dir: string, keep: number): Promise<void> {
  const all = await listCheckpoints(dir);
  for (const p of all.slice(0, Math.max(0, all.length - Math.max(1, keep)))) {
    await Deno.remove(p, { recursive: true });
  }
  // Leftovers of writers that were killed.
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(".step-") && e.name.endsWith(".tmp")) {
      // Only this process writes here (a run folder has one writer), so any .tmp is a leftover.
      await Deno.remove(join(dir, e.name), { recursive: true }).catch(() => {});
    }
  }
}

/**
 * The newest complete checkpoint folder in `dir`, or null.
 *
 * @example
 * ```ts
 * import { latestCheckpoint } from "@texforce/core";
 * const p = await latestCheckpoint("runs/demo/checkpoints");
 * ```
 */
export async function latestCheckpoint(dir: string): Promise<string | null> {
  const all = await listCheckpoints(dir);
  return all.length ? all[all.length - 1] : null;
}

/**
 * The newest checkpoint of `dir` that loads and matches its manifest, with the checkpoint;
 * damaged newer ones are skipped, each reported through `warn`. Null when there is none.
 *
 * @example
 * ```ts
 * import { latestIntactCheckpoint } from "@texforce/core";
 * const hit = await latestIntactCheckpoint("runs/demo/checkpoints", console.error);
 * if (hit) console.log(hit.path, hit.checkpoint.state.step);
 * ```
 */
export async function latestIntactCheckpoint(
  dir: string,
  warn: (line: string) => void = () => {},
): Promise<{ path: string; checkpoint: Checkpoint } | null> {
  const all = await listCheckpoints(dir);
  for (let i = all.length - 1; i >= 0; i--) {
    try {
      return { path: all[i], checkpoint: await loadCheckpoint(all[i]) };
    } catch (e) {
      const next = i > 0 ? `falling back to ${all[i - 1]}` : "no older checkpoint is left";
      warn(`warning: ${(e as Error).message}; ${next}`);
    }
  }
  return null;
}

/**
 * Read a checkpoint folder, verifying every file against its manifest (checkpoints of older
 * versions have none and are read as they are). Throws a {@linkcode CheckpointError} naming the
 * damaged file.
 *
 * @example
 * ```ts
 * import { loadCheckpoint } from "@texforce/core";
 * const c = await loadCheckpoint("runs/demo/checkpoints/step-00000004");
 * console.log(c.state.step);
 * ```
 */
export async function loadCheckpoint(path: string): Promise<Checkpoint> {
  let manifest: Record<string, ManifestEntry> | null = null;
  try {
    manifest = JSON.parse(await Deno.readTextFile(join(path, "manifest.json"))).files;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new CheckpointError(
        `${join(path, "manifest.json")}: unreadable manifest (${(e as Error).message})`,
      );
    }
  }
  const read = async (file: string): Promise<Uint8Array> => {
    const p = join(path, file);
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(p);
    } catch (e) {
      throw new CheckpointError(`${p}: cannot read checkpoint file (${(e as Error).message})`);
    }
    const want = manifest?.[file];
    if (manifest && !want) throw new CheckpointError(`${p}: not in the checkpoint's manifest`);
    if (want) {
      if (bytes.byteLength !== want.size) {
        throw new CheckpointError(
          `${p}: ${bytes.byteLength} bytes, the manifest says ${want.size} (damaged checkpoint)`,
        );
      }
      if (await sha256(bytes) !== want.sha256) {
        throw new CheckpointError(`${p}: SHA-256 differs from the manifest (damaged checkpoint)`);
      }
    }
    return bytes;
  };
  let state: CheckpointState;
  try {
    state = JSON.parse(new TextDecoder().decode(await read("state.json")));
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(
      `${join(path, "state.json")}: cannot read checkpoint state (${(e as Error).message})`,
    );
  }
  if (state.version !== CHECKPOINT_VERSION) {
    throw new CheckpointError(
      `${
        join(path, "state.json")
      }: checkpoint version ${state.version}, expected ${CHECKPOINT_VERSION}`,
    );
  }
  const readAll = async (file: string) => {
    let tensors;
    try {
      tensors = decodeSafetensors(await read(file), join(path, file)).tensors;
    } catch (e) {
      if (e instanceof CheckpointError) throw e;
      throw new CheckpointError((e as Error).message);
    }
    const out: Checkpoint["weights"] = {};
    for (const [k, t] of Object.entries(tensors)) {
      out[k] = { shape: t.shape, data: t.data as Float32Array };
    }
    return out;
  };
  const weights = await readAll("lora.safetensors");
  const opt = await readAll("optimizer.safetensors");
  let pipeline: unknown;
  if (!manifest || manifest["pipeline.json"]) {
    try {
      pipeline = JSON.parse(new TextDecoder().decode(await read("pipeline.json")));
    } catch (e) {
      if (manifest) throw e;
    }
  }
  return { state, weights, optimizer: { step: state.step, tensors: opt }, pipeline };
}
