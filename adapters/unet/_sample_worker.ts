// A UNet sample worker (see _sample_workers.ts): its own single-threaded wasm backend and a copy
// of the model, built from the snapshot it is sent with its call buffer; then it sleeps in
// Atomics.wait on that buffer, runs each call posted there and writes the answer back.
import * as tf from "@tensorflow/tfjs";
import { parentPort } from "node:worker_threads";
import { useBackend } from "../../core/backend.ts";
import {
  CALL,
  callLayout,
  ERROR_BYTES,
  HEADER_BYTES,
  readCallShape,
  WORD,
} from "./_sample_workers.ts";
import { UNet2DConditionModel, type UNetSnapshot } from "./unet_2d_condition.ts";

function answer(header: Int32Array, state: number): void {
  Atomics.store(header, WORD.STATE, state);
  Atomics.notify(header, WORD.STATE);
}

function fail(sab: SharedArrayBuffer, header: Int32Array, e: unknown): void {
  const text = new TextEncoder().encode(e instanceof Error ? e.stack ?? e.message : String(e));
  const n = Math.min(text.length, ERROR_BYTES);
  new Uint8Array(sab, HEADER_BYTES, n).set(text.subarray(0, n));
  header[WORD.ERROR_LENGTH] = n;
  answer(header, CALL.FAILED);
}

// Sleep until the state leaves `state`; the new state.
function waitWhile(header: Int32Array, state: number): number {
  let now = Atomics.load(header, WORD.STATE);
  while (now === state) {
    // With a timeout: termination does not depend on interrupting the wait.
    Atomics.wait(header, WORD.STATE, state, 1000);
    now = Atomics.load(header, WORD.STATE);
  }
  return now;
}

function run(unet: UNet2DConditionModel, sab: SharedArrayBuffer, header: Int32Array): void {
  const { shape, timesteps } = readCallShape(sab);
  const at = callLayout(shape);
  const { b, h, w, c, l, d, out } = shape;
  unet.attentionSlice = shape.attentionSlice;
  const epsSize = b * h * w * out;
  const x = tf.tensor4d(new Float32Array(sab, at.x, b * h * w * c).slice(), [b, h, w, c]);
  const states = tf.tensor3d(new Float32Array(sab, at.states, b * l * d).slice(), [b, l, d]);
  const write = (t: tf.Tensor, byte: number) =>
    new Float32Array(sab, byte, t.size).set(t.dataSync() as Float32Array);
  try {
    if (!shape.grad) {
      const eps = unet.forwardShare(x, timesteps, states);
      write(eps, at.eps);
      eps.dispose();
      answer(header, CALL.FORWARD_DONE);
      return;
    }
    // The tape stays alive while this waits for the output's gradient. The wait is inside the
    // gradient of the op that stands for the caller's loss (`handOver`), not inside the forward
    // function: tfjs ends the forward's scopes and sorts out the tape (getFilteredNodesXToY)
    // before the first gradient, so that work is done while the caller is still computing
    // its loss, instead of after the output's gradient has come (on the call's critical path).
    let cancelled = false;
    const handOver = tf.customGrad((e) => ({
      value: tf.zeros([]),
      gradFunc: () => {
        cancelled = cancelled || waitWhile(header, CALL.FORWARD_DONE) !== CALL.DY_READY;
        // Let go (CANCEL): the pass runs on, on zeros, and nothing is written back.
        if (cancelled) return tf.zerosLike(e as tf.Tensor);
        // Handed on as it is: the caller's gradient of the output, bit for bit.
        return tf.tensor4d(new Float32Array(sab, at.dy, epsSize).slice(), [b, h, w, out]);
      },
    }));
    const g = tf.grad((st: tf.Tensor) => {
      const eps = unet.forwardShare(x, timesteps, st as tf.Tensor3D);
      write(eps, at.eps);
      // The caller may have let this call go already (CANCEL while POSTED): then no answer.
      const was = Atomics.compareExchange(header, WORD.STATE, CALL.POSTED, CALL.FORWARD_DONE);
      if (was === CALL.POSTED) Atomics.notify(header, WORD.STATE);
      cancelled = was !== CALL.POSTED;
      return handOver(eps);
    })(states);
    if (!cancelled) write(g, at.dStates);
    g.dispose();
    if (!cancelled) answer(header, CALL.GRAD_DONE);
  } finally {
    x.dispose();
    states.dispose();
  }
}

// Calls until told to stop: each call posted (WORD.CALLS counts them) is run, unless let go
// before it started (CANCEL); BUSY is 1 from its posting (the caller sets it) until the worker
// is done with it, answer and all.
function serve(unet: UNet2DConditionModel, sab: SharedArrayBuffer): void {
  const header = new Int32Array(sab, 0, 4);
  // From 0, the fresh buffer's count: a call may come before this loop starts.
  let seen = 0;
  for (;;) {
    let calls = Atomics.load(header, WORD.CALLS);
    while (calls === seen && Atomics.load(header, WORD.STATE) !== CALL.STOP) {
      // With a timeout: termination does not depend on interrupting the wait.
      Atomics.wait(header, WORD.CALLS, seen, 1000);
      calls = Atomics.load(header, WORD.CALLS);
    }
    if (Atomics.load(header, WORD.STATE) === CALL.STOP) return;
    seen = calls;
    try {
      if (Atomics.load(header, WORD.STATE) !== CALL.CANCEL) run(unet, sab, header);
    } catch (e) {
      fail(sab, header, e);
    }
    Atomics.store(header, WORD.BUSY, 0);
    Atomics.notify(header, WORD.BUSY);
  }
}

parentPort!.once(
  "message",
  async (m: { kind: "init"; snapshot: UNetSnapshot; sab: SharedArrayBuffer }) => {
    let unet: UNet2DConditionModel;
    try {
      await useBackend("wasm", { wasmThreads: 1 });
      unet = await UNet2DConditionModel.fromSnapshot(m.snapshot);
    } catch (e) {
      parentPort!.postMessage({
        kind: "failed",
        error: e instanceof Error ? e.message : String(e),
      });
      return;
    }
    parentPort!.postMessage({ kind: "ready" });
    // Let the message out before this thread stops taking events.
    setTimeout(() => serve(unet, m.sab), 0);
  },
);
