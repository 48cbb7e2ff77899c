// Shared test helpers: fixture paths, golden tensors, closeness checks.
import * as tf from "@tensorflow/tfjs";
import { fileURLToPath } from "node:url";
import { join, resolve } from "node:path";
import { type HostTensor, SafetensorsFile } from "../core/io/safetensors.ts";

/**
 * Absolute path of a file under the fixtures folder: `$TEXFORCE_FIXTURES` when set (any set of
 * the same layout), else tests/fixtures/.
 */
export function fixture(...parts: string[]): string {
  const root = Deno.env.get("TEXFORCE_FIXTURES");
  if (root) return join(resolve(root), ...parts);
  return fileURLToPath(new URL(["fixtures", ...parts].join("/"), import.meta.url));
}

/** The fixture sets that hold a `golden.safetensors`. */
export type GoldenSet = "sd-tiny" | "clip-tiny" | "imagereward-tiny" | "hpsv2-tiny";

/** The tiny diffusers pipeline folder. */
export const TINY_SD: string = fixture("sd-tiny", "tiny-sd");

/** A minimal valid pipeline on the tiny model (2 DDIM steps, 1 epoch), with overrides. */
export function tinyPipeline(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model: TINY_SD,
    sampler: { steps: 2, batchSize: 2 },
    rewards: [{ use: "brightness" }],
    prompts: { builtin: "tiny" },
    train: { epochs: 1 },
    ...extra,
  };
}

const goldenCache = new Map<string, Map<string, HostTensor>>();

/** Read every tensor of a golden file (cached). */
export async function golden(file: GoldenSet): Promise<Map<string, HostTensor>> {
  const hit = goldenCache.get(file);
  if (hit) return hit;
  const f = await SafetensorsFile.open(fixture(file, "golden.safetensors"));
  const m = new Map<string, HostTensor>();
  for (const k of f.keys()) m.set(k, await f.read(k));
  f.close();
  goldenCache.set(file, m);
  return m;
}

/** A golden tensor as a tf tensor. */
export async function goldenTensor(file: GoldenSet, key: string): Promise<tf.Tensor> {
  const g = (await golden(file)).get(key);
  if (!g) throw new Error(`golden ${file} has no key ${key}`);
  return tf.tensor(g.data, g.shape, g.dtype);
}

/** Max |a - b| / max(1, max|b|). */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) {
    throw new Error(`length mismatch: ${actual.length} vs ${expected.length}`);
  }
  let maxAbs = 0;
  let maxErr = 0;
  for (let i = 0; i < expected.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
    const e = Math.abs(actual[i] - expected[i]);
    if (!(e <= maxErr)) maxErr = Number.isNaN(e) ? Infinity : Math.max(maxErr, e);
  }
  return maxErr / Math.max(1, maxAbs);
}

/** Max |a - b| / max|b|: strict relative error, for small tensors such as gradients. */
export function strictRelativeError(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
): number {
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
  return relativeError(actual, expected) * Math.max(1, maxAbs) / Math.max(maxAbs, 1e-30);
}

/** Throw unless relativeError(actual, expected) <= tol; returns the error. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
): number {
  const err = relativeError(actual, expected);
  if (!(err <= tol)) throw new Error(`${what}: relative error ${err.toExponential(3)} > ${tol}`);
  return err;
}

/** NCHW host data → NHWC tensor. */
export function nchwToNhwc(t: HostTensor): tf.Tensor4D {
  return tf.tidy(() =>
    tf.tensor4d(t.data as Float32Array, t.shape as [number, number, number, number]).transpose([
      0,
      2,
      3,
      1,
    ])
  );
}

/** Backends to run parity tests on: cpu and wasm always, webgpu when an adapter exists. */
export async function availableBackends(): Promise<string[]> {
  const out = ["cpu", "wasm"];
  // Quiet wgpu's Vulkan loader (it wants XDG_RUNTIME_DIR) as useBackend does.
  if (!Deno.env.get("XDG_RUNTIME_DIR")) {
    const dir = await Deno.makeTempDir({ prefix: "texforce-xdg-" });
    await Deno.chmod(dir, 0o700);
    Deno.env.set("XDG_RUNTIME_DIR", dir);
  }
  const gpu = (globalThis.navigator as { gpu?: GPU }).gpu;
  if (gpu && (await gpu.requestAdapter().catch(() => null))) out.push("webgpu");
  return out;
}
