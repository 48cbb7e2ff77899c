/**
 * Low-rank adapters (LoRA) on the linear layers of the CLIP text encoder, as PEFT applies them:
 * `y = W x + b + Σ_adapters weight · scale · B (A x)` with `scale = alpha / rank`.
 *
 * ## Names
 *
 * Modules are named by their path inside the text model without any `text_model.` prefix
 * (`encoder.layers.0.self_attn.q_proj`). Variables carry PEFT's runtime names:
 * `base_model.model.<layout><module>.lora_A.<adapter>.weight`, where `<layout>` is
 * `text_model.` when the checkpoint's keys have that prefix (every SD 1.x/2.x checkpoint) and
 * empty when they do not (transformers 5 saves). So on the tiny test model a name is
 * `base_model.model.encoder.layers.0.self_attn.k_proj.lora_A.default.weight`, exactly the keys of
 * PyTorch's gradients; {@linkcode parseLoraVariableName} reads either form back.
 *
 * Variables hold PyTorch layouts: A is `[rank, in]`, B is `[out, rank]`.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { HostTensor } from "../../core/io/safetensors.ts";
import { matMul2d } from "../nn/_fast_matmul.ts";
import type { Tensor2D, Variable } from "../../core/tensor_types.ts";

/** How A is initialised (B always starts at zero, so a fresh adapter changes nothing). */
export type LoraInit = "kaiming" | "gaussian";

/**
 * The default targets of TexForce: the attention projections of every layer.
 *
 * @example
 * ```ts
 * import { DEFAULT_LORA_TARGETS } from "@texforce/core/adapters";
 * console.log(DEFAULT_LORA_TARGETS.join(" ")); // q_proj k_proj v_proj out_proj
 * ```
 */
export const DEFAULT_LORA_TARGETS: readonly string[] = ["q_proj", "k_proj", "v_proj", "out_proj"];

/**
 * Every linear layer name of a CLIP encoder layer that LoRA can target.
 *
 * @example
 * ```ts
 * import { LORA_TARGETABLE } from "@texforce/core/adapters";
 * console.log(LORA_TARGETABLE.includes("fc1")); // true
 * ```
 */
export const LORA_TARGETABLE: readonly string[] = [
  "q_proj",
  "k_proj",
  "v_proj",
  "out_proj",
  "fc1",
  "fc2",
];

export type { LinearDelta, LinearShape } from "../nn/linear_delta.ts";
import type { LinearDelta, LinearShape } from "../nn/linear_delta.ts";

/** One adapted linear layer. */
export interface LoraModule {
  /** lora_A, [rank, in]. */
  a: Variable;
  /** lora_B, [out, rank]. */
  b: Variable;
  /** Rank of this module. */
  rank: number;
  /** Alpha of this module. */
  alpha: number;
  /** Multiplier of B A: alpha / rank (alpha / sqrt(rank) with rsLoRA). */
  scale: number;
}

/** A LoRA held on the host: what files are read into and written from. */
export interface LoraWeights {
  /** Per module (`encoder.layers.0.self_attn.q_proj`): A, B and alpha. */
  modules: Map<string, LoraModuleWeights>;
  /** Typical rank (PEFT's `r`). */
  rank: number;
  /** Typical alpha (PEFT's `lora_alpha`). */
  alpha: number;
  /** Scale by alpha / sqrt(rank) instead of alpha / rank. */
  useRslora: boolean;
  /** Where it came from, for messages (a file, or `memory`). */
  source: string;
  /** Whether its keys had the `text_model.` prefix (null when unknown). */
  textModelPrefix: boolean | null;
  /** Keys of the file that are not about the text encoder (e.g. UNet LoRA), skipped. */
  ignoredKeys: string[];
}

/** One module of a {@linkcode LoraWeights}. */
export interface LoraModuleWeights {
  /** A (`lora_down`), [rank, in]. */
  down: HostTensor;
  /** B (`lora_up`), [out, rank]. */
  up: HostTensor;
  /** Alpha of this module. */
  alpha: number;
  /** Names of A and B in the file, for messages. */
  keys?: { down: string; up: string };
}

/** Options of {@linkcode LoraAdapter.create}. */
export interface LoraAdapterOptions {
  /** Rank r (default 16, TexForce's). */
  rank: number;
  /** Alpha (default 16). */
  alpha: number;
  /** Layer names to adapt (default q/k/v/out projections). */
  targets: readonly string[];
  /** Init of A: PEFT's default kaiming-uniform(a=√5), or gaussian with std 1/r. */
  init: LoraInit;
  /** Seed of the init (random when absent). */
  seed?: number;
  /** Whether the variables are trained (default true). */
  trainable: boolean;
  /** Scale by alpha/sqrt(r) (rsLoRA). */
  useRslora: boolean;
}

const defaults = {
  rank: 16,
  alpha: 16,
  targets: DEFAULT_LORA_TARGETS,
  init: "kaiming",
  trainable: true,
  useRslora: false,
} satisfies LoraAdapterOptions;

/**
 * The variable name of a LoRA matrix (PEFT's runtime name).
 *
 * @example
 * ```ts
 * import { loraVariableName } from "@texforce/core/adapters";
 * loraVariableName("encoder.layers.0.self_attn.q_proj", "A", "default", true);
 * // "base_model.model.text_model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight"
 * ```
 */
export function loraVariableName(
  module: string,
  part: "A" | "B",
  adapter = "default",
  textModelPrefix = true,
): string {
  return `base_model.model.${
    textModelPrefix ? "text_model." : ""
  }${module}.lora_${part}.${adapter}.weight`;
}

/**
 * Read a LoRA variable or PEFT key back into module, part and adapter; accepts names with or
 * without `text_model.` and with or without the adapter name. Null when it is not one.
 *
 * @example
 * ```ts
 * import { parseLoraVariableName } from "@texforce/core/adapters";
 * parseLoraVariableName("base_model.model.encoder.layers.2.self_attn.k_proj.lora_B.default.weight");
 * // { module: "encoder.layers.2.self_attn.k_proj", part: "B", adapter: "default" }
 * ```
 */
export function parseLoraVariableName(
  name: string,
): { module: string; part: "A" | "B"; adapter: string | null } | null {
  const m =
    /^base_model\.model\.(?:text_model\.)?(encoder\.layers\.\d+\.(?:self_attn|mlp)\.[a-z0-9_]+)\.lora_([AB])(?:\.([^.]+))?\.weight$/
      .exec(name);
  if (!m) return null;
  return { module: m[1], part: m[2] as "A" | "B", adapter: m[3] ?? null };
}

/** Layer names (`q_proj`, `fc1`) of a module path. */
function layerName(module: string): string {
  return module.slice(module.lastIndexOf(".") + 1);
}

function scaleOf(alpha: number, rank: number, rs: boolean): number {
  return rs ? alpha / Math.sqrt(rank) : alpha / rank;
}

/**
 * One named adapter: A and B for each targeted module, plus a run-time switch and weight.
 *
 * @example
 * ```ts
 * import { LoraAdapter } from "@texforce/core/adapters";
 * const shapes = new Map([["encoder.layers.0.self_attn.q_proj", { inFeatures: 8, outFeatures: 8 }]]);
 * const lora = LoraAdapter.create("default", shapes, { rank: 4, alpha: 4, seed: 0 });
 * console.log([...lora.variables().keys()]);
 * lora.dispose();
 * ```
 */
export class LoraAdapter {
  /** Adapter name (`default` for the trained one). */
  readonly name: string;
  /** Adapted modules by path. */
  readonly modules: Map<string, LoraModule>;
  /** Whether its variables are trainable. */
  readonly trainable: boolean;
  /** Typical rank. */
  readonly rank: number;
  /** Typical alpha. */
  readonly alpha: number;
  /** Whether scales are alpha / sqrt(rank). */
  readonly useRslora: boolean;
  /** How A was initialised (`null` when loaded from a file). */
  readonly init: LoraInit | null;
  /** Whether it contributes to the output. */
  enabled = true;
  /** Multiplier of its contribution (to fuse several adapters, or fade one). */
  weight = 1;
  /** Whether variable names carry `text_model.` (follows the base checkpoint). */
  textModelPrefix = true;

  private constructor(
    name: string,
    modules: Map<string, LoraModule>,
    info: {
      trainable: boolean;
      rank: number;
      alpha: number;
      useRslora: boolean;
      init: LoraInit | null;
    },
  ) {
    if (!/^[A-Za-z0-9_-]+$/.test(name)) {
      throw new Error(`LoRA adapter name ${JSON.stringify(name)}: use letters, digits, _ or -`);
    }
    this.name = name;
    this.modules = modules;
    this.trainable = info.trainable;
    this.rank = info.rank;
    this.alpha = info.alpha;
    this.useRslora = info.useRslora;
    this.init = info.init;
  }

  /**
   * A fresh adapter on every module of `shapes` whose layer name is in `targets`; B is zero.
   *
   * @example
   * ```ts
   * import { LoraAdapter } from "@texforce/core/adapters";
   * declare const shapes: Map<string, { inFeatures: number; outFeatures: number }>;
   * const lora = LoraAdapter.create("default", shapes, { rank: 16, alpha: 16, init: "gaussian" });
   * ```
   */
  static create(
    name: string,
    shapes: Map<string, LinearShape>,
    options: Partial<LoraAdapterOptions> = {},
  ): LoraAdapter {
    const o = { ...defaults, ...options };
    if (!Number.isInteger(o.rank) || o.rank < 1) {
      throw new Error(`LoRA rank must be a positive integer, got ${o.rank}`);
    }
    if (!(o.alpha > 0)) throw new Error(`LoRA alpha must be positive, got ${o.alpha}`);
    if (o.init !== "kaiming" && o.init !== "gaussian") {
      throw new Error(`LoRA init must be "kaiming" or "gaussian", got ${JSON.stringify(o.init)}`);
    }
    const bad = o.targets.filter((t) => !LORA_TARGETABLE.includes(t));
    if (bad.length) {
      throw new Error(
        `LoRA targets ${JSON.stringify(bad)} are not linear layers of CLIP ` +
          `(expected some of ${LORA_TARGETABLE.join(", ")})`,
      );
    }
    const modules = new Map<string, LoraModule>();
    let i = 0;
    for (const [module, shape] of shapes) {
      if (!o.targets.includes(layerName(module))) continue;
      const seed = o.seed === undefined ? undefined : o.seed + i++;
      const a = tf.tidy(() =>
        o.init === "gaussian"
          ? tf.randomNormal([o.rank, shape.inFeatures], 0, 1 / o.rank, "float32", seed)
          // kaiming_uniform_(a=√5) on [r, in]: bound = gain·√(3/fan_in) = 1/√in.
          : tf.randomUniform(
            [o.rank, shape.inFeatures],
            -1 / Math.sqrt(shape.inFeatures),
            1 / Math.sqrt(shape.inFeatures),
            "float32",
            seed,
          )
      );
      const b = tf.zeros([shape.outFeatures, o.rank]);
      modules.set(module, {
        a: tf.variable(a, o.trainable),
        b: tf.variable(b, o.trainable),
        rank: o.rank,
        alpha: o.alpha,
        scale: scaleOf(o.alpha, o.rank, o.useRslora),
      });
      // tf.variable copies its initial value; release the originals.
      tf.dispose([a, b]);
    }
    if (modules.size === 0) {
      throw new Error(
        `LoRA targets ${JSON.stringify(o.targets)} match no linear layer of the model`,
      );
    }
    return new LoraAdapter(name, modules, { ...o, init: o.init });
  }

  /**
   * An adapter holding host weights (read from a file), checked against the model's shapes.
   * Errors name the file, the key, and the expected and actual shapes.
   *
   * @example
   * ```ts
   * import { LoraAdapter, readLora } from "@texforce/core/adapters";
   * declare const shapes: Map<string, { inFeatures: number; outFeatures: number }>;
   * const lora = LoraAdapter.fromWeights("face", await readLora("face_lora/"), shapes);
   * ```
   */
  static fromWeights(
    name: string,
    weights: LoraWeights,
    shapes: Map<string, LinearShape>,
    options: { trainable?: boolean } = {},
  ): LoraAdapter {
    const trainable = options.trainable ?? false;
    const modules = new Map<string, LoraModule>();
    const fail = (key: string, msg: string): never => {
      throw new Error(`${weights.source}: '${key}': ${msg}`);
    };
    for (const [module, w] of weights.modules) {
      const keys = w.keys ?? { down: `${module}.lora_A.weight`, up: `${module}.lora_B.weight` };
      const shape = shapes.get(module);
      if (!shape) {
        fail(
          keys.down,
          `the model has no linear layer '${module}' (it has ${shapes.size} layers, ` +
            `e.g. '${[...shapes.keys()].at(-1)}')`,
        );
      }
      const rank = w.down.shape[0];
      const expectDown = [rank, shape!.inFeatures];
      const expectUp = [shape!.outFeatures, rank];
      const same = (a: number[], b: number[]) =>
        a.length === b.length && a.every((d, i) => d === b[i]);
      if (w.down.shape.length !== 2 || !same(w.down.shape, expectDown)) {
        fail(
          keys.down,
          `shape ${JSON.stringify(w.down.shape)} does not fit the model: expected ` +
            `[rank, ${shape!.inFeatures}] (the layer's input width is ${shape!.inFeatures})`,
        );
      }
      if (!same(w.up.shape, expectUp)) {
        fail(
          keys.up,
          `shape ${JSON.stringify(w.up.shape)} does not fit the model: expected ` +
            `${JSON.stringify(expectUp)} (output width ${shape!.outFeatures}, rank ${rank})`,
        );
      }
      const a = tf.tensor2d(w.down.data as Float32Array, expectDown as [number, number]);
      const b = tf.tensor2d(w.up.data as Float32Array, expectUp as [number, number]);
      modules.set(module, {
        a: tf.variable(a, trainable),
        b: tf.variable(b, trainable),
        rank,
        alpha: w.alpha,
        scale: scaleOf(w.alpha, rank, weights.useRslora),
      });
      tf.dispose([a, b]);
    }
    if (modules.size === 0) {
      throw new Error(`${weights.source}: holds no LoRA for the text encoder`);
    }
    const adapter = new LoraAdapter(name, modules, {
      trainable,
      rank: weights.rank,
      alpha: weights.alpha,
      useRslora: weights.useRslora,
      init: null,
    });
    return adapter;
  }

  /** Layer names this adapter targets (`q_proj`, …), sorted. */
  get targets(): string[] {
    return [...new Set([...this.modules.keys()].map(layerName))].sort();
  }

  /**
   * Variables by name (see the module doc for the naming).
   *
   * @example
   * ```ts
   * import type { LoraAdapter } from "@texforce/core/adapters";
   * declare const lora: LoraAdapter;
   * for (const [name, v] of lora.variables()) console.log(name, v.shape);
   * ```
   */
  variables(): Map<string, Variable> {
    const out = new Map<string, Variable>();
    for (const [module, m] of this.modules) {
      out.set(loraVariableName(module, "A", this.name, this.textModelPrefix), m.a);
      out.set(loraVariableName(module, "B", this.name, this.textModelPrefix), m.b);
    }
    return out;
  }

  /**
   * Copy the weights to the host (for saving in any format).
   *
   * @example
   * ```ts
   * import { type LoraAdapter, writeLora } from "@texforce/core/adapters";
   * declare const lora: LoraAdapter;
   * await writeLora("out/lora", await lora.toWeights(), "peft");
   * ```
   */
  async toWeights(): Promise<LoraWeights> {
    const modules = new Map<string, LoraModuleWeights>();
    for (const [module, m] of this.modules) {
      modules.set(module, {
        down: { dtype: "float32", shape: [...m.a.shape], data: (await m.a.data()) as Float32Array },
        up: { dtype: "float32", shape: [...m.b.shape], data: (await m.b.data()) as Float32Array },
        alpha: m.alpha,
      });
    }
    return {
      modules,
      rank: this.rank,
      alpha: this.alpha,
      useRslora: this.useRslora,
      source: `adapter '${this.name}'`,
      textModelPrefix: this.textModelPrefix,
      ignoredKeys: [],
    };
  }

  /**
   * Set the weights from a host LoRA of the same modules and shapes (e.g. to resume training).
   *
   * @example
   * ```ts
   * import { type LoraAdapter, readLora } from "@texforce/core/adapters";
   * declare const lora: LoraAdapter;
   * lora.assign(await readLora("checkpoint/lora"));
   * ```
   */
  assign(weights: LoraWeights): void {
    for (const [module, m] of this.modules) {
      const w = weights.modules.get(module);
      if (!w) throw new Error(`${weights.source}: has no LoRA for '${module}'`);
      if (w.down.shape.join() !== m.a.shape.join() || w.up.shape.join() !== m.b.shape.join()) {
        throw new Error(
          `${weights.source}: '${w.keys?.down ?? module}': shapes ${
            JSON.stringify(w.down.shape)
          }/` +
            `${JSON.stringify(w.up.shape)} differ from the adapter's ` +
            `${JSON.stringify(m.a.shape)}/${JSON.stringify(m.b.shape)}`,
        );
      }
      tf.tidy(() => {
        m.a.assign(tf.tensor(w.down.data, m.a.shape, "float32"));
        m.b.assign(tf.tensor(w.up.data, m.b.shape, "float32"));
      });
    }
  }

  /** Release the variables. */
  dispose(): void {
    for (const m of this.modules.values()) {
      m.a.dispose();
      m.b.dispose();
    }
    this.modules.clear();
  }
}

/**
 * The adapters active on a model: each contributes `weight · scale · B (A x)` when enabled.
 *
 * @example
 * ```ts
 * import { LoraAdapter, LoraStack } from "@texforce/core/adapters";
 * declare const face: LoraAdapter, hand: LoraAdapter;
 * const stack = new LoraStack();
 * stack.add(face);
 * stack.add(hand);
 * hand.weight = 0.5; // fuse: full face adapter plus half of the hand adapter
 * ```
 */
export class LoraStack implements LinearDelta {
  #adapters = new Map<string, LoraAdapter>();

  /** Adapters by name, in the order added. */
  get adapters(): ReadonlyMap<string, LoraAdapter> {
    return this.#adapters;
  }

  /** Add an adapter; its name must be new. */
  add(adapter: LoraAdapter): void {
    if (this.#adapters.has(adapter.name)) {
      throw new Error(`a LoRA adapter named '${adapter.name}' is already loaded`);
    }
    this.#adapters.set(adapter.name, adapter);
  }

  /** An adapter by name (error listing the names when absent). */
  get(name: string): LoraAdapter {
    const a = this.#adapters.get(name);
    if (!a) {
      throw new Error(
        `no LoRA adapter named '${name}' (loaded: ${
          [...this.#adapters.keys()].join(", ") || "none"
        })`,
      );
    }
    return a;
  }

  /** Remove and dispose an adapter. */
  remove(name: string): void {
    this.get(name).dispose();
    this.#adapters.delete(name);
  }

  /** Sum of the enabled adapters' terms for `module`, or null when none adapts it. */
  delta(module: string, x: Tensor2D): Tensor2D | null {
    let out: Tensor2D | null = null;
    for (const adapter of this.#adapters.values()) {
      if (!adapter.enabled || adapter.weight === 0) continue;
      const m = adapter.modules.get(module);
      if (!m) continue;
      // (x Aᵀ)·s then Bᵀ: scaling the rank-wide product is cheapest.
      const h = tf.mul(matMul2d(x, m.a as Tensor2D, true), m.scale * adapter.weight) as Tensor2D;
      const y = matMul2d(h, m.b as Tensor2D, true);
      out = out ? tf.add(out, y) : y;
    }
    return out;
  }

  /** The trainable variables of all adapters, by name. */
  trainableVariables(): Map<string, Variable> {
    const out = new Map<string, Variable>();
    for (const a of this.#adapters.values()) {
      if (!a.trainable) continue;
      for (const [k, v] of a.variables()) out.set(k, v);
    }
    return out;
  }

  /**
   * `Σ weight · scale · B A` per module over enabled adapters, as [out, in] host arrays (what
   * merging adds to W).
   */
  async mergedDeltas(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const adapter of this.#adapters.values()) {
      if (!adapter.enabled || adapter.weight === 0) continue;
      for (const [module, m] of adapter.modules) {
        const d = tf.tidy(() => tf.mul(tf.matMul(m.b, m.a), m.scale * adapter.weight));
        const data = (await d.data()) as Float32Array;
        d.dispose();
        const prev = out.get(module);
        if (prev) { for (let i = 0; i < prev.length; i++) prev[i] += data[i]; }
        else out.set(module, new Float32Array(data));
      }
    }
    return out;
  }

  /** Dispose every adapter. */
  dispose(): void {
    for (const a of this.#adapters.values()) a.dispose();
    this.#adapters.clear();
  }
}
