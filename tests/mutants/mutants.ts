/**
 * The single-site mutations `deno task mutants` plants, one at a time, in a copy of the project.
 * Each names the file, the exact text it replaces (which must occur exactly once) and the tests
 * that cover that code, fastest first. Every mutant must be killed: a survivor means the suite
 * would stay green with that bug.
 *
 * @module
 */

/** One planted bug. */
export interface Mutant {
  /** Short id, used with `--only`. */
  id: string;
  /** The bug, in words. */
  what: string;
  /** File relative to the project root. */
  file: string;
  /** Replacements applied together; each `find` must occur exactly once in the file. */
  edits: { find: string; replace: string }[];
  /** Test files that should kill it, run in this order (relative to the project root). */
  tests: string[];
}

/**
 * The mutants of issue 9, in the project's order of layers.
 *
 * @example
 * ```ts
 * import { MUTANTS } from "./mutants.ts";
 * console.log(MUTANTS.map((m) => m.id).join(" "));
 * ```
 */
export const MUTANTS: Mutant[] = [
  {
    id: "ppo-clip-removed",
    what: "PPO without ratio clipping",
    file: "core/ppo_loss.ts",
    edits: [{
      find: "tf.clipByValue(ratio, 1 - o.clipRange, 1 + o.clipRange)",
      replace: "ratio",
    }],
    tests: ["tests/core/ppo_loss_test.ts", "tests/core/trainer_parity_test.ts"],
  },
  {
    id: "adv-clip-removed",
    what: "advantages not clipped to ±advClipMax",
    file: "core/ppo_loss.ts",
    edits: [{
      find: "const adv = tf.clipByValue(advantages, -o.advClipMax, o.advClipMax);",
      replace: "const adv = advantages;",
    }],
    tests: ["tests/core/ppo_loss_test.ts", "tests/core/trainer_parity_test.ts"],
  },
  {
    id: "ratio-inverted",
    what: "ratio computed as exp(old − new)",
    file: "core/ppo_loss.ts",
    edits: [{
      find: "const diff = tf.sub(newLogProb, oldLogProb);",
      replace: "const diff = tf.sub(oldLogProb, newLogProb);",
    }],
    tests: ["tests/core/ppo_loss_test.ts", "tests/core/trainer_parity_test.ts"],
  },
  {
    id: "logprob-wrong-axes",
    what: "log-prob mean over the wrong axes (batch included, channels kept)",
    file: "samplers/ddim_scheduler.ts",
    edits: [{
      find: "const axes = Array.from({ length: x.rank - 1 }, (_, i) => i + 1);",
      replace: "const axes = Array.from({ length: x.rank - 1 }, (_, i) => i);",
    }],
    tests: ["tests/samplers/ddim_scheduler_test.ts", "tests/samplers/ddim_sampler_test.ts"],
  },
  {
    id: "ddim-eta-ignored",
    what: "DDIM eta ignored (std always the eta = 1 value)",
    file: "samplers/ddim_scheduler.ts",
    edits: [{
      find: "const std = eta * Math.sqrt(variance);",
      replace: "const std = Math.sqrt(variance);",
    }],
    tests: ["tests/samplers/ddim_scheduler_test.ts", "tests/samplers/ddim_sampler_test.ts"],
  },
  {
    id: "cfg-wrong",
    what: "classifier-free guidance as uncond + g·cond",
    file: "samplers/ddim_sampler.ts",
    edits: [{
      find: "return tf.add(u, tf.mul(tf.sub(c, u), g)) as Tensor4D;",
      replace: "return tf.add(u, tf.mul(c, g)) as Tensor4D;",
    }],
    tests: ["tests/samplers/ddim_sampler_test.ts"],
  },
  {
    id: "leading-as-trailing",
    what: "leading timestep spacing computed as trailing",
    file: "samplers/ddim_scheduler.ts",
    edits: [{
      find:
        "ts = Array.from({ length: n }, (_, i) => i * ratio + this.config.stepsOffset).reverse();",
      replace: "ts = Array.from({ length: n }, (_, i) => roundHalfEven(N + i * -(N / n)) - 1);",
    }],
    tests: ["tests/samplers/ddim_scheduler_test.ts"],
  },
  {
    id: "set-alpha-to-one-ignored",
    what: "set_alpha_to_one ignored (final ᾱ always alphas_cumprod[0])",
    file: "samplers/ddim_scheduler.ts",
    edits: [{
      find: "this.finalAlphaCumprod = config.setAlphaToOne ? 1 : this.alphasCumprod[0];",
      replace: "this.finalAlphaCumprod = this.alphasCumprod[0];",
    }],
    tests: ["tests/samplers/ddim_scheduler_test.ts"],
  },
  {
    id: "lora-scale-swapped",
    what: "LoRA scale rank / alpha instead of alpha / rank",
    file: "adapters/lora/lora.ts",
    edits: [{
      find: "return rs ? alpha / Math.sqrt(rank) : alpha / rank;",
      replace: "return rs ? alpha / Math.sqrt(rank) : rank / alpha;",
    }],
    tests: ["tests/adapters/lora/lora_test.ts"],
  },
  {
    id: "lora-wrong-projection",
    what: "the q_proj LoRA applied where k_proj's belongs",
    file: "adapters/clip/clip_text_model.ts",
    edits: [{
      find: "const d = lora?.delta(module, x);",
      replace: 'const d = lora?.delta(module.replace("k_proj", "q_proj"), x);',
    }],
    tests: ["tests/adapters/lora/lora_test.ts"],
  },
  {
    id: "clip-skip-off-by-one",
    what: "clip skip k removes k + 1 layers",
    file: "adapters/clip/clip_text_model.ts",
    edits: [{
      find: "const layersRun = cfg.numHiddenLayers - skip;",
      replace: "const layersRun = cfg.numHiddenLayers - skip - (skip > 0 ? 1 : 0);",
    }],
    tests: ["tests/adapters/clip/clip_text_model_test.ts"],
  },
  {
    id: "adamw-coupled-decay",
    what: "AdamW weight decay added to the gradient (Adam + L2) instead of decoupled",
    file: "adapters/optim/adamw.ts",
    edits: [{
      find: "const decayed = p.mul(1 - lr * o.weightDecay);\n" +
        "          const mNew = mi.mul(b1).add(g.mul(1 - b1));\n" +
        "          const vNew = vi.mul(b2).add(g.mul(g).mul(1 - b2));",
      replace: "const decayed = p;\n" +
        "          const gw = g.add(p.mul(o.weightDecay));\n" +
        "          const mNew = mi.mul(b1).add(gw.mul(1 - b1));\n" +
        "          const vNew = vi.mul(b2).add(gw.mul(gw).mul(1 - b2));",
    }],
    tests: ["tests/adapters/optim/adamw_formula_test.ts", "tests/adapters/optim/adamw_test.ts"],
  },
  {
    id: "adamw-no-bias-correction",
    what: "AdamW bias correction dropped",
    file: "adapters/optim/adamw.ts",
    edits: [{
      find: "const bc1 = 1 - b1 ** t;\n      const bc2Sqrt = Math.sqrt(1 - b2 ** t);",
      replace: "const bc1 = 1;\n      const bc2Sqrt = 1;",
    }],
    tests: ["tests/adapters/optim/adamw_formula_test.ts", "tests/adapters/optim/adamw_test.ts"],
  },
  {
    id: "clip-after-step",
    what: "gradient-norm clipping applied after the optimizer step",
    file: "core/trainer.ts",
    edits: [
      {
        find: "const norm = await clipGlobalNorm(grads, this.config.optimizer.maxGradNorm);",
        replace: "const norm = await clipGlobalNorm(grads, Infinity);",
      },
      {
        find: "this.parts.optimizer.step(grads, lr);",
        replace: "this.parts.optimizer.step(grads, lr);\n" +
          "      await clipGlobalNorm(grads, this.config.optimizer.maxGradNorm);",
      },
    ],
    tests: ["tests/core/trainer_grad_clip_test.ts"],
  },
  {
    id: "tracker-batch-stats",
    what: "per-prompt tracker always uses the batch statistics",
    file: "core/advantages.ts",
    edits: [{
      find: "const [m, s] = buf.length < this.minCount ? [batchMean, batchStd] : meanStd(buf);",
      replace: "const [m, s] = [batchMean, batchStd];",
    }],
    tests: ["tests/core/advantages_test.ts", "tests/core/trainer_test.ts"],
  },
  {
    id: "up-heads-not-reversed",
    what: "UNet up path uses the down path's per-block head counts",
    file: "adapters/unet/unet_2d_condition.ts",
    edits: [{
      find: "const rHeads = rev(c.numAttentionHeads);",
      replace: "const rHeads = c.numAttentionHeads;",
    }],
    tests: ["tests/adapters/unet/unet_test.ts"],
  },
  {
    id: "gelu-quick-gelu-swapped",
    what: "gelu computed as quick_gelu and quick_gelu as gelu",
    file: "adapters/clip/_clip_tower.ts",
    edits: [{
      find: '    case "quick_gelu":\n      return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));\n' +
        '    case "gelu":',
      replace: '    case "gelu":\n      return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));\n' +
        '    case "quick_gelu":',
    }],
    tests: [
      "tests/adapters/clip/clip_activation_test.ts",
      "tests/adapters/clip/clip_vision_test.ts",
      "tests/adapters/clip/clip_text_model_test.ts",
    ],
  },
  {
    id: "pooled-last-token",
    what: "pooled output at the last eos/pad position instead of the first eos",
    file: "adapters/clip/clip_text_model.ts",
    edits: [{
      find: 'const isEos = tf.add(tf.mul(value, l), tf.range(l - 1, -1, -1, "float32"));',
      replace: 'const isEos = tf.add(tf.mul(value, l), tf.range(0, l, 1, "float32"));',
    }],
    tests: ["tests/adapters/clip/clip_text_model_test.ts"],
  },
];
