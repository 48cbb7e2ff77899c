/**
 * A small seeded random generator (xoshiro128**) whose state can be saved in a checkpoint, with
 * uniform, integer, normal and shuffle helpers. Used for prompt draws, shuffles, timestep
 * subsets and per-batch sampling seeds, so that a resumed run repeats exactly.
 *
 * @module
 */

/** Serialisable generator state. */
export type RngState = [number, number, number, number];

/** A splitmix32 stream: spreads a 32-bit seed over the generator's state words. */
function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

const TWO_32 = 4294967296;

/**
 * Deterministic generator.
 *
 * @example
 * ```ts
 * import { Rng } from "@texforce/core";
 * const rng = new Rng(42);
 * const order = rng.permutation(5);
 * const saved = rng.state();
 * const again = Rng.fromState(saved);
 * ```
 */
export class Rng {
  #s: Uint32Array;

  /** Seed the generator (any safe integer; both 32-bit halves count). */
  constructor(seed = 0) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`seed ${seed} is not a safe integer`);
    const lo = splitmix32(seed >>> 0);
    const hi = splitmix32(Math.floor(seed / TWO_32) >>> 0 ^ 0x5bd1e995);
    this.#s = new Uint32Array([lo(), hi(), lo(), hi()]);
    if (this.#s.every((v) => v === 0)) this.#s[0] = 1; // the all-zero state is a fixed point
  }

  /** Restore a saved generator. */
  static fromState(state: RngState): Rng {
    const ok = Array.isArray(state) && state.length === 4 &&
      state.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_32);
    if (!ok) throw new Error(`invalid generator state: ${JSON.stringify(state)}`);
    const r = new Rng(0);
    r.#s.set(state);
    return r;
  }

  /** Current state (copy). */
  state(): RngState {
    return [this.#s[0], this.#s[1], this.#s[2], this.#s[3]];
  }

  /** Next 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.nextU32() / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal (Box–Muller). */
  normal(): number {
    let u = this.uniform();
    while (u <= 1e-12) u = this.uniform();
    const v = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** A random permutation of 0..n-1 (Fisher–Yates). */
  permutation(n: number): number[] {
    const a = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
