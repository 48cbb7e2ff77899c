/**
 * Learning-rate schedules: constant, and linear warmup followed by cosine decay (as diffusers'
 * `get_cosine_schedule_with_warmup`, with an optional floor).
 *
 * @module
 */

/** Schedule settings. */
export interface LrScheduleOptions {
  /** `constant` or `cosine`. */
  type: "constant" | "cosine";
  /** Peak learning rate. */
  lr: number;
  /** Steps of linear warmup from 0 to `lr` (both types). */
  warmupSteps: number;
  /** Total optimizer steps of the run (cosine reaches `minLr` there). */
  totalSteps: number;
  /** Floor of the cosine decay. */
  minLr: number;
}

/**
 * Learning rate at optimizer step `step` (0-based: the rate used for the first update is
 * `learningRate(0, …)`).
 *
 * @example
 * ```ts
 * import { learningRate } from "@texforce/core";
 * const lr = learningRate(10, { type: "cosine", lr: 3e-4, warmupSteps: 5, totalSteps: 100, minLr: 0 });
 * ```
 */
export function learningRate(step: number, o: LrScheduleOptions): number {
  if (o.warmupSteps > 0 && step < o.warmupSteps) return (o.lr * step) / o.warmupSteps;
  if (o.type === "constant") return o.lr;
  const progress = Math.min(
    1,
    (step - o.warmupSteps) / Math.max(1, o.totalSteps - o.warmupSteps),
  );
  const factor = 0.5 * (1 + Math.cos(Math.PI * progress));
  return o.minLr + (o.lr - o.minLr) * factor;
}
