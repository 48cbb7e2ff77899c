/**
 * The `Optimizer` interface: updates named variables from named gradients; its state can be
 * saved and restored exactly (checkpoints).
 *
 * @module
 */
import type { Tensor } from "./tensor_types.ts";

/** A saved optimizer state: step count plus named host tensors (moments, …). */
export interface OptimizerState {
  /** Number of steps taken. */
  step: number;
  /** Named state tensors as host arrays with shapes. */
  tensors: Record<string, { shape: number[]; data: Float32Array }>;
}

/**
 * An optimizer over named variables.
 *
 * @example
 * ```ts
 * import type { Optimizer } from "@texforce/core";
 * declare const opt: Optimizer;
 * declare const grads: Map<string, import("@tensorflow/tfjs").Tensor>;
 * opt.step(grads, 3e-4);
 * ```
 */
export interface Optimizer {
  /** Name used in logs. */
  readonly name: string;
  /** Apply one update with learning rate `lr`; `grads` keys are variable names. */
  step(grads: Map<string, Tensor>, lr: number): void;
  /** Steps taken so far. */
  readonly stepCount: number;
  /** Snapshot of the state (for checkpoints). */
  getState(): Promise<OptimizerState>;
  /** Restore a snapshot. */
  setState(state: OptimizerState): void;
  /** Release state tensors. */
  dispose(): void;
}
