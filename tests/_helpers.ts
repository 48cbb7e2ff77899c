// Shared test helpers: fixture paths, golden tensors, closeness checks.
import * as tf from "@tensorflow/tfjs";
import { fileURLToPath } from "node:url";
import { join, resolve } from "node:path";
import { type HostTensor, SafetensorsFile } from "../core/io/safetensors.ts";

/**
 * The reference set the parity tests check against: `$TEXFORCE_FIXTURES` when set (a folder with
 * `sd-tiny/`, `clip-tiny/`, … in the layout of the shared fixtures), else `tests/fixtures/`.
 */
export const FIXTURES: string = Deno.env.get("TEXFORCE_FIXTURES")
  ? resolve(Deno.env.get("TEXFORCE_FIXTURES")!)
  : fileURLToPath(new URL("fixtures", import.meta.url));

/** Absolute path of a file of the reference set (see {@linkcode FIXTURES}). */
export function fixture(...parts: string[]): string {
  return join(FIXTURES, ...parts);
}

/** A JSON file of the reference set, parsed. */
export async function fixtureJson<T = Record<string, unknown>>(...parts: string[]): Promise<T> {
  return JSON.parse(await Deno.readTextFile(fixture(...parts))) as T;
}

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
export async function golden(file: "sd-tiny" | "clip-tiny"): Promise<Map<string, HostTensor>> {
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
export async function goldenTensor(file: "sd-tiny" | "clip-tiny", key: string): Promise<tf.Tensor> {
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
  // On Linux, wgpu probes its GL backend too, which loads libEGL (libglvnd); at process exit
  // libEGL's destructor races a thread freeing its thread-specific data, and a run that passed
  // aborts ("double free or corruption", exit code 134; 3 of 40 runs of vae_test.ts). The adapter
  // used is Vulkan's (lavapipe) either way, so keep wgpu to Vulkan unless the caller chose.
  if (Deno.build.os === "linux" && !Deno.env.get("DENO_WEBGPU_BACKEND")) {
    Deno.env.set("DENO_WEBGPU_BACKEND", "vulkan");
  }
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

/**
 * Check the analytic derivative of `f` at `x` along `grad`'s direction against central finite
 * differences with two steps relative to the input's scale (`rels` · ‖x‖), so the check means
 * the same for inputs of any magnitude; each must agree within `tol` relative. Returns the
 * analytic value and each step's relative error.
 */
export function checkDirectionalDerivative(
  f: (x: tf.Tensor) => number,
  x: tf.Tensor,
  grad: tf.Tensor,
  what: string,
  { rels = [1e-3, 2.5e-4], tol = 2e-2 }: { rels?: number[]; tol?: number } = {},
): { analytic: number; errors: number[] } {
  const dir = tf.tidy(() => tf.div(grad, tf.norm(grad)));
  const analytic = tf.tidy(() => tf.sum(tf.mul(grad, dir)).dataSync()[0]);
  const scale = tf.tidy(() => tf.norm(x).dataSync()[0]);
  const errors = rels.map((rel) => {
    const h = rel * scale;
    const at = (s: number) => {
      const xs = tf.tidy(() => tf.add(x, tf.mul(dir, s * h)));
      const v = f(xs);
      xs.dispose();
      return v;
    };
    const fd = (at(1) - at(-1)) / (2 * h);
    const err = Math.abs(fd - analytic) / Math.abs(analytic);
    if (!(err <= tol)) {
      throw new Error(
        `${what}: finite difference ${fd} (h = ${h.toExponential(2)}) vs analytic ${analytic}: ` +
          `relative error ${err.toExponential(2)} > ${tol}`,
      );
    }
    return err;
  });
  dir.dispose();
  return { analytic, errors };
}
