// `texforce inspect` on an export: a LoRA file or folder, or a merged text encoder. Says what it
// is (format, key layout, rank, alpha, scale) and which loader calls read it.
import { basename, join } from "node:path";
import { SafetensorsFile } from "../core/io/safetensors.ts";
import { openWeights } from "../core/io/weights.ts";
import { pathExists } from "../core/io/path_exists.ts";
import { clipTextKeyPrefix } from "../adapters/clip/clip_text_model.ts";
import { detectLoraFormat, type LoraFormat, readLora } from "../adapters/lora/lora_formats.ts";
import { type LoaderUse, loraLoaders } from "../adapters/lora/lora_loaders.ts";
import type { ExportLayout } from "../core/pipeline_schema.ts";

/** What `texforce inspect` reports about an exported LoRA or merged text encoder. */
export interface ExportSummary {
  /** The file or folder inspected. */
  path: string;
  /** `peft`, `diffusers`, `kohya` or `merged`. */
  format: LoraFormat | "merged";
  /** Key layout; null for kohya (its own `lora_te_…` keys). */
  layout: ExportLayout | null;
  /** LoRA rank, alpha and scale (absent for a merged encoder). */
  lora?: {
    rank: number;
    alpha: number;
    scale: number;
    modules: number;
    targets: string[];
    /** Keys of other models (e.g. UNet) in the file, skipped. */
    ignoredKeys: number;
  };
  /** Loader calls that read it. */
  loaders: LoaderUse[];
  /** Problems a user should know of (e.g. a scale older diffusers would not read). */
  warnings: string[];
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

const LORA_FILES = [
  "adapter_model.safetensors",
  "pytorch_lora_weights.safetensors",
  "texforce_lora.safetensors",
];

/** Whether `path` looks like an export rather than a diffusers model folder. */
export async function isExportPath(path: string): Promise<boolean> {
  if (path.endsWith(".safetensors")) return true;
  if (!(await isDir(path)) || await pathExists(join(path, "model_index.json"))) return false;
  for (const f of [...LORA_FILES, "adapter_config.json", "config.json"]) {
    if (await pathExists(join(path, f))) return true;
  }
  return false;
}

/** The LoRA file a folder holds (texforce's kohya export is a folder with one file). */
async function loraFile(path: string): Promise<string | null> {
  if (!(await isDir(path))) return path;
  for (const f of LORA_FILES) if (await pathExists(join(path, f))) return join(path, f);
  return null;
}

/** diffusers' own alpha in `lora_adapter_metadata`, if the file has one. */
function diffusersMetadataAlpha(meta: Record<string, string>): number | null {
  try {
    const v = JSON.parse(meta.lora_adapter_metadata ?? "null")?.["text_encoder.lora_alpha"];
    return typeof v === "number" ? v : null;
  } catch {
    return null;
  }
}

/**
 * Describe an exported LoRA (PEFT folder, diffusers or kohya file, or the folder holding it) or
 * a merged text encoder folder.
 *
 * @example
 * ```ts
 * import { inspectExport } from "./_inspect_lora.ts";
 * const s = await inspectExport("runs/demo/export/diffusers");
 * console.log(s.format, s.layout, s.loaders.map((l) => l.call));
 * ```
 */
export async function inspectExport(path: string): Promise<ExportSummary> {
  const file = await loraFile(path);
  if (file === null) {
    // A merged text encoder: config.json + model.safetensors.
    const weights = await openWeights(path, { names: ["model"] });
    let prefix: string;
    try {
      prefix = clipTextKeyPrefix(weights);
    } finally {
      weights.close();
    }
    const layout: ExportLayout = prefix ? "transformers-4" : "transformers-5";
    return {
      path,
      format: "merged",
      layout,
      loaders: loraLoaders("merged", layout),
      warnings: layout === "transformers-5"
        ? [
          "keys without text_model.: transformers 4 loads this as a randomly initialised " +
          "encoder (re-export with --layout transformers-4 for it)",
        ]
        : [],
    };
  }
  const source = await SafetensorsFile.open(file);
  let format: LoraFormat;
  let metadata: Record<string, string>;
  try {
    format = detectLoraFormat(source.keys(), file);
    metadata = source.metadata;
  } finally {
    source.close();
  }
  const w = await readLora(format === "peft" && basename(file) === LORA_FILES[0] ? path : file);
  const layout: ExportLayout | null = format === "kohya"
    ? null
    : w.textModelPrefix === false
    ? "transformers-5"
    : "transformers-4";
  const warnings: string[] = [];
  const scale = w.useRslora ? w.alpha / Math.sqrt(w.rank) : w.alpha / w.rank;
  if (format === "diffusers") {
    const alpha = diffusersMetadataAlpha(metadata);
    if (alpha !== null && alpha !== w.rank) {
      warnings.push(
        `alpha ${alpha} is only in lora_adapter_metadata: diffusers before 0.34 ignores it and ` +
          `loads this at scale 1 instead of ${scale} (texforce exports fold the scale in)`,
      );
    }
  }
  if (format === "kohya" && w.textModelPrefix === false) {
    warnings.push(
      "kohya keys without text_model_: AUTOMATIC1111 and ComfyUI expect " +
        "lora_te_text_model_encoder_…",
    );
  }
  const targets = [
    ...new Set([...w.modules.keys()].map((m) => m.slice(m.lastIndexOf(".") + 1))),
  ].sort();
  return {
    path,
    format,
    layout,
    lora: {
      rank: w.rank,
      alpha: w.alpha,
      scale,
      modules: w.modules.size,
      targets,
      ignoredKeys: w.ignoredKeys.length,
    },
    loaders: loraLoaders(format, layout),
    warnings,
  };
}

/**
 * The text `texforce inspect` prints for an export.
 *
 * @example
 * ```ts
 * import { formatExportSummary, inspectExport } from "./_inspect_lora.ts";
 * console.log(formatExportSummary(await inspectExport("runs/demo/export/kohya")));
 * ```
 */
export function formatExportSummary(s: ExportSummary): string {
  const layout = s.layout === null
    ? "kohya keys (lora_te_text_model_…)"
    : s.layout === "transformers-4"
    ? "transformers-4 (keys with text_model.)"
    : "transformers-5 (keys without text_model.)";
  const lines = [
    s.path,
    `  format: ${s.format === "merged" ? "merged text encoder (CLIPTextModel)" : s.format}`,
    `  layout: ${layout}`,
  ];
  if (s.lora) {
    const l = s.lora;
    lines.push(
      `  lora: rank ${l.rank}, alpha ${l.alpha} (scale ${+l.scale.toPrecision(6)}), ${l.modules} ` +
        `modules (${l.targets.join(" ")})` +
        (l.ignoredKeys ? `, ${l.ignoredKeys} keys of other models skipped` : ""),
    );
  }
  lines.push("  loads with:");
  for (const u of s.loaders) {
    lines.push(`    ${u.tool}: ${u.call}`);
    lines.push(`      works: ${u.works}`);
    if (u.caveat) lines.push(`      note: ${u.caveat}`);
  }
  for (const w of s.warnings) lines.push(`  warning: ${w}`);
  return lines.join("\n");
}
