/**
 * The hook through which an adapter (LoRA) adds a term to a model's linear layers: models take a
 * {@linkcode LinearDelta} and know nothing of the adapter behind it.
 *
 * @module
 */
import type { Tensor2D } from "../../core/tensor_types.ts";

/**
 * Input and output width of a linear layer.
 *
 * @example
 * ```ts
 * import type { LinearShape } from "@texforce/core/adapters";
 * const s: LinearShape = { inFeatures: 768, outFeatures: 768 };
 * ```
 */
export interface LinearShape {
  /** Input features. */
  inFeatures: number;
  /** Output features. */
  outFeatures: number;
}

/**
 * Something that adds a term to the output of named linear layers; the text model calls it for
 * every linear layer.
 *
 * @example
 * ```ts
 * import type { LinearDelta } from "@texforce/core/adapters";
 * const none: LinearDelta = { delta: () => null };
 * ```
 */
export interface LinearDelta {
  /** The term to add to `module`'s output for input `x` [N, in], or null. */
  delta(module: string, x: Tensor2D): Tensor2D | null;
}
