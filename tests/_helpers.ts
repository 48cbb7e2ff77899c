// Shared test helpers: fixture paths, golden tensors, closeness checks.
import * as tf from "@tensorflow/tfjs";
import { fileURLToPath } from "node:url";
import { join, resolve } from "node:path";
import { type HostTensor, SafetensorsFile } from "../core/io/safetensors.ts";
import { prepareWebgpuEnvironment } from "../core/backend.ts";

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

/** The fixture sets that hold a `golden.safetensors`. */
export type GoldenSet = "sd-tiny" | "clip-tiny" | "imagereward-tiny" | "hpsv2-tiny";

/** The tiny diffusers pipeline folder. */
export const TINY_SD: string = fixture("sd-tiny", "tiny-sd");

/**
 * The project's own copy of the tiny model, which the example pipelines name by relative path
 * (it stays the same when `$TEXFORCE_FIXTURES` points the parity tests elsewhere).
 */
export const PROJECT_TINY_SD: string = fileURLToPath(
  new URL("fixtures/sd-tiny/tiny-sd", import.meta.url),
);

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

// `TEXFORCE_PARITY_LOG=<file>` appends every comparison's error (what, error, bound), for the
// worst-error figures of a closing note.
let parityLog: string | undefined;
try {
  parityLog = Deno.env.get("TEXFORCE_PARITY_LOG");
} catch { /* no env permission */ }
function logParity(what: string, err: number, tol: number): void {
  if (parityLog) Deno.writeTextFileSync(parityLog, `${what}\t${err}\t${tol}\n`, { append: true });
}

/**
 * max |a − b| over max |b| for two tensors (0-scale references count as 1e-30), computed on the
 * backend: the kernel-against-stock comparisons of tests/adapters/wasm.
 */
export function tensorRelativeError(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() =>
    tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] / Math.max(tf.max(tf.abs(b)).dataSync()[0], 1e-30)
  );
}

/** Throw unless relativeError(actual, expected) <= tol; returns the error. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
): number {
  const err = relativeError(actual, expected);
  logParity(what, err, tol);
  if (!(err <= tol)) throw new Error(`${what}: relative error ${err.toExponential(3)} > ${tol}`);
  return err;
}

/**
 * {@linkcode assertClose}, and also at most 10·tol relative to the expected tensor's own largest
 * magnitude: scores and embeddings of ~1e-2 would otherwise pass with errors of several percent.
 */
export function assertCloseToScale(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
): number {
  const err = relativeError(actual, expected);
  const own = strictRelativeError(actual, expected);
  logParity(what, err, tol);
  if (!(err <= tol) || !(own <= 10 * tol)) {
    throw new Error(
      `${what}: relative error ${err.toExponential(3)} (bound ${tol}), ` +
        `${own.toExponential(3)} of its own scale (bound ${10 * tol})`,
    );
  }
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

/**
 * Backends to run parity tests on: cpu and wasm always, webgpu when an adapter exists; or the
 * comma-separated list in `$TEXFORCE_BACKENDS` (the mutation runner uses `wasm` alone).
 */
export async function availableBackends(): Promise<string[]> {
  const only = Deno.env.get("TEXFORCE_BACKENDS");
  if (only) return only.split(",").map((s) => s.trim()).filter(Boolean);
  const out = ["cpu", "wasm"];
  // Before any adapter request: keeps wgpu to Vulkan on Linux (a libEGL teardown race aborted
  // passing runs with exit code 134) and gives its loader a runtime folder.
  prepareWebgpuEnvironment();
  const gpu = (globalThis.navigator as { gpu?: GPU }).gpu;
  if (gpu && (await gpu.requestAdapter().catch(() => null))) out.push("webgpu");
  return out;
}

/** What the sd-tiny reference set says about its text encoder and LoRA, read from its files. */
export interface TextEncoderFacts {
  /** `text_encoder/config.json` fields the tests use. */
  hidden: number;
  layers: number;
  intermediate: number;
  maxLength: number;
  /** Rows of the golden token ids ([prompts, maxLength]). */
  prompts: number;
  /** The `lora_peft` adapter: rank, alpha and target modules. */
  lora: { r: number; alpha: number; targets: string[] };
}

/**
 * The sizes of the reference set's text encoder and adapter (nothing hard-coded in tests).
 *
 * @example
 * ```ts
 * const { hidden, layers } = await textEncoderFacts();
 * ```
 */
export async function textEncoderFacts(): Promise<TextEncoderFacts> {
  const te = await fixtureJson<Record<string, number>>(
    "sd-tiny",
    "tiny-sd",
    "text_encoder",
    "config.json",
  );
  const peft = await fixtureJson<{ r: number; lora_alpha: number; target_modules: string[] }>(
    "sd-tiny",
    "lora_peft",
    "adapter_config.json",
  );
  const ids = (await golden("sd-tiny")).get("tokenizer.input_ids")!;
  return {
    hidden: te.hidden_size,
    layers: te.num_hidden_layers,
    intermediate: te.intermediate_size,
    maxLength: ids.shape[1],
    prompts: ids.shape[0],
    lora: { r: peft.r, alpha: peft.lora_alpha, targets: [...peft.target_modules].sort() },
  };
}

/** The settings `sd-tiny/golden.json` records for its sample, PPO and AdamW goldens. */
export interface GoldenSettings {
  lora: { r: number; alpha: number; targets: string[] };
  sample: { eta: number; guidance: number; steps: number };
  ppo: { clipRange: number; advClipMax: number };
  adamw: {
    lr: number;
    betas: [number, number];
    eps: number;
    weightDecay: number;
    maxGradNorm: number;
  };
}

/**
 * Read the settings of the golden run from `golden.json` (tests never restate them).
 *
 * @example
 * ```ts
 * const { sample } = await goldenSettings();
 * ```
 */
export async function goldenSettings(): Promise<GoldenSettings> {
  // deno-lint-ignore no-explicit-any
  const j = await fixtureJson<any>("sd-tiny", "golden.json");
  const a = j.ppo.adamw;
  return {
    lora: { r: j.lora.r, alpha: j.lora.alpha, targets: j.lora.targets },
    sample: {
      eta: j.sample.eta,
      guidance: j.sample.guidance_scale,
      steps: j.sample.num_inference_steps,
    },
    ppo: { clipRange: j.ppo.clip_range, advClipMax: j.ppo.adv_clip_max },
    adamw: {
      lr: a.lr,
      betas: a.betas,
      eps: a.eps,
      weightDecay: a.weight_decay,
      maxGradNorm: a.max_grad_norm,
    },
  };
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

/**
 * A tensor of deterministic values in [-1, 1) from a linear congruential generator, so kernel
 * parity failures reproduce from the seed alone.
 *
 * @example
 * ```ts
 * const x = seededTensor([2, 3], 7); // the same six values on every run and backend
 * ```
 */
export function seededTensor(shape: number[], seed: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 31 - 1;
  }
  return tf.tensor(data, shape);
}

/**
 * Run `fn` inside a WebGPU validation error scope and fail on any error: a shader that does not
 * compile makes WebGPU skip the dispatch silently, leaving whatever the output buffer held.
 *
 * @example
 * ```ts
 * import { noGpuErrors } from "./_helpers.ts";
 * await noGpuErrors(async () => {
 *   // run kernels on the webgpu backend
 * });
 * ```
 */
export async function noGpuErrors(fn: () => Promise<void>): Promise<void> {
  const device = (tf.backend() as unknown as { device: GPUDevice }).device;
  device.pushErrorScope("validation");
  let failure: unknown = null;
  try {
    await fn();
  } catch (e) {
    failure = e;
  }
  const err = await device.popErrorScope();
  if (err) throw new Error(`WebGPU validation error: ${err.message}`);
  if (failure) throw failure;
}
