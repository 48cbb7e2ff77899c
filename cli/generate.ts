/**
 * `texforce generate <model>`: sample images for prompts and seeds, without and with LoRA
 * adapters (text encoder and/or UNet), and write the PNGs and a side-by-side grid.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { join, resolve } from "node:path";
import { ClipLoraEncoder } from "../adapters/encoder/clip_lora_encoder.ts";
import { BACKEND_NAMES, type BackendName, useBackend } from "../core/backend.ts";
import { saveImages, writeImageGrid } from "../core/image_output.ts";
import { readModelFolder } from "../core/io/model_folder.ts";
import { writeFileAtomic } from "../core/io/atomic_file.ts";
import { readPromptFile } from "../core/prompts.ts";
import { ddimSampler } from "../samplers/ddim_sampler.ts";
import {
  boolFlag,
  EXIT,
  InputError,
  listFlag,
  numberFlag,
  parseCommandArgs,
  positionals,
  reportError,
  seedsFlag,
  stringFlag,
  UsageError,
} from "./_args.ts";

/** Help of `texforce generate`. */
const GENERATE_HELP: string = `Usage: texforce generate <model> --prompt <text> [options]

Sample images from a diffusers model folder for each prompt and seed, once without adapters
("base"), once with each --lora alone when several are given ("lora-1", "lora-2", …), and once
with every given LoRA together ("lora"); write the PNGs and a grid: one row per variant (labelled
base / the LoRA files), one column per prompt and seed (labelled with the prompt), scaled up to at
least 256 px per image. Without --lora and --unet-lora only the base row is made.

Options:
  -p, --prompt <text>      A prompt (repeatable)
  --prompt-file <file>     Prompts, one per line (or a JSON array)
  --lora <path>            A text-encoder LoRA: PEFT folder or .safetensors in PEFT, diffusers
                           or kohya layout, e.g. runs/demo/export/peft (repeatable: a row
                           for each, and one with all of them fused)
  --lora-scale <w>         Weight of every --lora (default 1)
  --unet-lora <path>       A UNet LoRA (file or PEFT folder), merged into the UNet
  --unet-lora-scale <w>    Its scale (default 1)
  --seeds <list>           Seeds, e.g. 0,1,2 or 0-3 (default 0)
  --steps <n>              DDIM steps (default 50)
  --guidance <g>           Classifier-free guidance scale (default 7.5)
  --eta <eta>              DDIM eta (default 0: deterministic given the seed)
  --negative <text>        Negative prompt (default "")
  --backend <name>         ${BACKEND_NAMES.join(", ")} (default auto)
  -o, --out <dir>          Output folder (default out/generate)
  -h, --help               Show this help

Writes <out>/base/*.png, <out>/lora/*.png (<out>/lora-<i>/*.png with several --lora),
<out>/grid.png and <out>/index.json.
`;

interface Variant {
  /** Folder of its PNGs: `base`, `lora` (every LoRA given), `lora-<i>` (the i-th alone). */
  name: string;
  /** Indexes (into --lora) of the text-encoder LoRAs enabled. */
  textLoras: number[];
  unetLora?: string;
}

/** A grid row's label: `base`, or the LoRA files it uses (last three path parts). */
function variantLabel(v: Variant, loras: string[], scale: number): string {
  if (v.name === "base") return "base";
  const short = (p: string) => p.split(/[\\/]/).filter(Boolean).slice(-3).join("/");
  const parts = v.textLoras.map((i) => short(loras[i]) + (scale !== 1 ? ` x${scale}` : ""));
  if (v.unetLora) parts.push(`UNet ${short(v.unetLora)}`);
  return `LoRA ${parts.join(" + ")}`;
}

/**
 * The grid's rows: base; with several --lora, each LoRA alone (`lora-1`, …); then every LoRA
 * given together (`lora`), with the UNet LoRA when there is one.
 */
function variantsOf(loras: string[], unetLora: string | undefined): Variant[] {
  const all = loras.map((_, i) => i);
  const variants: Variant[] = [{ name: "base", textLoras: [] }];
  if (loras.length > 1) {
    for (const i of all) variants.push({ name: `lora-${i + 1}`, textLoras: [i] });
  }
  if (loras.length || unetLora) variants.push({ name: "lora", textLoras: all, unetLora });
  return variants;
}

async function checkExists(flag: string, path: string): Promise<string> {
  const abs = resolve(path);
  try {
    await Deno.stat(abs);
  } catch {
    throw new InputError(`${flag} ${path}: not found`);
  }
  return abs;
}

/**
 * Run `texforce generate` with its arguments (after `generate`); returns the exit code.
 *
 * @example
 * ```ts
 * import { generateCommand } from "@texforce/core/cli";
 * Deno.exitCode = await generateCommand([
 *   "tests/fixtures/sd-tiny/tiny-sd", "--prompt", "a red circle", "--steps", "4",
 *   "--lora", "runs/tiny_brightness/export/peft", "--out", "out/demo",
 * ]);
 * ```
 */
export async function generateCommand(args: string[]): Promise<number> {
  const cmd = "generate";
  try {
    const p = parseCommandArgs(cmd, args, {
      prompt: { type: "string", multiple: true, short: "p" },
      "prompt-file": { type: "string" },
      lora: { type: "string", multiple: true },
      "lora-scale": { type: "string" },
      "unet-lora": { type: "string" },
      "unet-lora-scale": { type: "string" },
      seeds: { type: "string" },
      steps: { type: "string" },
      guidance: { type: "string" },
      eta: { type: "string" },
      negative: { type: "string" },
      backend: { type: "string" },
      out: { type: "string", short: "o" },
    });
    if (boolFlag(p, "help")) {
      console.log(GENERATE_HELP.trimEnd());
      return EXIT.ok;
    }
    const [model] = positionals(cmd, p, ["model"]);
    const prompts = listFlag(p, "prompt");
    const promptFile = stringFlag(p, "prompt-file");
    if (promptFile) {
      try {
        prompts.push(...await readPromptFile(resolve(promptFile)));
      } catch (e) {
        throw new InputError(`--prompt-file: ${(e as Error).message}`);
      }
    }
    if (prompts.length === 0) {
      throw new UsageError(cmd, "give at least one --prompt or --prompt-file");
    }
    const seeds = seedsFlag(cmd, p, "seeds") ?? [0];
    const steps = numberFlag(cmd, p, "steps", { int: true, min: 1 }) ?? 50;
    const guidance = numberFlag(cmd, p, "guidance", { min: 0 }) ?? 7.5;
    const eta = numberFlag(cmd, p, "eta", { min: 0 }) ?? 0;
    const loraScale = numberFlag(cmd, p, "lora-scale") ?? 1;
    const unetLoraScale = numberFlag(cmd, p, "unet-lora-scale") ?? 1;
    const negative = stringFlag(p, "negative") ?? "";
    const backend = (stringFlag(p, "backend") ?? "auto") as BackendName;
    if (!BACKEND_NAMES.includes(backend)) {
      throw new UsageError(
        cmd,
        `--backend: expected one of ${BACKEND_NAMES.join(", ")}, got '${backend}'`,
      );
    }
    const out = resolve(stringFlag(p, "out") ?? join("out", "generate"));
    const loras = await Promise.all(listFlag(p, "lora").map((l) => checkExists("--lora", l)));
    const unetLoraFlag = stringFlag(p, "unet-lora");
    const unetLora = unetLoraFlag ? await checkExists("--unet-lora", unetLoraFlag) : undefined;
    const folder = await readModelFolder(model);

    const info = await useBackend(backend);
    console.error(`backend: ${info.name} (${info.device})`);
    const encoder = await ClipLoraEncoder.load(folder.path, {
      train: false,
      adapters: loras.map((path) => ({ path, weight: loraScale })),
    });
    try {
      const variants = variantsOf(loras, unetLora);
      const adapters = [...encoder.lora.adapters.values()];
      const cells: { prompt: string; seed: number; variant: string; file: string }[] = [];
      const byVariant = new Map<string, tf.Tensor4D[]>();
      for (const v of variants) {
        for (const [i, a] of adapters.entries()) a.enabled = v.textLoras.includes(i);
        const sampler = await ddimSampler({
          modelPath: folder.path,
          steps,
          eta,
          guidance,
          unetBatchSize: 1,
          unetLora: v.unetLora,
          unetLoraScale,
        });
        const images: tf.Tensor4D[] = [];
        try {
          for (const [pi, prompt] of prompts.entries()) {
            for (const seed of seeds) {
              const cond = {
                prompt: encoder.encode([prompt]),
                negative: encoder.encode([negative]),
              };
              try {
                const traj = await sampler.sample(cond, { seed });
                traj.latents.dispose();
                traj.logProbs.dispose();
                const name = `${String(pi).padStart(3, "0")}_seed${seed}.png`;
                const [file] = await saveImages(traj.images, join(out, v.name), { names: [name] });
                images.push(traj.images);
                cells.push({ prompt, seed, variant: v.name, file });
                console.error(`${v.name}: ${file}`);
              } finally {
                cond.prompt.dispose();
                cond.negative.dispose();
              }
            }
          }
        } finally {
          sampler.dispose();
        }
        byVariant.set(v.name, images);
      }
      // Grid: one row per variant (base, then the LoRA), one column per prompt and seed.
      const ordered: tf.Tensor4D[] = [];
      for (const v of variants) ordered.push(...byVariant.get(v.name)!);
      const columnLabels = prompts.flatMap((prompt) =>
        seeds.map((seed) => (seeds.length > 1 ? `${prompt} (seed ${seed})` : prompt))
      );
      const rowLabels = variants.map((v) => variantLabel(v, loras, loraScale));
      const batch = tf.concat(ordered) as tf.Tensor4D;
      const grid = join(out, "grid.png");
      try {
        await writeImageGrid(grid, batch, {
          columns: columnLabels.length,
          columnLabels,
          rowLabels,
        });
      } finally {
        batch.dispose();
        for (const list of byVariant.values()) for (const t of list) t.dispose();
      }
      await writeFileAtomic(
        join(out, "index.json"),
        new TextEncoder().encode(
          JSON.stringify(
            { model: folder.path, loras, unetLora, steps, guidance, eta, negative, images: cells },
            null,
            2,
          ),
        ),
      );
      console.log(`grid: ${grid}`);
      console.log(`images: ${cells.length} in ${out}`);
      return EXIT.ok;
    } finally {
      encoder.dispose();
    }
  } catch (e) {
    return reportError(e);
  }
}
