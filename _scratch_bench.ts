import * as tf from "@tensorflow/tfjs";
import { useBackend } from "./core/backend.ts";
import { ClipLoraEncoder } from "./adapters/clip_lora_encoder.ts";
import { ddimSampler } from "./samplers/ddim_sampler.ts";
import { ppoGradients } from "./core/ppo_step.ts";

const backend = Deno.args[0] ?? "wasm";
await useBackend(backend as "wasm");
const model = "tests/fixtures/sd-tiny/tiny-sd";
const encoder = await ClipLoraEncoder.load(model);
const sampler = await ddimSampler({ modelPath: model, steps: 4 });
const side = (sampler as unknown as { model: { unet: { config: { sampleSize: number } } } }).model
  .unet.config.sampleSize;
const b = 4;
const latent = tf.randomNormal([b, side, side, 4], 0, 1, "float32", 1) as tf.Tensor4D;
const next = tf.randomNormal([b, side, side, 4], 0, 1, "float32", 2) as tf.Tensor4D;
const input = {
  prompt: ["a cat", "a dog", "red", "blue"],
  negative: ["", "", "", ""],
  latent,
  next,
  oldLogProb: tf.zeros([b]) as tf.Tensor1D,
  advantages: tf.tensor1d([1, -1, 0.5, 2]),
  stepIndex: 1,
};
const vars = encoder.trainableVariables();
const times: number[] = [];
let last: number[] = [];
for (let i = 0; i < 8; i++) {
  const t0 = performance.now();
  const r = await ppoGradients(encoder, sampler, vars, input, { clipRange: 1e-4, advClipMax: 5 });
  times.push(performance.now() - t0);
  last = [r.loss, ...r.newLogProb];
  const gs = Object.values(r.grads);
  let n = 0;
  for (const g of gs) n += (await tf.sum(tf.square(g)).data())[0];
  last.push(Math.sqrt(n));
  tf.dispose(gs);
}
const warm = times.slice(2).sort((a, c) => a - c);
console.log(`side ${side} times`, times.map((t) => t.toFixed(0)).join(" "));
console.log(`median ${warm[Math.floor(warm.length / 2)].toFixed(0)} ms`);
console.log("loss, logprobs, gradnorm", last.map((x) => x.toPrecision(7)).join(" "));
if (Deno.args[1] === "profile") {
  const p = await tf.profile(async () => {
    const r = await ppoGradients(encoder, sampler, vars, input, { clipRange: 1e-4, advClipMax: 5 });
    tf.dispose(Object.values(r.grads));
  });
  const agg = new Map<string, [number, number]>();
  for (const k of p.kernels) {
    const a = agg.get(k.name) ?? [0, 0];
    a[0] += (await k.kernelTimeMs) as number;
    a[1]++;
    agg.set(k.name, a);
  }
  const mm = new Map<string, [number, number]>();
  for (const k of p.kernels) {
    if (k.name !== "BatchMatMul" && k.name !== "Conv2DBackpropInput") continue;
    const key = k.name + " " + JSON.stringify(k.inputShapes) + "->" + JSON.stringify(k.outputShapes);
    const a = mm.get(key) ?? [0, 0];
    a[0] += (await k.kernelTimeMs) as number;
    a[1]++;
    mm.set(key, a);
  }
  for (const [n, [t, c]] of [...mm].sort((x, y) => y[1][0] - x[1][0]).slice(0, 25)) {
    console.log(n, t.toFixed(1), c);
  }
  for (const [n, [t, c]] of [...agg].sort((x, y) => y[1][0] - x[1][0]).slice(0, 12)) {
    console.log(n.padEnd(24), t.toFixed(1), c);
  }
}
