/**
 * The tensors a model loader has made so far, so that a load that fails half-way releases them.
 *
 * @module
 */
import type { Tensor } from "../../core/tensor_types.ts";
import { type LayerNormWeights, loadLayerNorm } from "./layer_norm.ts";
import { type LinearWeights, loadLinear } from "./linear.ts";
import type { WeightReader } from "./weight_reader.ts";

/**
 * Collects what a loader reads; `dispose()` releases it all (call it when the load fails).
 *
 * @example
 * ```ts
 * import { OwnedTensors, WeightReader } from "@texforce/core/adapters";
 * declare const r: WeightReader;
 * const owned = new OwnedTensors(r);
 * try {
 *   const fc = await owned.linear("mlp.fc1", 768, 3072);
 *   const norm = await owned.layerNorm("norm", 768, 1e-6);
 * } catch (e) {
 *   owned.dispose();
 *   throw e;
 * }
 * ```
 */
export class OwnedTensors {
  readonly #reader: WeightReader;
  readonly #made: Tensor[] = [];

  /** Collect the tensors read through `reader`. */
  constructor(reader: WeightReader) {
    this.#reader = reader;
  }

  /** Keep `t` (made by the loader itself) and return it. */
  keep<T extends Tensor>(t: T): T {
    this.#made.push(t);
    return t;
  }

  /** A linear layer `name` [out, in] with its optional bias. */
  async linear(name: string, inFeatures: number, outFeatures: number): Promise<LinearWeights> {
    const w = await loadLinear(this.#reader, name, inFeatures, outFeatures);
    this.keep(w.weight);
    if (w.bias) this.keep(w.bias);
    return w;
  }

  /** A LayerNorm `name` of width `d`. */
  async layerNorm(name: string, d: number, eps: number): Promise<LayerNormWeights> {
    const w = await loadLayerNorm(this.#reader, name, d, eps);
    this.keep(w.weight);
    this.keep(w.bias);
    return w;
  }

  /** Release everything collected. */
  dispose(): void {
    for (const t of this.#made.splice(0)) t.dispose();
  }
}
