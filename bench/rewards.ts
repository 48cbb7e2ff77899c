/**
 * `deno task bench rewards [args]`: reward benchmarks. The preference models (ImageReward,
 * HPSv2/PickScore's ViT-H-14, the HTTP reward) live in `rewards_preference.ts`; other reward
 * benchmarks add one line here.
 *
 * @module
 */
import benchRewardsPreference from "./rewards_preference.ts";

/**
 * Run every reward benchmark.
 *
 * @example
 * ```ts
 * import benchRewards from "./rewards.ts";
 * await benchRewards(["--only", "http"]);
 * ```
 */
export default async function benchRewards(args: string[]): Promise<void> {
  await benchRewardsPreference(args);
}
