/**
 * `deno task pretrain`: build the shapes model from nothing. Trains the BPE tokenizer on the
 * training captions, draws the text encoder's weights (CLIP's initialisation, then frozen), and
 * trains the UNet to denoise (DDPM forward process, x₀-prediction as the scheduler config says,
 * AdamW, EMA of the weights) on scenes
 * rendered from training captions; writes the diffusers folder (fp16 safetensors, EMA weights)
 * every `--save-every` steps and at the end, and `training.json` with the loss curve and
 * timings. With each save it also writes a resume checkpoint (raw weights, EMA, AdamW moments,
 * the random generators' states and the loss log; one safetensors file written atomically):
 * `--resume` continues from it and gives the same weights as an uninterrupted run.
 *
 * ```sh
 * deno task pretrain                          # the committed model
 * deno task pretrain --resume                 # continue an interrupted run from its checkpoint
 * deno task pretrain --steps 50 --out out/m   # a quick try
 * PRETRAIN_PROFILE=2 deno task pretrain ...   # print tf.profile's costliest kernels at step 2
 * ```
 *
 * Why the text encoder stays at its random initialisation: the UNet learns to read whatever
 * features the encoder gives, and a frozen random transformer keeps each token's identity and
 * position in its output (Imagen freezes its text encoder too); TexForce then adapts the encoder
 * with LoRA, which is the point of the demo. Training the encoder too would make each step
 * about a third dearer on two cores.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { basename, join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { useBackend } from "../../core/backend.ts";
import { adamw } from "../../adapters/optim/adamw.ts";
import { clipGlobalNorm } from "../../core/gradients.ts";
import { decodeSafetensors, writeSafetensors } from "../../core/io/safetensors.ts";
import { ClipTextModel, parseClipTextConfig } from "../../adapters/clip/clip_text_model.ts";
import { ClipTokenizer } from "../../adapters/clip/clip_tokenizer.ts";
import { trainClipBpe, writeClipTokenizer } from "../../adapters/clip/clip_bpe_trainer.ts";
import { parseUNetConfig, UNet2DConditionModel } from "../../adapters/unet/unet_2d_condition.ts";
import { SeededNoise } from "../../core/seeded_noise.ts";
import { captionSplits, Mulberry32, parseCaption, sampleCaptions } from "./world.ts";
import type { SeededNoiseState } from "../../core/seeded_noise.ts";
import { CANVAS, renderScene } from "./render.ts";
import {
  MAX_TOKENS,
  MODEL_INDEX,
  SCHEDULER_CONFIG,
  TEXT_ENCODER_CONFIG,
  UNET_CONFIG,
} from "./model_spec.ts";
import { toWritable, TrainableReader } from "./_trainable_reader.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    out: { type: "string", default: new URL("./model", import.meta.url).pathname },
    steps: { type: "string", default: "240" },
    batch: { type: "string", default: "32" },
    lr: { type: "string", default: "2e-3" },
    "warmup-steps": { type: "string", default: "10" },
    "ema-decay": { type: "string", default: "0.99" },
    "uncond-prob": { type: "string", default: "0.1" },
    "save-every": { type: "string", default: "20" },
    "max-minutes": { type: "string", default: "0" },
    seed: { type: "string", default: "0" },
    backend: { type: "string", default: "wasm" },
    resume: { type: "boolean", default: false },
    "stop-at": { type: "string", default: "0" },
    checkpoint: { type: "string" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(
    "pretrain [--out DIR] [--steps 240] [--batch 32] [--lr 2e-3] [--warmup-steps 10] " +
      "[--ema-decay 0.99] [--uncond-prob 0.1] [--save-every 20] [--max-minutes 0] [--seed 0] " +
      "[--backend wasm] [--resume] [--checkpoint FILE] [--stop-at STEP]\n" +
      "  --max-minutes: stop early (and save) after this much training time, 0: no limit (resumed\n" +
      "    runs count the time before the checkpoint too; a time limit makes the result depend on\n" +
      "    the machine's speed, --stop-at does not)\n" +
      "  --checkpoint: the resume checkpoint, written with every save (default\n" +
      "    out/pretrain/<out folder name>.state.safetensors under the repository)\n" +
      "  --resume: continue from the checkpoint (same settings required)\n" +
      "  --stop-at: stop (and save) after this step of the --steps schedule (0: run it all)",
  );
  Deno.exit(0);
}
const out = values.out!;
const steps = Number(values.steps);
const batch = Number(values.batch);
const peakLr = Number(values.lr);
const warmup = Number(values["warmup-steps"]);
const emaDecay = Number(values["ema-decay"]);
const uncondProb = Number(values["uncond-prob"]);
const saveEvery = Number(values["save-every"]);
const seed = Number(values.seed);
const maxMinutes = Number(values["max-minutes"]);
const stopAt = Number(values["stop-at"]);
const checkpointPath = values.checkpoint ??
  join(
    new URL("../../out/pretrain", import.meta.url).pathname,
    `${basename(out)}.state.safetensors`,
  );
for (
  const [k, v] of Object.entries({
    steps,
    batch,
    peakLr,
    warmup,
    emaDecay,
    saveEvery,
    seed,
    stopAt,
  })
) {
  if (!Number.isFinite(v) || v < 0) throw new Error(`pretrain: --${k} must be a number ≥ 0`);
}

const t0 = performance.now();
const info = await useBackend(values.backend as "wasm");
console.log(`pretrain: ${info.name} (${info.device}), ${steps} steps of ${batch}, out ${out}`);
await Deno.mkdir(out, { recursive: true });
const json = (v: unknown) => JSON.stringify(v, null, 2) + "\n";

// 1. Tokenizer: BPE on the training captions.
const { train } = captionSplits();
const tokFiles = trainClipBpe(train, { maxLength: MAX_TOKENS });
await writeClipTokenizer(join(out, "tokenizer"), tokFiles);
const tokenizer = ClipTokenizer.fromFiles(tokFiles);
console.log(`tokenizer: ${tokenizer.vocabSize} tokens`);

// 2. Text encoder: CLIP's initialisation (transformers' CLIPPreTrainedModel._init_weights),
// stored in fp16 and read back, so training sees exactly the weights that are shipped.
const textConfig: Record<string, unknown> = {
  ...TEXT_ENCODER_CONFIG,
  vocab_size: tokenizer.vocabSize,
  bos_token_id: tokenizer.bosTokenId,
  eos_token_id: tokenizer.eosTokenId,
  pad_token_id: tokenizer.padTokenId,
};
{
  const d = textConfig.hidden_size as number;
  const m = textConfig.intermediate_size as number;
  const layers = textConfig.num_hidden_layers as number;
  const gen = new Mulberry32(seed + 1);
  const normal = (n: number, std: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const u = Math.max(gen.next(), 1e-12);
      const v = gen.next();
      const r = Math.sqrt(-2 * Math.log(u));
      a[i] = r * Math.cos(2 * Math.PI * v) * std;
      if (i + 1 < n) a[i + 1] = r * Math.sin(2 * Math.PI * v) * std;
    }
    return a;
  };
  const tensors: Record<string, { dtype: "F16"; shape: number[]; data: Float32Array }> = {};
  const put = (k: string, shape: number[], data: Float32Array) =>
    tensors[k] = { dtype: "F16", shape, data };
  const fill = (n: number, v: number) => new Float32Array(n).fill(v);
  put(
    "embeddings.token_embedding.weight",
    [tokenizer.vocabSize, d],
    normal(tokenizer.vocabSize * d, 0.02),
  );
  put("embeddings.position_embedding.weight", [MAX_TOKENS, d], normal(MAX_TOKENS * d, 0.01));
  const inStd = d ** -0.5 * (2 * layers) ** -0.5;
  for (let l = 0; l < layers; l++) {
    const p = `encoder.layers.${l}.`;
    for (const proj of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      put(
        `${p}self_attn.${proj}.weight`,
        [d, d],
        normal(d * d, proj === "out_proj" ? d ** -0.5 : inStd),
      );
      put(`${p}self_attn.${proj}.bias`, [d], fill(d, 0));
    }
    put(`${p}mlp.fc1.weight`, [m, d], normal(m * d, (2 * d) ** -0.5));
    put(`${p}mlp.fc1.bias`, [m], fill(m, 0));
    put(`${p}mlp.fc2.weight`, [d, m], normal(d * m, inStd));
    put(`${p}mlp.fc2.bias`, [d], fill(d, 0));
    for (const ln of ["layer_norm1", "layer_norm2"]) {
      put(`${p}${ln}.weight`, [d], fill(d, 1));
      put(`${p}${ln}.bias`, [d], fill(d, 0));
    }
  }
  put("final_layer_norm.weight", [d], fill(d, 1));
  put("final_layer_norm.bias", [d], fill(d, 0));
  await Deno.mkdir(join(out, "text_encoder"), { recursive: true });
  await writeSafetensors(join(out, "text_encoder", "model.safetensors"), tensors, { format: "pt" });
  await Deno.writeTextFile(join(out, "text_encoder", "config.json"), json(textConfig));
}
const textModel = await ClipTextModel.load(join(out, "text_encoder"));
parseClipTextConfig(textConfig, "text_encoder/config.json");

// Hidden states of every training caption and of the empty caption, computed once.
const captionIndex = new Map<string, number>();
const allCaptions = ["", ...train];
allCaptions.forEach((c, i) => captionIndex.set(c, i));
const states = tf.tidy(() => {
  const chunks: tf.Tensor[] = [];
  for (let i = 0; i < allCaptions.length; i += 256) {
    const ids = tokenizer.encodeBatch(allCaptions.slice(i, i + 256)).inputIds;
    chunks.push(textModel.forward(tf.tensor2d(ids, undefined, "int32")).lastHiddenState);
  }
  return tf.concat(chunks, 0);
});
textModel.dispose();

// 3. The UNet, every weight a variable.
await Deno.mkdir(join(out, "unet"), { recursive: true });
await Deno.writeTextFile(join(out, "unet", "config.json"), json(UNET_CONFIG));
await Deno.mkdir(join(out, "scheduler"), { recursive: true });
await Deno.writeTextFile(join(out, "scheduler", "scheduler_config.json"), json(SCHEDULER_CONFIG));
await Deno.writeTextFile(join(out, "model_index.json"), json(MODEL_INDEX));
const reader = new TrainableReader(seed + 2);
const unet = await UNet2DConditionModel.fromReader(
  parseUNetConfig(UNET_CONFIG, "unet/config.json"),
  reader,
);
const weights = reader.weights;
const variables = new Map([...weights].map(([k, w]) => [k, w.variable]));
const ema = new Map<string, tf.Tensor>(
  [...variables].map(([k, v]) => [k, tf.keep(v.clone())]),
);
const nParams = [...variables.values()].reduce((a, v) => a + v.size, 0);
console.log(`unet: ${(nParams / 1e6).toFixed(2)}M parameters in ${variables.size} tensors`);
const opt = adamw(variables, { weightDecay: 0 });

// DDPM forward process.
const betaStart = SCHEDULER_CONFIG.beta_start as number;
const betaEnd = SCHEDULER_CONFIG.beta_end as number;
const T = SCHEDULER_CONFIG.num_train_timesteps as number;
const alphaBar: number[] = [];
for (let t = 0, ab = 1; t < T; t++) {
  ab *= 1 - (betaStart + ((betaEnd - betaStart) * t) / (T - 1));
  alphaBar.push(ab);
}

// What the UNet learns to predict, per the scheduler's prediction type.
const prediction = SCHEDULER_CONFIG.prediction_type;
const target = (x0: tf.Tensor, eps: tf.Tensor): tf.Tensor => {
  if (prediction === "sample") return x0;
  if (prediction === "epsilon") return eps;
  throw new Error(`pretrain: prediction_type '${prediction}' is not supported here`);
};

const save = async (step: number) => {
  const s = performance.now();
  await writeSafetensors(
    join(out, "unet", "diffusion_pytorch_model.safetensors"),
    await toWritable(weights, ema),
    { format: "pt", step: String(step) },
  );
  console.log(`  saved step ${step} (${((performance.now() - s) / 1000).toFixed(1)} s)`);
};

let rng = new Mulberry32(seed + 3);
let noise = new SeededNoise(seed + 4);
let log: { step: number; loss: number; lr: number; s: number }[] = [];
let smooth = NaN;
let firstStep = 1;
let secondsBefore = 0; // training time before the resumed checkpoint
let tTrain = performance.now();

// The resume checkpoint: everything the next step depends on, in one atomically written file.
const settings = { steps, batch, peakLr, warmup, emaDecay, uncondProb, seed };
interface ResumeState {
  step: number;
  settings: typeof settings;
  rng: number;
  noise: SeededNoiseState;
  smooth: number | null;
  seconds: number;
  log: typeof log;
}
const saveCheckpoint = async (step: number) => {
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (const [k, v] of variables) {
    tensors[`param/${k}`] = {
      dtype: "F32",
      shape: [...v.shape],
      data: await v.data() as Float32Array,
    };
    const e = ema.get(k)!;
    tensors[`ema/${k}`] = {
      dtype: "F32",
      shape: [...e.shape],
      data: await e.data() as Float32Array,
    };
  }
  const optState = await opt.getState();
  for (const [k, t] of Object.entries(optState.tensors)) {
    tensors[`adamw/${k}`] = { dtype: "F32", shape: t.shape, data: t.data };
  }
  const state: ResumeState = {
    step,
    settings,
    rng: rng.state(),
    noise: noise.state(),
    smooth: Number.isNaN(smooth) ? null : smooth,
    seconds: secondsBefore + (performance.now() - tTrain) / 1000,
    log,
  };
  await Deno.mkdir(join(checkpointPath, ".."), { recursive: true });
  await writeSafetensors(checkpointPath, tensors, {
    format: "texforce-pretrain",
    optimizer_step: String(optState.step),
    state: JSON.stringify(state),
  });
};
if (values.resume) {
  const bytes = await Deno.readFile(checkpointPath).catch((e) => {
    throw new Error(`pretrain --resume: cannot read the checkpoint ${checkpointPath}: ${e}`);
  });
  const { tensors, metadata } = decodeSafetensors(bytes, checkpointPath);
  const state = JSON.parse(metadata.state ?? "null") as ResumeState | null;
  if (!state || metadata.format !== "texforce-pretrain") {
    throw new Error(`pretrain --resume: ${checkpointPath} is not a pretrain checkpoint`);
  }
  const differ = Object.entries(settings).filter(([k, v]) =>
    state.settings[k as keyof typeof settings] !== v
  );
  if (differ.length) {
    throw new Error(
      `pretrain --resume: the checkpoint was written with other settings: ${
        differ.map(([k]) => `${k} ${state.settings[k as keyof typeof settings]}`).join(", ")
      } (pass the same options as the interrupted run)`,
    );
  }
  const host = (key: string, shape: readonly number[]) => {
    const t = tensors[key];
    if (!t || t.shape.join(",") !== shape.join(",")) {
      throw new Error(`pretrain --resume: ${checkpointPath}: '${key}' missing or misshapen`);
    }
    return tf.tensor(t.data as Float32Array, t.shape, "float32");
  };
  for (const [k, v] of variables) {
    tf.tidy(() => v.assign(host(`param/${k}`, v.shape)));
    const old = ema.get(k)!;
    ema.set(k, tf.keep(host(`ema/${k}`, old.shape)));
    old.dispose();
  }
  const optTensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [k, t] of Object.entries(tensors)) {
    if (k.startsWith("adamw/")) {
      optTensors[k.slice(6)] = { shape: t.shape, data: t.data as Float32Array };
    }
  }
  opt.setState({ step: Number(metadata.optimizer_step), tensors: optTensors });
  rng = Mulberry32.fromState(state.rng);
  noise = SeededNoise.fromState(state.noise);
  smooth = state.smooth ?? NaN;
  log = state.log;
  secondsBefore = state.seconds;
  firstStep = state.step + 1;
  tTrain = performance.now();
  console.log(
    `pretrain: resumed from ${checkpointPath} after step ${state.step} ` +
      `(${(state.seconds / 60).toFixed(1)} min of training before)`,
  );
}

let stepsDone = steps;
for (let step = firstStep; step <= steps; step++) {
  const captions = sampleCaptions(train, batch, rng.int(2 ** 31));
  const x0 = new Float32Array(batch * CANVAS * CANVAS * 3);
  captions.forEach((c, i) => {
    const { pixels } = renderScene(parseCaption(c), rng.int(2 ** 31));
    for (let j = 0; j < pixels.length; j++) x0[i * pixels.length + j] = pixels[j] * 2 - 1;
  });
  const ts = captions.map(() => rng.int(T));
  const condIdx = captions.map((c) => (rng.next() < uncondProb ? 0 : captionIndex.get(c)!));
  const lr = peakLr * Math.min(1, step / Math.max(1, warmup)) *
    (0.05 + 0.95 * 0.5 * (1 + Math.cos((Math.PI * step) / steps)));
  const profile = Deno.env.get("PRETRAIN_PROFILE") === String(step);
  const run = () =>
    tf.tidy(() => {
      const x = tf.tensor4d(x0, [batch, CANVAS, CANVAS, 3]);
      const eps = noise.normal([batch, CANVAS, CANVAS, 3]);
      const a = tf.tensor(ts.map((t) => Math.sqrt(alphaBar[t])), [batch, 1, 1, 1]);
      const b = tf.tensor(ts.map((t) => Math.sqrt(1 - alphaBar[t])), [batch, 1, 1, 1]);
      const xt = tf.add(tf.mul(x, a), tf.mul(eps, b)) as tf.Tensor4D;
      const cond = tf.gather(states, tf.tensor1d(condIdx, "int32")) as tf.Tensor3D;
      return tf.variableGrads(
        () => tf.mean(tf.square(tf.sub(unet.forward(xt, ts, cond), target(x, eps)))) as tf.Scalar,
        [...variables.values()],
      );
    });
  let result: ReturnType<typeof run> | undefined;
  if (profile) {
    const p = await tf.profile(() => {
      result = run();
      return result.value;
    });
    const agg = new Map<string, [number, number]>();
    for (const k of p.kernels) {
      const a = agg.get(k.name) ?? [0, 0];
      a[0] += Number(k.kernelTimeMs);
      a[1]++;
      agg.set(k.name, a);
    }
    console.log(
      `profile: peak ${(p.peakBytes / 2 ** 20).toFixed(0)} MiB, ${p.kernels.length} kernels`,
    );
    const top = [...p.kernels].sort((a, b) => Number(b.kernelTimeMs) - Number(a.kernelTimeMs));
    for (const k of top.slice(0, 25)) {
      console.log(
        `  ${k.name} ${Number(k.kernelTimeMs).toFixed(0)} ms ${JSON.stringify(k.inputShapes)}`,
      );
    }
    for (const [n, [ms, c]] of [...agg].sort((a, b) => b[1][0] - a[1][0]).slice(0, 15)) {
      console.log(`  ${n} ${ms.toFixed(0)} ms ${c}×`);
    }
  }
  const { value, grads } = result ?? run();
  const g = new Map<string, tf.Tensor>();
  for (const [k, v] of variables) g.set(k, grads[v.name]);
  await clipGlobalNorm(g, 1);
  opt.step(g, lr);
  tf.dispose([...g.values()]);
  const decay = Math.min(emaDecay, (1 + step) / (10 + step));
  for (const [k, v] of variables) {
    const e = ema.get(k)!;
    ema.set(k, tf.tidy(() => tf.add(tf.mul(e, decay), tf.mul(v, 1 - decay))));
    e.dispose();
  }
  const loss = (await value.data())[0];
  value.dispose();
  smooth = Number.isNaN(smooth) ? loss : 0.98 * smooth + 0.02 * loss;
  const s = secondsBefore + (performance.now() - tTrain) / 1000;
  log.push({ step, loss, lr, s });
  if (step % 5 === 0 || step === 1) {
    console.log(
      `step ${step}/${steps} loss ${loss.toFixed(4)} (smoothed ${smooth.toFixed(4)}) lr ${
        lr.toExponential(2)
      } ${s.toFixed(0)} s (${((s / step) * 1000).toFixed(0)} ms/step) load ${
        Deno.loadavg()[0].toFixed(1)
      } tensors ${tf.memory().numTensors}`,
    );
  }
  if (stopAt > 0 && step >= stopAt && step < steps) {
    console.log(`pretrain: stopping after step ${step} (--stop-at)`);
    stepsDone = step;
    break;
  }
  if (maxMinutes > 0 && s > maxMinutes * 60 && step < steps) {
    console.log(`pretrain: stopping after step ${step}: --max-minutes ${maxMinutes} reached`);
    stepsDone = step;
    break;
  }
  if (step % saveEvery === 0 && step < steps) {
    await save(step);
    await saveCheckpoint(step);
  }
}
await save(stepsDone);
await saveCheckpoint(stepsDone);
const trainS = secondsBefore + (performance.now() - tTrain) / 1000;
await Deno.writeTextFile(
  join(out, "training.json"),
  json({
    steps: stepsDone,
    plannedSteps: steps,
    batch,
    peakLr,
    warmup,
    emaDecay,
    uncondProb,
    seed,
    backend: `${info.name} (${info.device})`,
    parameters: nParams,
    trainSeconds: Math.round(trainS),
    resumed: values.resume,
    totalSeconds: Math.round((performance.now() - t0) / 1000),
    loadAverage: Deno.loadavg(),
    finalSmoothedLoss: smooth,
    loss: log.filter((r) => r.step % 10 === 0).map((r) => [r.step, +r.loss.toFixed(5)]),
  }),
);
console.log(`pretrain: done in ${(trainS / 60).toFixed(1)} min of training`);
unet.dispose();
Deno.exit(0);
