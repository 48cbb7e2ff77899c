// The UNet's samples shared between the calling thread and module workers, each worker with its
// own single-threaded wasm backend and a copy of the weights (_sample_worker.ts), for small
// batches on several cores.
//
// At small batches the threaded backend cannot keep a second core busy: each of the ~240 kernels
// of a tiny-UNet forward is too short to share, and tfjs' and texforce's JavaScript between them
// (about 40 % of the calling thread's time) runs on one thread. Whole samples can: two
// single-threaded processes each running batch 1 of the tiny UNet at the same time took 14.2 ms
// (forward) and 33.5 ms (forward + backward) a sample together, where one two-threaded process
// took 22.2 and 49.5 at batch 2, and 14.2 and 31.1 at batch 64 (this project's 2-vCPU VM).
//
// The calling thread takes the first share itself, with its kernels held on it (core/backend.ts
// `holdCallingThread`), so n threads need n − 1 workers and no thread sits waiting.
//
// Every call is synchronous, as a tfjs op must be, and goes through one growable
// SharedArrayBuffer per worker (`callLayout`): the calling thread writes a share's inputs there
// and wakes the worker, which sleeps in Atomics.wait between calls (a posted message took 1 ms to
// reach it, at the 90th percentile 5.6 ms, on the critical path of a 30 ms call); the calling
// thread then runs its own share and sleeps in Atomics.wait until the worker has written its
// output. Under a gradient tape the forward is one half of a custom gradient: the worker runs
// its samples inside `tf.grad`, writes the output, and waits there, tape kept, for the output's
// gradient, which the custom gradient's backward writes into the same buffer; the worker then
// back-propagates and writes the encoder states' gradient. So a forward + backward costs what
// it costs on one backend, not a second forward. Each sample's output and gradient are bitwise
// those of the model's own batched call (a batch's samples never mix in the UNet, and the
// kernels compute a sample's values the same way at any batch and on any thread count:
// tests/adapters/unet/sample_workers_test.ts).
import * as tf from "@tensorflow/tfjs";
import { Worker } from "node:worker_threads";
import type { Tensor3D, Tensor4D } from "../../core/tensor_types.ts";
import { holdCallingThread } from "../../core/backend.ts";

const WORKER_URL = new URL("./_sample_worker.ts", import.meta.url);

/** States of a worker's call (Int32 word 0 of its buffer). */
export const CALL = {
  /** No call yet, or a failed one's error has been read. */
  IDLE: 0,
  POSTED: 1,
  FORWARD_DONE: 2,
  DY_READY: 3,
  CANCEL: 4,
  GRAD_DONE: 5,
  /** The worker is to return from its loop (then it is terminated). */
  STOP: 6,
  FAILED: -1,
} as const;

/**
 * Int32 words of the header: the state, the error text's length, busy (1 from a call's posting
 * until the worker is done with it), and the count of calls posted (what a worker waits on: a
 * call may be let go, its state CANCEL, before the worker has even seen it POSTED).
 */
export const WORD = { STATE: 0, ERROR_LENGTH: 1, BUSY: 2, CALLS: 3 } as const;

/** Bytes before the call: the header's words, then room for an error message (UTF-8). */
export const HEADER_BYTES = 64;
export const ERROR_BYTES = 4096;
/** A call's numbers before its timesteps (Float64 each): see {@linkcode callLayout}. */
export const META = 9;
/** Where a call's numbers start in a worker's buffer (whatever its shape). */
export const CALL_AT = HEADER_BYTES + ERROR_BYTES;
/** Largest buffer a worker's calls may grow to (address space reserved, not memory). */
export const MAX_CALL_BYTES = 2 ** 31;

/** What a call is: its kind (0 forward, 1 forward + backward), shapes and attention slice. */
export interface CallShape {
  grad: boolean;
  /** x [b, h, w, c]; states [b, l, d]; output [b, h, w, out]. */
  b: number;
  h: number;
  w: number;
  c: number;
  l: number;
  d: number;
  out: number;
  attentionSlice: number;
}

/**
 * Where a call's parts are in a worker's buffer, in bytes from its start: after its numbers
 * (at {@linkcode CALL_AT}: META Float64 values, then the timesteps), Float32 x, the states, the
 * output, its gradient and the states' gradient (the last two only for a forward + backward);
 * `bytes` the total. Both sides read the layout from here.
 *
 * @example
 * ```ts
 * import { callLayout } from "./_sample_workers.ts";
 * const at = callLayout({ grad: false, b: 1, h: 2, w: 2, c: 4, l: 3, d: 8, out: 4, attentionSlice: 0 });
 * console.log(at.x, at.bytes); // 4240 4464
 * ```
 */
export function callLayout(
  s: CallShape,
): {
  x: number;
  states: number;
  eps: number;
  dy: number;
  dStates: number;
  bytes: number;
} {
  const x = CALL_AT + 8 * (META + s.b);
  const states = x + 4 * s.b * s.h * s.w * s.c;
  const eps = states + 4 * s.b * s.l * s.d;
  const dy = eps + 4 * s.b * s.h * s.w * s.out;
  const dStates = dy + (s.grad ? 4 * s.b * s.h * s.w * s.out : 0);
  const bytes = dStates + (s.grad ? 4 * s.b * s.l * s.d : 0);
  return { x, states, eps, dy, dStates, bytes };
}

/**
 * Write a call's numbers (its shape and timesteps) at {@linkcode CALL_AT}, or read them back.
 *
 * @example
 * ```ts
 * import { CALL_AT, readCallShape, writeCallShape } from "./_sample_workers.ts";
 * const sab = new SharedArrayBuffer(CALL_AT + 8 * 16);
 * const shape = { grad: true, b: 2, h: 8, w: 8, c: 4, l: 77, d: 32, out: 4, attentionSlice: 0 };
 * writeCallShape(sab, shape, [999, 500]);
 * console.log(readCallShape(sab).timesteps); // [999, 500]
 * ```
 */
export function writeCallShape(sab: SharedArrayBuffer, s: CallShape, timesteps: number[]): void {
  const f = new Float64Array(sab, CALL_AT, META + s.b);
  f.set([s.grad ? 1 : 0, s.b, s.h, s.w, s.c, s.l, s.d, s.out, s.attentionSlice]);
  f.set(timesteps, META);
}

/**
 * See {@linkcode writeCallShape}.
 *
 * @example
 * ```ts
 * import { readCallShape } from "./_sample_workers.ts";
 * declare const sab: SharedArrayBuffer;
 * console.log(readCallShape(sab).shape.b);
 * ```
 */
export function readCallShape(sab: SharedArrayBuffer): { shape: CallShape; timesteps: number[] } {
  const [grad, b, h, w, c, l, d, out, attentionSlice] = new Float64Array(sab, CALL_AT, META);
  const timesteps = Array.from(new Float64Array(sab, CALL_AT + 8 * META, b));
  return { shape: { grad: grad === 1, b, h, w, c, l, d, out, attentionSlice }, timesteps };
}

/** One worker and its call buffer. */
interface Lane {
  worker: Worker;
  sab: SharedArrayBuffer;
  header: Int32Array;
}

/** One worker's share of a call: its lane, and the call as that worker sees it. */
interface Share {
  lane: Lane;
  shape: CallShape;
}

/** A forward under a tape: its workers' shares, and how far its backward has come. */
interface Call {
  shares: Share[];
  /** Held from the first output gradient handed over until the last answer is in. */
  backwardHold: (() => void) | null;
  /** Shares whose gradient into the states is in. */
  collected: number;
}

/** The model's own call on this thread, for this thread's share. */
export type ShareHere = (x: Tensor4D, timesteps: number[], states: Tensor3D) => Tensor4D;

/**
 * `batch` samples in `parts` contiguous shares, as even as they come (the first ones larger),
 * no empty share: fewer shares than `parts` for a small batch.
 *
 * @example
 * ```ts
 * import { shareCounts } from "./_sample_workers.ts";
 * console.log(shareCounts(5, 2), shareCounts(2, 3)); // [3, 2] [1, 1]
 * ```
 */
export function shareCounts(batch: number, parts: number): number[] {
  const n = Math.min(batch, parts);
  return Array.from({ length: n }, (_, i) => Math.floor(batch / n) + (i < batch % n ? 1 : 0));
}

// A worker never takes minutes over a call; a dead one would.
const NO_ANSWER_MS = 30 * 60_000;

// Wait while word `word` of the lane's header is `value`; then the state, unless it says the
// worker failed (its error is thrown).
function waitWhile(lane: Lane, word: number, value: number, what: string): number {
  const deadline = performance.now() + NO_ANSWER_MS;
  while (Atomics.load(lane.header, word) === value) {
    if (performance.now() > deadline) {
      throw new Error(`UNet sample workers: no answer for the ${what} after 30 minutes`);
    }
    Atomics.wait(lane.header, word, value, 1000);
  }
  const state = Atomics.load(lane.header, WORD.STATE);
  if (state === CALL.FAILED) {
    const n = lane.header[WORD.ERROR_LENGTH];
    const text = new TextDecoder().decode(new Uint8Array(lane.sab, HEADER_BYTES, n).slice());
    // The worker is back in its loop: the next call starts afresh.
    Atomics.store(lane.header, WORD.STATE, CALL.IDLE);
    throw new Error(`UNet sample worker (${what}): ${text}`);
  }
  return state;
}

/**
 * Whether tfjs is recording a tape here (its engine's own test: inside a gradient, not in a
 * kernel).
 *
 * @example
 * ```ts
 * import { tapeOn } from "./_sample_workers.ts";
 * console.log(tapeOn()); // false
 * ```
 */
export function tapeOn(): boolean {
  const state =
    (tf.engine() as unknown as { state: { gradientDepth: number; kernelDepth: number } })
      .state;
  return state.gradientDepth > 0 && state.kernelDepth === 0;
}

const floatsAt = (sab: SharedArrayBuffer, byte: number, n: number) =>
  new Float32Array(sab, byte, n);

/**
 * Workers that each hold a copy of a UNet and run a contiguous share of a batch's samples,
 * beside the calling thread's own share.
 *
 * @example
 * ```ts
 * import { SampleWorkers } from "./_sample_workers.ts";
 * declare const snapshot: { config: { outChannels: number } }; // a UNetSnapshot
 * const workers = await SampleWorkers.start(snapshot, 1);
 * workers.dispose();
 * ```
 */
export class SampleWorkers {
  readonly #lanes: Lane[];
  readonly #outChannels: number;
  /** The forward under a tape whose gradients are not all in yet (workers waiting). */
  #pending: Call | null = null;

  private constructor(lanes: Lane[], outChannels: number) {
    this.#lanes = lanes;
    this.#outChannels = outChannels;
  }

  /** How many workers run. */
  get size(): number {
    return this.#lanes.length;
  }

  /**
   * Start `count` workers, each building the model from `snapshot` on its own single-threaded
   * wasm backend; resolves once all are ready (and waiting for calls).
   *
   * @example
   * ```ts
   * import { SampleWorkers } from "./_sample_workers.ts";
   * declare const snapshot: { config: { outChannels: number } }; // a UNetSnapshot
   * const w = await SampleWorkers.start(snapshot, 2);
   * console.log(w.size); // 2
   * ```
   */
  static async start(
    // A UNetSnapshot (unet_2d_condition.ts, which imports this module): sent to each worker as
    // it is; only its output width is read here.
    snapshot: { config: { outChannels: number } },
    count: number,
  ): Promise<SampleWorkers> {
    const lanes: Lane[] = [];
    try {
      for (let i = 0; i < count; i++) {
        const sab = new SharedArrayBuffer(HEADER_BYTES + ERROR_BYTES, {
          maxByteLength: MAX_CALL_BYTES,
        });
        lanes.push({ worker: new Worker(WORKER_URL), sab, header: new Int32Array(sab, 0, 4) });
      }
      await Promise.all(
        lanes.map(({ worker: w, sab }, i) =>
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
            w.postMessage({ kind: "init", snapshot, sab });
          })
        ),
      );
    } catch (e) {
      for (const l of lanes) l.worker.terminate();
      throw e;
    }
    // Idle workers must not keep the process alive.
    for (const l of lanes) l.worker.unref();
    return new SampleWorkers(lanes, snapshot.config.outChannels);
  }

  /**
   * The UNet's output for `sample` [B, H, W, C] at `timesteps` (one per sample) with `states`
   * [B, L, D], its B samples shared between this thread (the first share, by `here`, the
   * model's own call, with the work held on this thread) and the workers; under a gradient
   * tape, with the gradient into `states` (as every share's: `sample` gets none).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { SampleWorkers } from "./_sample_workers.ts";
   * declare const w: SampleWorkers;
   * declare const unetHere: (x: tf.Tensor4D, t: number[], s: tf.Tensor3D) => tf.Tensor4D;
   * const eps = w.forward(tf.zeros([2, 16, 16, 4]), [999, 500], tf.zeros([2, 77, 32]), 0, unetHere);
   * ```
   */
  forward(
    sample: Tensor4D,
    timesteps: number[],
    states: Tensor3D,
    attentionSlice: number,
    here: ShareHere,
  ): Tensor4D {
    // A forward whose gradient never came (a tape that did not reach it): its workers are
    // still waiting inside their gradient; let them go before anything else.
    this.#cancelPending();
    const [b, h, w, c] = sample.shape;
    const [, l, d] = states.shape;
    const counts = shareCounts(b, this.#lanes.length + 1);
    const grad = tapeOn();
    const x = sample.dataSync() as Float32Array;
    const s = states.dataSync() as Float32Array;
    const shares: Share[] = [];
    let first = counts[0];
    for (let i = 1; i < counts.length; i++) {
      const count = counts[i];
      const shape: CallShape = {
        grad,
        b: count,
        h,
        w,
        c,
        l,
        d,
        out: this.#outChannels,
        attentionSlice,
      };
      shares.push(this.#post(this.#lanes[i - 1], shape, first, x, s, timesteps));
      first += count;
    }
    const call: Call = { shares, backwardHold: null, collected: 0 };
    // Pending from here: should this thread's share fail, the next call lets the workers go.
    if (grad) this.#pending = call;
    const mine = counts[0];
    // This thread's share runs beside the workers': its kernels keep to this thread.
    const release = holdCallingThread();
    try {
      return tf.tidy(() => {
        // A tensor of its own: like the workers' shares, this one takes no gradient into x.
        const xHere = tf.tensor4d(x.subarray(0, mine * h * w * c), [mine, h, w, c]);
        const tHere = timesteps.slice(0, mine);
        if (!grad) {
          const epsHere = here(xHere, tHere, states.slice(0, mine));
          return tf.concat([epsHere, ...shares.map((sh) => this.#output(sh))]);
        }
        // The workers' gradients come in two ops each, recorded around this thread's share so
        // that back-propagation (which runs a tape's ops last to first) hands each worker its
        // output's gradient first, runs this thread's share backward meanwhile, and only then
        // waits for the workers' answers.
        const parts = tf.split(states, counts);
        const tokens = shares.map((sh, i) => this.#collector(call, sh)(parts[i + 1]));
        const epsHere = here(xHere, tHere, parts[0] as Tensor3D);
        const rest = shares.map((sh, i) => this.#answer(call, sh, this.#output(sh))(tokens[i]));
        return tf.concat([epsHere, ...rest]);
      }) as Tensor4D;
    } finally {
      release();
    }
  }

  // Write a share's inputs into its lane's buffer and wake the worker.
  #post(
    lane: Lane,
    shape: CallShape,
    first: number,
    x: Float32Array,
    s: Float32Array,
    timesteps: number[],
  ): Share {
    // The worker may still be finishing a call let go of (a cancelled gradient).
    waitWhile(lane, WORD.BUSY, 1, "previous call");
    const at = callLayout(shape);
    if (at.bytes > lane.sab.maxByteLength) {
      throw new Error(
        `UNet sample workers: a share of ${shape.b} samples needs ${at.bytes} bytes, more than ` +
          `a worker's buffer may grow to (${lane.sab.maxByteLength}); stop the workers ` +
          `(unet.stopSampleWorkers()) or call with smaller batches`,
      );
    }
    if (lane.sab.byteLength < at.bytes) {
      lane.sab.grow(Math.min(lane.sab.maxByteLength, Math.max(at.bytes, 2 * lane.sab.byteLength)));
    }
    const xPer = shape.h * shape.w * shape.c, sPer = shape.l * shape.d;
    writeCallShape(lane.sab, shape, timesteps.slice(first, first + shape.b));
    floatsAt(lane.sab, at.x, shape.b * xPer).set(
      x.subarray(first * xPer, (first + shape.b) * xPer),
    );
    floatsAt(lane.sab, at.states, shape.b * sPer).set(
      s.subarray(first * sPer, (first + shape.b) * sPer),
    );
    Atomics.store(lane.header, WORD.BUSY, 1);
    Atomics.store(lane.header, WORD.STATE, CALL.POSTED);
    Atomics.add(lane.header, WORD.CALLS, 1);
    Atomics.notify(lane.header, WORD.CALLS);
    return { lane, shape };
  }

  // A worker's output, once it has written it.
  #output(share: Share): Tensor4D {
    const { lane, shape } = share;
    waitWhile(lane, WORD.STATE, CALL.POSTED, "forward");
    const n = shape.b * shape.h * shape.w * shape.out;
    return tf.tensor4d(floatsAt(lane.sab, callLayout(shape).eps, n).slice(), [
      shape.b,
      shape.h,
      shape.w,
      shape.out,
    ]);
  }

  // The op standing for a worker's output under the tape: its gradient hands the output's
  // gradient to the worker and returns at once (its input is a token).
  #answer(call: Call, share: Share, eps: Tensor4D): (token: tf.Tensor) => tf.Tensor {
    return tf.customGrad((_token) => ({
      value: eps,
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) => {
        if (this.#pending !== call) {
          throw new Error(
            "UNet sample workers: the gradient of a forward was asked after a later forward; " +
              "a gradient tape may hold one UNet forward at a time here (or stop the workers: " +
              "unet.stopSampleWorkers())",
          );
        }
        // This thread's share goes backward next, beside the workers'.
        call.backwardHold ??= holdCallingThread();
        const { lane, shape } = share;
        const d = (dy as tf.Tensor).dataSync() as Float32Array;
        floatsAt(lane.sab, callLayout(shape).dy, d.length).set(d);
        Atomics.store(lane.header, WORD.STATE, CALL.DY_READY);
        Atomics.notify(lane.header, WORD.STATE);
        return tf.zeros([]);
      },
    }));
  }

  // The op between a worker's states and its token: its gradient (run after this thread's share
  // went backward) waits for the worker's gradient into those states.
  #collector(call: Call, share: Share): (part: tf.Tensor) => tf.Tensor {
    return tf.customGrad((part) => {
      const shape = (part as tf.Tensor).shape as [number, number, number];
      return {
        value: tf.zeros([]),
        gradFunc: () => {
          const { lane } = share;
          const state = Atomics.load(lane.header, WORD.STATE);
          if (state !== CALL.DY_READY && state !== CALL.GRAD_DONE && state !== CALL.FAILED) {
            throw new Error(
              "UNet sample workers: a share's gradient was asked before its output's",
            );
          }
          waitWhile(lane, WORD.STATE, CALL.DY_READY, "backward");
          const n = shape[0] * shape[1] * shape[2];
          const g = tf.tensor3d(
            floatsAt(lane.sab, callLayout(share.shape).dStates, n).slice(),
            shape,
          );
          if (++call.collected === call.shares.length) this.#finish(call);
          return g;
        },
      };
    });
  }

  // The call's gradients are all in: nothing pending, this thread's kernels free again.
  #finish(call: Call): void {
    call.backwardHold?.();
    call.backwardHold = null;
    if (this.#pending === call) this.#pending = null;
  }

  #cancelPending(): void {
    const call = this.#pending;
    if (!call) return;
    this.#pending = null;
    call.backwardHold?.();
    call.backwardHold = null;
    // A worker still running its forward (this thread's share failed) or waiting for its
    // output's gradient is let go; one that has the gradient finishes it (discarded); the next
    // call to either waits until it is free.
    for (const { lane } of call.shares) {
      for (const from of [CALL.POSTED, CALL.FORWARD_DONE]) {
        if (Atomics.compareExchange(lane.header, WORD.STATE, from, CALL.CANCEL) === from) {
          Atomics.notify(lane.header, WORD.STATE);
          break;
        }
      }
    }
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
    for (const { worker, header } of this.#lanes) {
      Atomics.store(header, WORD.STATE, CALL.STOP);
      Atomics.notify(header, WORD.CALLS);
      worker.terminate();
    }
  }
}
