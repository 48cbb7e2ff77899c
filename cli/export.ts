/**
 * `texforce export <checkpoint>`: write the LoRA of a training checkpoint in formats other
 * tools load (PEFT, diffusers, kohya for AUTOMATIC1111/ComfyUI, or a merged text encoder).
 *
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { builtinRegistry } from "../builtin_plugins.ts";
import { useBackend } from "../core/backend.ts";
import {
  type Checkpoint,
  latestIntactCheckpoint,
  loadCheckpoint,
  restoreVariables,
} from "../core/checkpoint.ts";
import { writeFolderAtomic } from "../core/run_folder.ts";
import {
  DEFAULT_EXPORT_LAYOUT,
  EXPORT_FORMATS,
  EXPORT_LAYOUTS,
  type ExportFormat,
  type ExportLayout,
  parsePipeline,
  type Pipeline,
} from "../core/pipeline_schema.ts";
import {
  parsePluginOptions,
  pluginAllowed,
  pluginOrigin,
  type PluginRegistry,
  readPluginAllowList,
} from "../core/plugin.ts";
import type { Encoder } from "../core/encoder.ts";
import {
  boolFlag,
  EXIT,
  InputError,
  listFlag,
  parseCommandArgs,
  positionals,
  reportError,
  stringFlag,
  UsageError,
} from "./_args.ts";

const FORMATS = EXPORT_FORMATS;

/** Help of `texforce export`. */
const EXPORT_HELP: string = `Usage: texforce export <checkpoint> --format <format> [options]

Export the LoRA of a checkpoint folder (runs/<name>/checkpoints/step-…), or of the newest
intact checkpoint of a run folder (runs/<name>), for other tools. The checkpoint itself records
the LoRA's settings (encoder, rank, alpha, targets, the model and its key layout); the run's
pipeline.json is read only for checkpoints of older versions that lack them.

Formats, and the call that loads each (checked with transformers 4.57/5.18, peft 0.21,
diffusers 0.33/0.39/0.40):
  merged     a full text encoder with the LoRA folded in (config.json + model.safetensors):
               CLIPTextModel.from_pretrained(dir), passed as text_encoder= to
               StableDiffusionPipeline.from_pretrained
  peft       adapter_config.json + adapter_model.safetensors:
               PeftModel.from_pretrained(text_encoder, dir) (only on the transformers major
               of --layout), or pipe.text_encoder.load_adapter(dir) in diffusers;
               NOT pipe.load_lora_weights(dir), which finds no text-encoder keys in it
  diffusers  pytorch_lora_weights.safetensors: pipe.load_lora_weights(file); alpha/r is
               folded into the up matrices, so diffusers before 0.34 (which ignores
               lora_adapter_metadata) loads it at the trained strength too
  kohya      lora_te_text_model_… keys, float alpha, ss_* metadata: AUTOMATIC1111 / Forge
               (models/Lora), ComfyUI (LoraLoader), or pipe.load_lora_weights(file) on
               transformers 4; diffusers on transformers 5 crashes on kohya text-encoder
               files (IndexError in peft_utils.py, diffusers issue #13984)

Layouts (peft, diffusers, merged; kohya keys are fixed):
  transformers-4  keys with text_model. (default): what every SD 1.x/2.x checkpoint on disk
                  has; read by transformers 4 and, except PeftModel.from_pretrained, by 5
  transformers-5  keys without text_model., as transformers 5 saves CLIP: for
                  PeftModel.from_pretrained on transformers 5; transformers 4 drops it

Options:
  -f, --format <format>  ${FORMATS.join(", ")} (repeatable; default peft)
  --layout <layout>      ${EXPORT_LAYOUTS.join(" or ")} (default ${DEFAULT_EXPORT_LAYOUT})
  -o, --out <dir>        Output folder (default <run>/export/<format>; with several formats,
                         one sub-folder per format)
  --model <folder>       The base model, when the run's model folder has moved
  --allow-plugin <spec>  Consent to import the checkpoint's encoder module when it is not
                         inside the run's pipeline folder
  -h, --help             Show this help

Run 'texforce inspect <export>' to see which loaders read an exported file or folder.
`;

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** The checkpoint folder and its run folder, from a checkpoint or a run folder. */
async function locate(path: string): Promise<{ checkpoint: string; run: string }> {
  const abs = resolve(path);
  if (await isFile(join(abs, "state.json"))) return { checkpoint: abs, run: dirname(dirname(abs)) };
  try {
    await Deno.stat(abs);
  } catch {
    throw new InputError(`${abs}: not found (expected a checkpoint folder or a run folder)`);
  }
  const latest = (await latestIntactCheckpoint(
    join(abs, "checkpoints"),
    (line) => console.error(line),
  ).catch(() => null))?.path;
  if (!latest) {
    throw new InputError(
      `${abs}: neither a checkpoint folder (no state.json) nor a run folder with checkpoints/`,
    );
  }
  return { checkpoint: latest, run: abs };
}

async function runPipeline(run: string, model: string | undefined): Promise<Pipeline> {
  const file = join(run, "pipeline.json");
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    throw new InputError(
      `${file}: cannot read the run's pipeline (${(e as Error).message.split("\n")[0]}); ` +
        "export needs it for the model and the encoder settings",
    );
  }
  // pipeline.json is the normalised pipeline; baseDir is not an input key.
  const { baseDir, ...input } = raw;
  if (model) input.model = resolve(model);
  return parsePipeline(input, { file, baseDir: typeof baseDir === "string" ? baseDir : run });
}

/** The LoRA's settings: from the checkpoint, or (older checkpoints) the run's pipeline.json. */
async function loraSettings(
  ckpt: Checkpoint,
  checkpoint: string,
  run: string,
  model: string | undefined,
): Promise<{
  encoder: string;
  options: Record<string, unknown>;
  model: string;
  baseDir: string;
  layout?: Record<string, number[]>;
}> {
  const recorded = ckpt.state.lora;
  const p = ckpt.pipeline as { baseDir?: unknown } | undefined;
  if (recorded) {
    return {
      encoder: recorded.encoder,
      options: recorded.options,
      model: model ? resolve(model) : recorded.model,
      baseDir: typeof p?.baseDir === "string" ? p.baseDir : run,
      layout: recorded.layout,
    };
  }
  console.error(
    `note: ${checkpoint} does not record its LoRA settings (an older checkpoint); ` +
      `reading them from ${join(run, "pipeline.json")}`,
  );
  const pipeline = await runPipeline(run, model);
  return {
    encoder: pipeline.encoder.use,
    options: pipeline.encoder.options,
    model: pipeline.model,
    baseDir: pipeline.baseDir,
  };
}

/**
 * Build the run's encoder, load a checkpoint's trained weights into it and export them;
 * returns the files written per format.
 *
 * @example
 * ```ts
 * import { exportCheckpoint } from "@texforce/core/cli";
 * const files = await exportCheckpoint("runs/demo", ["kohya"], { out: "out/kohya" });
 * ```
 */
export async function exportCheckpoint(
  path: string,
  formats: ExportFormat[],
  options: {
    out?: string;
    model?: string;
    layout?: ExportLayout;
    registry?: PluginRegistry;
    allowPlugins?: string[];
  } = {},
): Promise<Record<string, string[]>> {
  const { checkpoint, run } = await locate(path);
  const ckpt = await loadCheckpoint(checkpoint);
  const lora = await loraSettings(ckpt, checkpoint, run, options.model);
  const registry = options.registry ?? builtinRegistry();
  // The checkpoint names the encoder; a module from outside the run's pipeline folder needs the
  // same consent as in `run`.
  const origin = await pluginOrigin(lora.encoder, lora.baseDir);
  if (
    origin !== "builtin" && origin !== "inside" &&
    !pluginAllowed(lora.encoder, [
      ...(options.allowPlugins ?? []),
      ...await readPluginAllowList(lora.baseDir),
    ])
  ) {
    throw new InputError(
      `${checkpoint}: its encoder '${lora.encoder}' is not inside the pipeline's folder ` +
        `(${lora.baseDir}); importing it runs its code: pass --allow-plugin ${lora.encoder}`,
    );
  }
  const plugin = await registry.resolve("encoder", lora.encoder, lora.baseDir, "encoder.use");
  const opts = parsePluginOptions(plugin, lora.options, `${checkpoint}: lora.options`);
  const encoder = await plugin.create(opts, {
    baseDir: lora.baseDir,
    modelPath: lora.model,
  }) as Encoder;
  try {
    if (!encoder.exportWeights) {
      throw new InputError(`encoder '${lora.encoder}' cannot export its weights`);
    }
    const vars = encoder.trainableVariables();
    if (lora.layout) {
      for (const [name, v] of vars) {
        const want = lora.layout[name];
        if (!want || want.join(",") !== v.shape.join(",")) {
          throw new InputError(
            `${checkpoint}: the rebuilt encoder's '${name}' is [${v.shape}] but the checkpoint ` +
              `was trained as ${want ? `[${want}]` : "without it"} (model ${lora.model})`,
          );
        }
      }
    }
    restoreVariables(vars, ckpt.weights, checkpoint);
    const written: Record<string, string[]> = {};
    for (const format of formats) {
      const dir = options.out
        ? (formats.length > 1 ? join(resolve(options.out), format) : resolve(options.out))
        : join(run, "export", format);
      // The run's own export folder is replaced whole; a folder named with --out may hold
      // other files, so the new files are moved in one by one.
      written[format] = await writeFolderAtomic(
        dir,
        (tmp) =>
          encoder.exportWeights!(tmp, format, { layout: options.layout ?? DEFAULT_EXPORT_LAYOUT }),
        { replace: !options.out },
      );
    }
    return written;
  } finally {
    encoder.dispose();
  }
}

/**
 * Run `texforce export` with its arguments (after `export`); returns the exit code.
 *
 * @example
 * ```ts
 * import { exportCommand } from "@texforce/core/cli";
 * Deno.exitCode = await exportCommand(["runs/demo", "--format", "kohya"]);
 * ```
 */
export async function exportCommand(args: string[]): Promise<number> {
  const cmd = "export";
  try {
    const p = parseCommandArgs(cmd, args, {
      format: { type: "string", multiple: true, short: "f" },
      out: { type: "string", short: "o" },
      model: { type: "string" },
      "allow-plugin": { type: "string", multiple: true },
      layout: { type: "string" },
    });
    if (boolFlag(p, "help")) {
      console.log(EXPORT_HELP.trimEnd());
      return EXIT.ok;
    }
    const [path] = positionals(cmd, p, ["checkpoint"]);
    const formats = listFlag(p, "format").flatMap((f) => f.split(",")).map((f) => f.trim());
    for (const f of formats) {
      if (!(FORMATS as readonly string[]).includes(f)) {
        throw new UsageError(cmd, `--format: expected ${FORMATS.join(", ")}, got '${f}'`);
      }
    }
    const layout = stringFlag(p, "layout") ?? DEFAULT_EXPORT_LAYOUT;
    if (!(EXPORT_LAYOUTS as readonly string[]).includes(layout)) {
      throw new UsageError(
        cmd,
        `--layout: expected ${EXPORT_LAYOUTS.join(" or ")}, got '${layout}'`,
      );
    }
    await useBackend("wasm");
    const written = await exportCheckpoint(
      path,
      (formats.length ? [...new Set(formats)] : ["peft"]) as ExportFormat[],
      {
        out: stringFlag(p, "out"),
        model: stringFlag(p, "model"),
        allowPlugins: listFlag(p, "allow-plugin"),
        layout: layout as ExportLayout,
      },
    );
    for (const [format, files] of Object.entries(written)) {
      console.log(`${format}: ${files.join(", ")}`);
    }
    return EXIT.ok;
  } catch (e) {
    return reportError(e);
  }
}
