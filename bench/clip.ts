/**
 * `deno task bench clip [--backend wasm] [--batch 2] [--iters 5] [--rank 16]`: the CLIP
 * ViT-L/14 text encoder of SD 1.5 (768 wide, 12 layers, 12 heads, 3072 MLP, quick_gelu, 49408
 * tokens, 77 positions) with random weights built in memory, timed forward and forward +
 * backward into LoRA r16 on q/k/v/out. Prints the median ms per call after a warm-up, the peak
 * RSS and the tensor count.
 *
 * @module
 */
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { type BackendName, useBackend } from "../core/backend.ts";
import type { HostTensor, TensorInfo, WeightSource } from "../core/io/safetensors.ts";
import { type ClipTextConfig, ClipTextModel } from "../adapters/clip/clip_text_model.ts";
import { LoraAdapter, LoraStack } from "../adapters/lora/lora.ts";
import { formatBytes, peakRss } from "./_peak_rss.ts";
import { clipEncoderLayerShapes } from "./_clip_layout.ts";

export const SD15_TEXT: ClipTextConfig = {
  vocabSize: 49408,
  hiddenSize: 768,
  intermediateSize: 3072,
  numHiddenLayers: 12,
  numAttentionHeads: 12,
  maxPositionEmbeddings: 77,
  hiddenAct: "quick_gelu",
  layerNormEps: 1e-5,
  eosTokenId: 49407,
};

/** A CLIP text model with random weights and a LoRA on q/k/v/out whose B is random too. */
export interface ClipWithLora {
  model: ClipTextModel;
  lora: LoraStack;
  /** The LoRA's trainable variables. */
  vars: tf.Variable[];
}

/**
 * Build `cfg`'s text model (random weights) with a rank-`rank` LoRA "default" whose B is drawn
 * from N(0, 0.01²) (seeded), so the backward pass does the full work of a trained adapter.
 *
 * @example
 * ```ts
 * import { clipWithBenchLora, SD15_TEXT } from "./clip.ts";
 * const { model, lora, vars } = await clipWithBenchLora(SD15_TEXT, 16);
 * console.log(vars.length);
 * lora.dispose();
 * model.dispose();
 * ```
 */
export async function clipWithBenchLora(cfg: ClipTextConfig, rank: number): Promise<ClipWithLora> {
  const model = await ClipTextModel.fromSource(new RandomClipWeights(cfg), cfg);
  const lora = new LoraStack();
  lora.add(LoraAdapter.create("default", model.linearShapes(), { rank, alpha: rank, seed: 0 }));
  for (const m of lora.get("default").modules.values()) {
    tf.tidy(() => m.b.assign(tf.randomNormal(m.b.shape, 0, 0.01, "float32", 1)));
  }
  return { model, lora, vars: [...lora.trainableVariables().values()] };
}

/**
 * Token ids for `batch` prompts of 77 tokens (BOS, 75 pseudo-random words, EOS): the input of
 * the CPU benches (`cpu.ts`, `profile.ts`).
 *
 * @example
 * ```ts
 * import { benchTokenIds } from "./clip.ts";
 * const ids = benchTokenIds(2); // [2, 77] int32
 * ids.dispose();
 * ```
 */
export function benchTokenIds(batch: number): tf.Tensor2D {
  return tf.tensor2d(
    Array.from({ length: batch }, (_, b) => {
      const row = [49406];
      for (let j = 1; j < 76; j++) row.push((b * 7919 + j * 104729) % 49406);
      return [...row, 49407];
    }),
    [batch, 77],
    "int32",
  );
}

/** SD 1.5 text encoder keys and shapes, values drawn on demand (so no file is needed). */
export class RandomClipWeights implements WeightSource {
  readonly path = "<random ViT-L/14 text weights>";
  #shapes = new Map<string, number[]>();
  #seed = 1;

  constructor(c: ClipTextConfig) {
    const d = c.hiddenSize;
    const m = c.intermediateSize;
    const add = (k: string, s: number[]) => this.#shapes.set(`text_model.${k}`, s);
    add("embeddings.token_embedding.weight", [c.vocabSize, d]);
    add("embeddings.position_embedding.weight", [c.maxPositionEmbeddings, d]);
    clipEncoderLayerShapes(add, "", c.numHiddenLayers, d, m);
    add("final_layer_norm.weight", [d]);
    add("final_layer_norm.bias", [d]);
  }
  keys(): string[] {
    return [...this.#shapes.keys()];
  }
  has(name: string): boolean {
    return this.#shapes.has(name);
  }
  info(name: string): TensorInfo {
    const shape = this.#shapes.get(name)!;
    return { name, dtype: "F32", shape, begin: 0, end: 4 * shape.reduce((a, b) => a * b, 1) };
  }
  read(name: string): Promise<HostTensor> {
    const shape = this.#shapes.get(name)!;
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const isNormWeight = /norm\d?\.weight$/.test(name);
    // xorshift: fast, deterministic, values in ±0.02 like CLIP's init scale.
    let s = this.#seed++ * 2654435761;
    for (let i = 0; i < n; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      data[i] = isNormWeight ? 1 : ((s >>> 0) / 4294967296 - 0.5) * 0.04;
    }
    return Promise.resolve({ dtype: "float32", shape: [...shape], data });
  }
  close(): void {}
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function timeIt(iters: number, fn: () => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

/**
 * Run the CLIP text encoder benchmark.
 *
 * @example
 * ```ts
 * import benchClip from "./clip.ts";
 * await benchClip(["--iters", "3"]);
 * ```
 */
export default async function benchClip(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      backend: { type: "string", default: "wasm" },
      batch: { type: "string", default: "2" },
      iters: { type: "string", default: "5" },
      rank: { type: "string", default: "16" },
    },
  });
  const batch = Number(values.batch);
  const iters = Number(values.iters);
  const rank = Number(values.rank);
  const info = await useBackend(values.backend as BackendName);
  console.log(`backend: ${info.name} (${info.device})`);

  let t0 = performance.now();
  const { model, lora, vars } = await clipWithBenchLora(SD15_TEXT, rank);
  const params = vars.reduce((a, v) => a + v.size, 0);
  console.log(
    `model: ViT-L/14 text (SD 1.5), built in ${(performance.now() - t0).toFixed(0)} ms; ` +
      `LoRA r${rank} on q/k/v/out: ${vars.length} variables, ${params} parameters`,
  );

  const ids = benchTokenIds(batch);

  const forward = async () => {
    const h = model.forward(ids, { lora });
    await h.lastHiddenState.data();
    h.lastHiddenState.dispose();
  };
  const backward = async () => {
    const { value, grads } = tf.variableGrads(
      () => tf.mean(tf.square(model.forward(ids, { lora }).lastHiddenState)) as tf.Scalar,
      vars,
    );
    await Promise.all(Object.values(grads).map((g) => g.data()));
    tf.dispose([value, ...Object.values(grads)]);
  };

  t0 = performance.now();
  await forward();
  const warmF = performance.now() - t0;
  t0 = performance.now();
  await backward();
  const warmB = performance.now() - t0;
  const tensorsBefore = tf.memory().numTensors;
  const fwd = await timeIt(iters, forward);
  const bwd = await timeIt(iters, backward);
  const tensorsAfter = tf.memory().numTensors;

  console.log(`batch ${batch} × 77 tokens, ${iters} timed calls after one warm-up`);
  console.log(
    `forward:            median ${median(fwd).toFixed(1)} ms (warm-up ${warmF.toFixed(0)} ms; ` +
      `min ${Math.min(...fwd).toFixed(1)}, max ${Math.max(...fwd).toFixed(1)})`,
  );
  console.log(
    `forward + backward: median ${median(bwd).toFixed(1)} ms (warm-up ${warmB.toFixed(0)} ms; ` +
      `min ${Math.min(...bwd).toFixed(1)}, max ${Math.max(...bwd).toFixed(1)})`,
  );
  console.log(
    `peak RSS ${formatBytes(peakRss())}, RSS now ${formatBytes(Deno.memoryUsage().rss)}; ` +
      `tensors ${tensorsBefore} before timing, ${tensorsAfter} after`,
  );
  ids.dispose();
  lora.dispose();
  model.dispose();
}
