// Keys of the configs texforce's users come from — DDPO's (ddpo-pytorch config/base.py, nested)
// and trl's DDPOConfig (flat) — and the pipeline key that means the same thing, so an unknown
// key error can say what to write instead.
import type { Issue } from "./_zod_issues.ts";

const DDPO: Record<string, string> = {
  "num_epochs": "train.epochs",
  "save_freq": "checkpoint.every",
  "num_checkpoint_limit": "checkpoint.keep",
  "resume_from": "checkpoint.resume",
  "logdir": "output.dir",
  "run_name": "name",
  "pretrained.model": "model",
  "prompt_fn": "prompts.builtin",
  "reward_fn": "rewards[0].use",
  "lora_rank": "encoder.options.rank",
  "sample.num_steps": "sampler.steps",
  "sample.eta": "sampler.eta",
  "sample.guidance_scale": "sampler.guidance",
  "sample.batch_size": "sampler.batchSize",
  "sample.num_batches_per_epoch": "train.batchesPerEpoch",
  "train.batch_size": "train.batchSize",
  "train.learning_rate": "optimizer.lr",
  "train.adam_beta1": "optimizer.betas[0]",
  "train.adam_beta2": "optimizer.betas[1]",
  "train.adam_weight_decay": "optimizer.weightDecay",
  "train.adam_epsilon": "optimizer.eps",
  "train.gradient_accumulation_steps": "train.gradientAccumulation",
  "train.max_grad_norm": "optimizer.maxGradNorm",
  "train.num_inner_epochs": "train.innerEpochs",
  "train.adv_clip_max": "train.advClipMax",
  "train.clip_range": "train.clipRange",
  "train.timestep_fraction": "train.timestepFraction",
  "per_prompt_stat_tracking": "train.perPromptTracking.enabled",
  "per_prompt_stat_tracking.buffer_size": "train.perPromptTracking.bufferSize",
  "per_prompt_stat_tracking.min_count": "train.perPromptTracking.minCount",
};

// trl's DDPOConfig spells the nested keys flat: sample_num_steps, train_learning_rate, …
const TRL: Record<string, string> = Object.fromEntries(
  Object.entries(DDPO).map(([k, v]) => [k.replace(".", "_"), v]),
);

/** The pipeline key for a DDPO or trl key (dotted path), if there is one. */
function ours(path: string): { ours: string; from: string } | undefined {
  if (Object.hasOwn(DDPO, path)) return { ours: DDPO[path], from: "DDPO" };
  if (Object.hasOwn(TRL, path)) return { ours: TRL[path], from: "trl" };
  return undefined;
}

/**
 * Problems for the DDPO / trl keys in a pipeline object (top level and one level down), each
 * naming the pipeline key to write instead.
 */
export function foreignKeyIssues(input: unknown): Issue[] {
  if (!input || typeof input !== "object" || Array.isArray(input)) return [];
  const out: Issue[] = [];
  for (const [key, value] of Object.entries(input)) {
    const paths = [key];
    if (value && typeof value === "object" && !Array.isArray(value)) {
      paths.push(...Object.keys(value).map((k) => `${key}.${k}`));
    }
    for (const path of paths) {
      const hit = ours(path);
      // A key that is also ours (`train.batch_size` is DDPO's, `train.batchSize` ours) or a
      // nested one whose parent is also ours, e.g. `train`, is reported at its own path.
      if (hit) {
        out.push({
          path,
          message: `unknown key: ${hit.from}'s '${path}' is texforce's ${hit.ours}`,
        });
      }
    }
  }
  return out;
}
