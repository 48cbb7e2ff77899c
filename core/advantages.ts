/**
 * Rewards → advantages: per-prompt running statistics (DDPO's PerPromptStatTracker: a buffer of
 * the last `bufferSize` rewards per prompt; below `minCount` rewards the batch's mean/std is
 * used), or global normalisation over the batch.
 *
 * @module
 */

/** Saved tracker state (part of a checkpoint). */
export interface AdvantageTrackerState {
  /** Reward buffer per prompt, oldest first. */
  buffers: Record<string, number[]>;
}

function meanStd(xs: number[]): [number, number] {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const v = xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length;
  return [m, Math.sqrt(v)];
}

/**
 * Global normalisation: (r − mean) / (std + 1e-8) over the batch.
 *
 * @example
 * ```ts
 * import { normalizeAdvantages } from "@texforce/core";
 * normalizeAdvantages([1, 2, 3]); // [-1.22…, 0, 1.22…]
 * ```
 */
export function normalizeAdvantages(rewards: number[]): number[] {
  const [m, s] = meanStd(rewards);
  return rewards.map((r) => (r - m) / (s + 1e-8));
}

/**
 * Per-prompt advantage tracker.
 *
 * @example
 * ```ts
 * import { PerPromptTracker } from "@texforce/core";
 * const t = new PerPromptTracker(16, 16);
 * const adv = t.update(["a cat", "a cat", "a dog"], [1, 2, 3]);
 * ```
 */
export class PerPromptTracker {
  /** Rewards kept per prompt. */
  readonly bufferSize: number;
  /** Rewards needed before a prompt's own statistics are used. */
  readonly minCount: number;
  #buffers = new Map<string, number[]>();

  /** Create a tracker. */
  constructor(bufferSize = 16, minCount = 16) {
    this.bufferSize = bufferSize;
    this.minCount = minCount;
  }

  /** Add a batch of rewards and return their advantages. */
  update(prompts: string[], rewards: number[]): number[] {
    if (prompts.length !== rewards.length) {
      throw new Error(`advantages: ${prompts.length} prompts but ${rewards.length} rewards`);
    }
    const adv = new Array<number>(rewards.length);
    const [batchMean, batchStd] = meanStd(rewards);
    for (const prompt of new Set(prompts)) {
      const idx = prompts.flatMap((p, i) => (p === prompt ? [i] : []));
      const buf = this.#buffers.get(prompt) ?? [];
      buf.push(...idx.map((i) => rewards[i]));
      while (buf.length > this.bufferSize) buf.shift();
      this.#buffers.set(prompt, buf);
      const [m, s] = buf.length < this.minCount ? [batchMean, batchStd] : meanStd(buf);
      for (const i of idx) adv[i] = (rewards[i] - m) / (s + 1e-6);
    }
    return adv;
  }

  /** Statistics of every prompt seen: count, mean, std. */
  stats(): Record<string, { count: number; mean: number; std: number }> {
    const out: Record<string, { count: number; mean: number; std: number }> = {};
    for (const [p, b] of this.#buffers) {
      const [mean, std] = meanStd(b);
      out[p] = { count: b.length, mean, std };
    }
    return out;
  }

  /** State for a checkpoint. */
  getState(): AdvantageTrackerState {
    return { buffers: Object.fromEntries([...this.#buffers].map(([k, v]) => [k, [...v]])) };
  }

  /** Restore from a checkpoint. */
  setState(state: AdvantageTrackerState): void {
    this.#buffers = new Map(Object.entries(state.buffers).map(([k, v]) => [k, [...v]]));
  }
}
