// Kernel-ready copies of frozen weights (packed panels of w and wᵀ for texforce's wasm product,
// wᵀ for XNNPACK's, a convolution's flipped filter for its input gradient), made once and kept
// instead of being remade on every call, within one budget per process.
//
// Each copy costs as much memory as its weight, so the copies kept in a process stop at
// `WEIGHT_CACHE_BUDGET` bytes (CLIP ViT-L's text linears: 340 MB a copy); past it, copies are
// made per call and dropped. A model registers the frozen weights it owns (`keepCopies`), makes
// their copies at load (so a forward pass never leaves new tensors behind), and releases them
// when it disposes or replaces a weight (`releaseWeightCopies`).
import * as tf from "@tensorflow/tfjs";
import { PackedWeight } from "../wasm/packed_matmul.ts";

const WEIGHT_CACHE_BUDGET = 1 << 30;
let weightCacheBytes = 0;

/** A copy of a weight in the form a kernel takes. */
export type WeightCopy = tf.Tensor | PackedWeight;
const tensorOf = (c: WeightCopy): tf.Tensor => c instanceof PackedWeight ? c.panels : c;

/**
 * One weight's copies by kind, made on first use and kept within the budget when caching.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { WeightCopies } from "./weight_copies.ts";
 * const w = tf.ones([4, 8]);
 * const copies = new WeightCopies(w, true);
 * const y = copies.with("transposed", () => tf.transpose(w), (wT) => tf.matMul(tf.ones([2, 8]), wT));
 * copies.dispose();
 * ```
 */
export class WeightCopies {
  #kept = new Map<string, WeightCopy>();
  /**
   * `cache`: keep the copies (within the budget), made on first use or, with `prepared`, only
   * by {@linkcode prepare} (calls then never leave new tensors behind); else each is made per
   * call and dropped.
   */
  constructor(readonly w: tf.Tensor, readonly cache: boolean, readonly prepared = false) {}

  /** `fn` applied to the copy `make()` makes (kept under `key` when caching, else dropped). */
  with<C extends WeightCopy, R extends tf.Tensor>(
    key: string,
    make: () => C,
    fn: (copy: C) => R,
  ): R {
    const known = this.#kept.get(key);
    if (known) return fn(known as C);
    const copy = make();
    if (!this.prepared && this.#keep(key, copy)) return fn(copy);
    try {
      return fn(copy);
    } finally {
      tf.dispose(tensorOf(copy));
    }
  }

  /** The copy kept under `key`, if one is (for kernels that take several weights at once). */
  kept(key: string): WeightCopy | undefined {
    return this.#kept.get(key);
  }

  /** Make the copy `key` now (when caching and within the budget) so later calls find it. */
  prepare(key: string, make: () => WeightCopy): void {
    if (!this.cache || this.#kept.has(key) || !this.#fits()) return;
    this.#keep(key, make());
  }

  #fits(): boolean {
    return weightCacheBytes + 4 * this.w.size <= WEIGHT_CACHE_BUDGET;
  }

  #keep(key: string, copy: WeightCopy): boolean {
    if (!this.cache || !this.#fits()) return false;
    weightCacheBytes += 4 * this.w.size;
    this.#kept.set(key, copy);
    tf.keep(tensorOf(copy));
    return true;
  }

  /** Release the kept copies. */
  dispose(): void {
    for (const c of this.#kept.values()) tf.dispose(tensorOf(c));
    weightCacheBytes -= 4 * this.w.size * this.#kept.size;
    this.#kept.clear();
  }
}

// The copies of the frozen weights models have registered, by weight.
const registered = new WeakMap<tf.Tensor, WeightCopies>();

/**
 * The kept copies of `w` if a model registered it, else copies made per call.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { copiesOf } from "./weight_copies.ts";
 * const copies = copiesOf(tf.ones([4, 8]));
 * console.log(copies.cache); // false: not registered
 * ```
 */
export function copiesOf(w: tf.Tensor): WeightCopies {
  return registered.get(w) ?? new WeightCopies(w, false);
}

/**
 * Register `w` (a frozen weight the caller owns) so that the copies made with `prepare` on the
 * result are kept and used.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { keepCopies, releaseWeightCopies } from "./weight_copies.ts";
 * const w = tf.ones([4, 8]);
 * keepCopies(w).prepare("transposed", () => tf.transpose(w));
 * releaseWeightCopies([w]);
 * ```
 */
export function keepCopies(w: tf.Tensor): WeightCopies {
  let copies = registered.get(w);
  if (!copies) registered.set(w, copies = new WeightCopies(w, true, true));
  return copies;
}

/**
 * Release the copies kept for `weights` and forget them (before disposing or replacing one).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { keepCopies, releaseWeightCopies } from "./weight_copies.ts";
 * const w = tf.ones([4, 8]);
 * keepCopies(w);
 * releaseWeightCopies([w]);
 * ```
 */
export function releaseWeightCopies(weights: Iterable<tf.Tensor>): void {
  for (const w of weights) {
    registered.get(w)?.dispose();
    registered.delete(w);
  }
}
