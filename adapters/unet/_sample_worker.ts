// A UNet sample worker (see _sample_workers.ts): its own single-threaded wasm backend and a copy
// of the model, built from the snapshot it is sent; then each message is a share of a call,
// answered through the call's SharedArrayBuffer.
import * as tf from "@tensorflow/tfjs";
import { parentPort } from "node:worker_threads";
import { useBackend } from "../../core/backend.ts";
import { CALL, ERROR_BYTES, HEADER_BYTES, shareLayout } from "./_sample_workers.ts";
import { UNet2DConditionModel, type UNetSnapshot } from "./unet_2d_condition.ts";

interface Call {
  kind: "forward" | "grad";
  sab: SharedArrayBuffer;
  x: Float32Array;
  xShape: [number, number, number, number];
  timesteps: number[];
  states: Float32Array;
  statesShape: [number, number, number];
  attentionSlice: number;
}

let unet: UNet2DConditionModel | null = null;

function fail(sab: SharedArrayBuffer, e: unknown): void {
  const header = new Int32Array(sab, 0, 4);
  const text = new TextEncoder().encode(e instanceof Error ? e.stack ?? e.message : String(e));
  const n = Math.min(text.length, ERROR_BYTES);
  new Uint8Array(sab, sab.byteLength - ERROR_BYTES, n).set(text.subarray(0, n));
  header[1] = n;
  Atomics.store(header, 0, CALL.FAILED);
  Atomics.notify(header, 0);
}

function run(m: Call): void {
  const model = unet!;
  model.attentionSlice = m.attentionSlice;
  const header = new Int32Array(m.sab, 0, 4);
  const [b, h, w] = m.xShape;
  const epsSize = b * h * w * model.config.outChannels;
  const at = shareLayout(epsSize);
  const floats = new Float32Array(m.sab, HEADER_BYTES);
  const x = tf.tensor4d(m.x, m.xShape);
  const states = tf.tensor3d(m.states, m.statesShape);
  try {
    if (m.kind === "forward") {
      const eps = model.forward(x, m.timesteps, states);
      floats.set(eps.dataSync() as Float32Array, at.eps);
      eps.dispose();
      Atomics.store(header, 0, CALL.FORWARD_DONE);
      Atomics.notify(header, 0);
      return;
    }
    // The tape stays alive while this waits for the output's gradient.
    const g = tf.grad((s: tf.Tensor) => {
      const eps = model.forward(x, m.timesteps, s as tf.Tensor3D);
      floats.set(eps.dataSync() as Float32Array, at.eps);
      Atomics.store(header, 0, CALL.FORWARD_DONE);
      Atomics.notify(header, 0);
      while (Atomics.load(header, 0) === CALL.FORWARD_DONE) {
        Atomics.wait(header, 0, CALL.FORWARD_DONE);
      }
      if (Atomics.load(header, 0) === CALL.CANCEL) return eps.mul(0).sum();
      // d(Σ eps·dy)/d eps is dy itself, bit for bit.
      const dy = tf.tensor4d(floats.slice(at.dy, at.dy + epsSize), eps.shape as typeof m.xShape);
      return eps.mul(dy).sum();
    })(states);
    const cancelled = Atomics.load(header, 0) === CALL.CANCEL;
    if (!cancelled) floats.set(g.dataSync() as Float32Array, at.dStates);
    g.dispose();
    if (!cancelled) {
      Atomics.store(header, 0, CALL.GRAD_DONE);
      Atomics.notify(header, 0);
    }
  } finally {
    x.dispose();
    states.dispose();
  }
}

parentPort!.on("message", async (m: Call | { kind: "init"; snapshot: UNetSnapshot }) => {
  if (m.kind === "init") {
    try {
      await useBackend("wasm", { wasmThreads: 1 });
      unet = await UNet2DConditionModel.fromSnapshot(m.snapshot);
      parentPort!.postMessage({ kind: "ready" });
    } catch (e) {
      parentPort!.postMessage({
        kind: "failed",
        error: e instanceof Error ? e.message : String(e),
      });
    }
    return;
  }
  try {
    run(m);
  } catch (e) {
    fail(m.sab, e);
  }
});
