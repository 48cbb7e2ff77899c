/**
 * Training checkpoints: LoRA weights, AdamW moments, step counters, LR schedule state,
 * advantage-tracker buffers, RNG state and a hash of the config.
 *
 * A checkpoint is a folder `step-NNNNNNNN/` written first under a temporary name and renamed
 * when complete, so a process killed mid-write leaves the previous checkpoint intact.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import type { AdvantageTrackerState } from "./advantages.ts";
import type { OptimizerState } from "./optimizer.ts";
import type { RngState } from "./rng.ts";
import { SafetensorsFile, writeFileAtomic, writeSafetensors } from "./io/safetensors.ts";
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
}

/** A whole checkpoint in memory. */
export interface Checkpoint {
  /** JSON state. */
  state: CheckpointState;
  /** Trainable weights by name. */
  weights: Record<string, { shape: number[]; data: Float32Array }>;
  /** Optimizer state. */
  optimizer: OptimizerState;
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
 * checkpoint's folder.
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
  await Deno.mkdir(tmp);
  const f32 = (t: Record<string, { shape: number[]; data: Float32Array }>) =>
    Object.fromEntries(
      Object.entries(t).map((
        [k, v],
      ) => [k, { dtype: "F32" as const, shape: v.shape, data: v.data }]),
    );
  await writeSafetensors(join(tmp, "lora.safetensors"), f32(ckpt.weights), {
    format: "texforce-checkpoint",
  });
  await writeSafetensors(join(tmp, "optimizer.safetensors"), f32(ckpt.optimizer.tensors), {
    step: String(ckpt.optimizer.step),
  });
  // state.json last: a folder without it is never taken as complete.
  await writeFileAtomic(
    join(tmp, "state.json"),
    new TextEncoder().encode(JSON.stringify(ckpt.state, null, 2)),
  );
  try {
    await Deno.remove(final, { recursive: true });
  } catch { /* first write of this step */ }
  await Deno.rename(tmp, final);
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
 * Read a checkpoint folder.
 *
 * @example
 * ```ts
 * import { loadCheckpoint } from "@texforce/core";
 * const c = await loadCheckpoint("runs/demo/checkpoints/step-00000004");
 * console.log(c.state.step);
 * ```
 */
export async function loadCheckpoint(path: string): Promise<Checkpoint> {
  let state: CheckpointState;
  try {
    state = JSON.parse(await Deno.readTextFile(join(path, "state.json")));
  } catch (e) {
    throw new Error(
      `${join(path, "state.json")}: cannot read checkpoint state (${(e as Error).message})`,
    );
  }
  if (state.version !== CHECKPOINT_VERSION) {
    throw new Error(
      `${
        join(path, "state.json")
      }: checkpoint version ${state.version}, expected ${CHECKPOINT_VERSION}`,
    );
  }
  const readAll = async (file: string) => {
    const f = await SafetensorsFile.open(join(path, file));
    const out: Checkpoint["weights"] = {};
    for (const k of f.keys()) {
      const t = await f.read(k);
      out[k] = { shape: t.shape, data: t.data as Float32Array };
    }
    f.close();
    return out;
  };
  const weights = await readAll("lora.safetensors");
  const opt = await readAll("optimizer.safetensors");
  return { state, weights, optimizer: { step: state.step, tensors: opt } };
}
