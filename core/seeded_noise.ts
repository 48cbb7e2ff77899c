/**
 * A small deterministic Gaussian noise generator (xoshiro128** with Box–Muller) whose state is
 * plain JSON, so a training checkpoint can store it and a resumed run draws the same noise.
 *
 * tfjs' own random ops cannot be checkpointed and differ between backends; this generator gives
 * the same numbers on every backend because it runs on the host.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Tensor } from "./tensor_types.ts";
import { Rng } from "./rng.ts";

/**
 * The serialisable state of a {@linkcode SeededNoise}.
 *
 * @example
 * ```ts
 * import { SeededNoise, type SeededNoiseState } from "@texforce/core/samplers";
 * const s: SeededNoiseState = new SeededNoise(1).state();
 * await Deno.writeTextFile("noise.json", JSON.stringify(s));
 * ```
 */
export interface SeededNoiseState {
  /** The four 32-bit words of xoshiro128**. */
  s: [number, number, number, number];
  /** The second Box–Muller value of the last pair, if unused. */
  spare: number | null;
}

const TWO_32 = 4294967296;

/**
 * Seeded standard-normal noise.
 *
 * @example
 * ```ts
 * import { SeededNoise } from "@texforce/core/samplers";
 * const g = new SeededNoise(42);
 * const x = g.normal([1, 64, 64, 4]);
 * const saved = g.state();
 * const again = SeededNoise.fromState(saved).normal([2]); // continues where g stands
 * ```
 */
export class SeededNoise {
  #rng: Rng;
  #spare: number | null = null;

  /** Start a generator from an integer seed (any safe integer; negative values are allowed). */
  constructor(seed: number) {
    this.#rng = new Rng(seed);
  }

  /**
   * Recreate a generator from {@linkcode SeededNoise.state}.
   *
   * @example
   * ```ts
   * import { SeededNoise } from "@texforce/core/samplers";
   * const g = SeededNoise.fromState({ s: [1, 2, 3, 4], spare: null });
   * ```
   */
  static fromState(state: SeededNoiseState): SeededNoise {
    const ok = Array.isArray(state?.s) && state.s.length === 4 &&
      state.s.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_32) &&
      (state.spare === null || typeof state.spare === "number");
    if (!ok) throw new Error(`invalid SeededNoise state: ${JSON.stringify(state)}`);
    const g = new SeededNoise(0);
    g.#rng = Rng.fromState(state.s);
    g.#spare = state.spare;
    return g;
  }

  /** The state as JSON-safe data. */
  state(): SeededNoiseState {
    return { s: this.#rng.state(), spare: this.#spare };
  }

  /** The next 32-bit unsigned integer. */
  nextUint32(): number {
    return this.#rng.nextU32();
  }

  /** A uniform number in (0, 1) (never 0, so its log is finite). */
  nextUniform(): number {
    return (this.nextUint32() + 0.5) / TWO_32;
  }

  /** A standard-normal number. */
  nextNormal(): number {
    if (this.#spare !== null) {
      const v = this.#spare;
      this.#spare = null;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(this.nextUniform()));
    const th = 2 * Math.PI * this.nextUniform();
    this.#spare = r * Math.sin(th);
    return r * Math.cos(th);
  }

  /** Fill `out` with standard-normal numbers. */
  fill(out: Float32Array): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = this.nextNormal();
    return out;
  }

  /** A tensor of standard-normal numbers. */
  normal(shape: number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    return tf.tensor(this.fill(new Float32Array(n)), shape, "float32");
  }
}
