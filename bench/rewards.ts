/**
 * `deno task bench rewards [--only NAMES] [--backend wasm] [--iters 2] [more]`: every reward
 * benchmark. `--only` takes names of both groups: `face,hand,aesthetic,clip-score`
 * (`rewards_detectors.ts`: batch 8 of 512×512, `--batch`, `--size`, `--clip`) and
 * `imagereward,vit-h-14,http` (`rewards_preference.ts`: real sizes, random weights,
 * `--vit-layers`). Each group receives only its own flags.
 *
 * @module
 */
import { parseArgs } from "node:util";
import benchDetectorRewards from "./rewards_detectors.ts";
import benchRewardsPreference from "./rewards_preference.ts";

const DETECTORS = ["face", "hand", "aesthetic", "clip-score"];
const PREFERENCE = ["imagereward", "vit-h-14", "http"];

/**
 * Run the reward benchmarks named by `--only` (default: all).
 *
 * @example
 * ```ts
 * import benchRewards from "./rewards.ts";
 * await benchRewards(["--only", "face,http", "--iters", "1"]);
 * ```
 */
export default async function benchRewards(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      only: { type: "string" },
      backend: { type: "string", default: "wasm" },
      iters: { type: "string", default: "2" },
      batch: { type: "string" },
      size: { type: "string" },
      clip: { type: "string" },
      "vit-layers": { type: "string" },
    },
  });
  const only = values.only?.split(",") ?? [...DETECTORS, ...PREFERENCE];
  const unknown = only.filter((n) => !DETECTORS.includes(n) && !PREFERENCE.includes(n));
  if (unknown.length) {
    throw new Error(
      `bench rewards: unknown reward(s) ${unknown.join(", ")} (expected ${
        [...DETECTORS, ...PREFERENCE].join(", ")
      })`,
    );
  }
  const common = ["--backend", values.backend!, "--iters", values.iters!];
  const pass = (names: string[]) =>
    names.flatMap((n) => (values[n as "batch"] ? [`--${n}`, values[n as "batch"]!] : []));
  const detectors = only.filter((n) => DETECTORS.includes(n));
  const preference = only.filter((n) => PREFERENCE.includes(n));
  if (detectors.length) {
    await benchDetectorRewards([
      ...common,
      "--only",
      detectors.join(","),
      ...pass(["batch", "size", "clip"]),
    ]);
  }
  if (preference.length) {
    await benchRewardsPreference([
      ...common,
      "--only",
      preference.join(","),
      ...pass(["vit-layers"]),
    ]);
  }
}
