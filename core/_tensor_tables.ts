// tfjs' two tables of tensor data, the engine's (`state.tensorInfo`) and the wasm backend's
// (`dataIdMap`), as Maps instead of WeakMaps.
//
// Every kernel output is entered in both and removed from both when disposed, so each kernel
// costs a few WeakMap operations, and a WeakMap's are slow in V8 (an ephemeron table: inserting
// leaves the fast builtins, and the collector treats every entry specially). In perf's samples
// of the calling thread, steady state, the small UNet of tests/fixtures at batch 1 forward +
// backward spent about 12 % of its time under the WeakMap operations of the backend's `move`
// and `makeOutput` and the engine's `trackTensor`. A Map does the same lookups in the fast
// builtins.
//
// The only difference is for a tensor dropped without `dispose()`: a WeakMap lets its entry go
// with it. On the wasm backend that changes nothing that matters (its memory on the wasm heap
// is never freed but by dispose, entry or not; tfjs counts the tensor as alive either way). On
// the cpu backend, whose data the collector can free, the engine's entry (a few dozen bytes)
// now stays. texforce disposes what it makes (tests assert `tf.memory().numTensors` does not
// grow). Entries made before the swap stay in the old WeakMap, which is still consulted.
// `TEXFORCE_TENSOR_TABLES=weak` leaves both tables as tfjs made them (for comparing).

/** What tfjs calls on either table. */
interface Table<V> {
  get(key: object): V | undefined;
  set(key: object, value: V): unknown;
  has(key: object): boolean;
  delete(key: object): boolean;
}

/**
 * A Map in front of the WeakMap it replaces, whose entries (made before the swap) it still
 * finds and removes. New entries go to the Map.
 *
 * @example
 * ```ts
 * import { TableWithFallback } from "./_tensor_tables.ts";
 * const old = new WeakMap<object, number>();
 * const k = {};
 * old.set(k, 1);
 * const t = new TableWithFallback(old);
 * console.log(t.get(k), t.delete(k), t.has(k)); // 1 true false
 * ```
 */
export class TableWithFallback<V> implements Table<V> {
  readonly #map = new Map<object, V>();
  readonly #old: Table<V>;

  /** In front of `old`. */
  constructor(old: Table<V>) {
    this.#old = old;
  }

  /** The value for `key`, from the Map, else the old table. */
  get(key: object): V | undefined {
    const v = this.#map.get(key);
    return v === undefined ? this.#old.get(key) : v;
  }

  /** Enter `key` in the Map (which `get` reads first). */
  set(key: object, value: V): this {
    this.#map.set(key, value);
    return this;
  }

  /** Whether either table has `key`. */
  has(key: object): boolean {
    return this.#map.has(key) || this.#old.has(key);
  }

  /** Remove `key` from both. */
  delete(key: object): boolean {
    const inMap = this.#map.delete(key);
    return this.#old.delete(key) || inMap;
  }
}

// A Map for `holder[field]` when it is still a WeakMap (a swapped table no longer is): a plain
// one where the table is empty (`count` 0), else one in front of it.
function swap(holder: Record<string, unknown>, field: string, count: number): void {
  const table = holder[field];
  if (!(table instanceof WeakMap)) return;
  holder[field] = count === 0 ? new Map() : new TableWithFallback(table);
}

function wanted(): boolean {
  try {
    return Deno.env.get("TEXFORCE_TENSOR_TABLES")?.trim().toLowerCase() !== "weak";
  } catch {
    return true; // no env permission: the default
  }
}

/**
 * Make the engine's tensor table and the wasm backend's data table Maps (see the file comment).
 * Call once the backend is active; idempotent, and again after a backend restart or an engine
 * reset, which make fresh WeakMaps. Returns whether the tables are Maps now.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { installTensorTables } from "./_tensor_tables.ts";
 * console.log(installTensorTables(tf.engine(), tf.backend()));
 * ```
 */
export function installTensorTables(engine: unknown, backend: unknown): boolean {
  if (!wanted()) return false;
  const state = (engine as { state?: Record<string, unknown> }).state;
  const storage = (backend as { dataIdMap?: Record<string, unknown> }).dataIdMap;
  if (!state || !storage) return false;
  swap(state, "tensorInfo", Number(state.numDataBuffers ?? 1));
  swap(storage, "data", Number(storage.dataIdsCount ?? 1));
  return !(state.tensorInfo instanceof WeakMap) && !(storage.data instanceof WeakMap);
}
