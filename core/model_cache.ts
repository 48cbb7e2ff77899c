/**
 * A per-run cache of loaded models, so that plugins using the same weights (the aesthetic,
 * clip-score and pickscore rewards all load a CLIP) share one copy. Entries are reference
 * counted: each user releases its handle, and the model is disposed with the last one.
 *
 * @module
 */

/** One user's handle on a shared model. */
export interface SharedModel<T> {
  /** The model. */
  readonly value: T;
  /** Give the handle back; the model is disposed when no handle remains. Idempotent. */
  release(): void;
}

interface Entry {
  promise: Promise<unknown>;
  refs: number;
  dispose: (value: unknown) => void;
}

/**
 * Models by key (e.g. `clip:/abs/path`), loaded once and shared.
 *
 * @example
 * ```ts
 * import { ModelCache } from "@texforce/core";
 * const cache = new ModelCache();
 * const a = await cache.acquire("answer", () => Promise.resolve({ v: 42 }), () => {});
 * const b = await cache.acquire("answer", () => Promise.resolve({ v: 0 }), () => {});
 * console.log(a.value === b.value); // true
 * a.release();
 * b.release();
 * ```
 */
export class ModelCache {
  #entries = new Map<string, Entry>();
  #loads = 0;

  /** Models loaded so far (a second `acquire` of a key does not count). */
  get loads(): number {
    return this.#loads;
  }

  /** Keys currently held. */
  keys(): string[] {
    return [...this.#entries.keys()];
  }

  /**
   * The model under `key`, loading it with `load` on first use; `dispose` frees it once the
   * last handle is released. A failed load is not cached.
   */
  async acquire<T>(
    key: string,
    load: () => Promise<T>,
    dispose: (value: T) => void,
  ): Promise<SharedModel<T>> {
    let entry = this.#entries.get(key);
    if (!entry) {
      this.#loads++;
      const promise = load();
      entry = { promise, refs: 0, dispose: dispose as (v: unknown) => void };
      this.#entries.set(key, entry);
      promise.catch(() => {
        if (this.#entries.get(key) === entry) this.#entries.delete(key);
      });
    }
    entry.refs++;
    let value: T;
    try {
      value = (await entry.promise) as T;
    } catch (e) {
      entry.refs--;
      throw e;
    }
    let released = false;
    const e = entry;
    return {
      value,
      release: () => {
        if (released) return;
        released = true;
        e.refs--;
        if (e.refs === 0 && this.#entries.get(key) === e) {
          this.#entries.delete(key);
          e.dispose(value);
        }
      },
    };
  }
}
