// The UNet's samples shared over module workers, each with its own single-threaded wasm backend
// and a copy of the weights (_sample_worker.ts), for small batches on several cores.
//
// At small batches the threaded backend cannot keep a second core busy: each of the ~240 kernels
// of a tiny-UNet forward is too short to share, and tfjs' and texforce's JavaScript between them
// (about 40 % of the calling thread's time) runs on one thread. Whole samples can: two
// single-threaded processes each running batch 1 of the tiny UNet at the same time took 14.2 ms
// (forward) and 33.5 ms (forward + backward) a sample together, where one two-threaded process
// took 22.2 and 49.5 at batch 2, and 14.2 and 31.1 at batch 64 (this project's 2-vCPU VM).
//
// Every call is synchronous, as a tfjs op must be: the calling thread posts each worker its
// contiguous run of samples with a SharedArrayBuffer for the answer and sleeps in Atomics.wait
// until the worker has written it. Under a gradient tape the forward is one half of a custom
// gradient: the worker runs its samples inside `tf.grad`, writes the output, and waits there,
// tape kept, for the output's gradient, which the custom gradient's backward writes into the
// same buffer; the worker then back-propagates and writes the encoder states' gradient. So a
// forward + backward costs what it costs on one backend, not a second forward. Each sample's
// output and gradient are bitwise those of the model's own batched call (a batch's samples never
// mix in the UNet, and the kernels compute a sample's values the same way at any batch and on
// any thread count: tests/adapters/unet/sample_workers_test.ts).
import * as tf from "@tensorflow/tfjs";
import { Worker } from "node:worker_threads";
import type { Tensor3D, Tensor4D } from "../../core/tensor_types.ts";

const WORKER_URL = new URL("./_sample_worker.ts", import.meta.url);

/** Header states of a call's buffer (Int32 at 0). */
export const CALL = {
  POSTED: 0,
  FORWARD_DONE: 1,
  DY_READY: 2,
  CANCEL: 3,
  GRAD_DONE: 4,
  FAILED: -1,
} as const;

/** Bytes before the floats: the state, the error text's length, two spare words. */
export const HEADER_BYTES = 16;
/** Room for a worker's error message (UTF-8) at the end of the buffer. */
export const ERROR_BYTES = 4096;

/**
 * Where a share's floats are in its call buffer (after the header), for an output of
 * `epsSize` values: the output, its gradient, then the encoder states' gradient. Both sides
 * read the layout from here.
 *
 * @example
 * ```ts
 * import { shareLayout } from "./_sample_workers.ts";
 * console.log(shareLayout(1024)); // { eps: 0, dy: 1024, dStates: 2048 }
 * ```
 */
export function shareLayout(epsSize: number): { eps: number; dy: number; dStates: number } {
  return { eps: 0, dy: epsSize, dStates: 2 * epsSize };
}

/** A weights snapshot: the model's weight tree with each tensor as its values. */
export type WeightTree = unknown;

/** One worker's share of a call. */
interface Share {
  header: Int32Array;
  floats: Float32Array;
  sab: SharedArrayBuffer;
  /** Samples [first, first + count). */
  first: number;
  count: number;
  epsSize: number;
  statesSize: number;
}

// Wait while the share's state is `state` (a worker never takes minutes; a dead one would).
function waitWhile(s: Share, state: number, what: string): number {
  const deadline = performance.now() + 30 * 60_000;
  let now = Atomics.load(s.header, 0);
  while (now === state) {
    if (performance.now() > deadline) {
      throw new Error(`UNet sample workers: no answer for the ${what} after 30 minutes`);
    }
    Atomics.wait(s.header, 0, state, 1000);
    now = Atomics.load(s.header, 0);
  }
  if (now === CALL.FAILED) {
    const n = s.header[1];
    const at = s.sab.byteLength - ERROR_BYTES;
    const text = new TextDecoder().decode(new Uint8Array(s.sab, at, n).slice());
    throw new Error(`UNet sample worker (${what}): ${text}`);
  }
  return now;
}

// Whether tfjs is recording a tape here (its engine's own test: inside a gradient, not in a
// kernel).
function tapeOn(): boolean {
  const state =
    (tf.engine() as unknown as { state: { gradientDepth: number; kernelDepth: number } })
      .state;
  return state.gradientDepth > 0 && state.kernelDepth === 0;
}

/**
 * Workers that each hold a copy of a UNet and run a contiguous share of a batch's samples.
 *
 * @example
 * ```ts
 * import { SampleWorkers } from "./_sample_workers.ts";
 * declare const snapshot: { config: unknown; weights: unknown };
 * const workers = await SampleWorkers.start(snapshot, 2);
 * workers.dispose();
 * ```
 */
export class SampleWorkers {
  readonly #workers: Worker[];
  readonly #outChannels: number;
  /** The shares of a forward whose gradient has not been asked for yet (workers waiting). */
  #pending: Share[] | null = null;

  private constructor(workers: Worker[], outChannels: number) {
    this.#workers = workers;
    this.#outChannels = outChannels;
  }

  /** How many workers run. */
  get size(): number {
    return this.#workers.length;
  }

  /**
   * Start `count` workers, each building the model from `snapshot` on its own single-threaded
   * wasm backend; resolves once all are ready.
   *
   * @example
   * ```ts
   * import { SampleWorkers } from "./_sample_workers.ts";
   * declare const snapshot: { config: { outChannels: number }; weights: unknown };
   * const w = await SampleWorkers.start(snapshot, 2);
   * console.log(w.size); // 2
   * ```
   */
  static async start(
    snapshot: { config: { outChannels: number }; weights: WeightTree },
    count: number,
  ): Promise<SampleWorkers> {
    const workers: Worker[] = [];
    try {
      for (let i = 0; i < count; i++) workers.push(new Worker(WORKER_URL));
      await Promise.all(workers.map((w, i) =>
        new Promise<void>((resolve, reject) => {
          const onMessage = (m: { kind: string; error?: string }) => {
            w.off("message", onMessage);
            w.off("error", onError);
            if (m.kind === "ready") resolve();
            else reject(new Error(`UNet sample worker ${i} did not start: ${m.error}`));
          };
          const onError = (e: Error) => {
            w.off("message", onMessage);
            reject(new Error(`UNet sample worker ${i} did not start: ${e.message}`));
          };
          w.on("message", onMessage);
          w.on("error", onError);
          w.postMessage({ kind: "init", snapshot });
        })
      ));
    } catch (e) {
      for (const w of workers) w.terminate();
      throw e;
    }
    // Idle workers must not keep the process alive.
    for (const w of workers) w.unref();
    return new SampleWorkers(workers, snapshot.config.outChannels);
  }

  /**
   * The UNet's output for `sample` [B, H, W, C] at `timesteps` (one per sample) with `states`
   * [B, L, D], its B samples shared over the workers; under a gradient tape, with the gradient
   * into `states`.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { SampleWorkers } from "./_sample_workers.ts";
   * declare const w: SampleWorkers;
   * const eps = w.forward(tf.zeros([2, 16, 16, 4]), [999, 500], tf.zeros([2, 77, 32]), 0);
   * ```
   */
  forward(
    sample: Tensor4D,
    timesteps: number[],
    states: Tensor3D,
    attentionSlice: number,
  ): Tensor4D {
    // A forward whose gradient never came (a tape that did not reach it): its workers are
    // still waiting inside their gradient; let them go before anything else.
    this.#cancelPending();
    const [b, h, w] = sample.shape;
    const outShape: [number, number, number, number] = [b, h, w, this.#outChannels];
    const grad = tapeOn();
    const x = sample.dataSync() as Float32Array;
    const s = states.dataSync() as Float32Array;
    const shares = this.#post(
      grad ? "grad" : "forward",
      x,
      sample.shape,
      timesteps,
      s,
      states.shape,
      attentionSlice,
    );
    const eps = new Float32Array(b * h * w * this.#outChannels);
    for (const share of shares) {
      waitWhile(share, CALL.POSTED, "forward");
      eps.set(share.floats.subarray(0, share.epsSize), share.first * h * w * this.#outChannels);
    }
    if (!grad) return tf.tensor4d(eps, outShape);
    this.#pending = shares;
    const sShape = states.shape;
    const op = tf.customGrad((_st) => ({
      value: tf.tensor4d(eps, outShape),
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) =>
        tf.tensor3d(this.#backward(shares, dy as tf.Tensor), sShape),
    }));
    return op(states) as Tensor4D;
  }

  #post(
    kind: "forward" | "grad",
    x: Float32Array,
    xShape: number[],
    timesteps: number[],
    s: Float32Array,
    sShape: number[],
    attentionSlice: number,
  ): Share[] {
    const b = xShape[0];
    const n = Math.min(b, this.#workers.length);
    const xPer = x.length / b, sPer = s.length / b;
    const epsPer = xShape[1] * xShape[2] * this.#outChannels;
    const shares: Share[] = [];
    let first = 0;
    for (let i = 0; i < n; i++) {
      const count = Math.floor(b / n) + (i < b % n ? 1 : 0);
      const epsSize = count * epsPer, statesSize = count * sPer;
      // Output, its gradient, the states' gradient; then the error text.
      const floats = kind === "grad" ? shareLayout(epsSize).dStates + statesSize : epsSize;
      const sab = new SharedArrayBuffer(HEADER_BYTES + 4 * floats + ERROR_BYTES);
      const share: Share = {
        header: new Int32Array(sab, 0, 4),
        floats: new Float32Array(sab, HEADER_BYTES, floats),
        sab,
        first,
        count,
        epsSize,
        statesSize,
      };
      this.#workers[i].postMessage({
        kind,
        sab,
        x: x.slice(first * xPer, (first + count) * xPer),
        xShape: [count, xShape[1], xShape[2], xShape[3]],
        timesteps: timesteps.slice(first, first + count),
        states: s.slice(first * sPer, (first + count) * sPer),
        statesShape: [count, sShape[1], sShape[2]],
        attentionSlice,
      });
      shares.push(share);
      first += count;
    }
    return shares;
  }

  #backward(shares: Share[], dy: tf.Tensor): Float32Array {
    if (this.#pending !== shares) {
      throw new Error(
        "UNet sample workers: the gradient of a forward was asked after a later forward; " +
          "a gradient tape may hold one UNet forward at a time here (or stop the workers: " +
          "unet.stopSampleWorkers())",
      );
    }
    this.#pending = null;
    const d = dy.dataSync() as Float32Array;
    const out = new Float32Array(shares.reduce((n, sh) => n + sh.statesSize, 0));
    let epsAt = 0;
    for (const share of shares) {
      share.floats.set(d.subarray(epsAt, epsAt + share.epsSize), shareLayout(share.epsSize).dy);
      epsAt += share.epsSize;
      Atomics.store(share.header, 0, CALL.DY_READY);
      Atomics.notify(share.header, 0);
    }
    let at = 0;
    for (const share of shares) {
      waitWhile(share, CALL.DY_READY, "backward");
      const from = shareLayout(share.epsSize).dStates;
      out.set(share.floats.subarray(from, from + share.statesSize), at);
      at += share.statesSize;
    }
    return out;
  }

  #cancelPending(): void {
    const shares = this.#pending;
    if (!shares) return;
    this.#pending = null;
    for (const share of shares) {
      Atomics.store(share.header, 0, CALL.CANCEL);
      Atomics.notify(share.header, 0);
    }
    // The workers finish their (discarded) gradient before taking the next message.
  }

  /**
   * Stop the workers.
   *
   * @example
   * ```ts
   * import type { SampleWorkers } from "./_sample_workers.ts";
   * declare const w: SampleWorkers;
   * w.dispose();
   * ```
   */
  dispose(): void {
    this.#cancelPending();
    for (const w of this.#workers) w.terminate();
  }
}
