/**
 * Which loader call of which tool reads each texforce export, as measured by the
 * interoperability check (`deno task interop`, `tests/interop/`), with the upstream bugs that
 * stop the others. `texforce inspect`, `texforce export --help` and the README print this table;
 * the interop check asserts that every cell still behaves as written here.
 *
 * @module
 */
import type { ExportFormat, ExportLayout } from "../../core/pipeline_schema.ts";

/** An export format (a LoRA format or the merged text encoder). */
export type LoraExportFormat = ExportFormat;

/** The Python loader calls the interop check tries. */
export type LoaderCall =
  | "CLIPTextModel.from_pretrained"
  | "PeftModel.from_pretrained"
  | "pipe.text_encoder.load_adapter"
  | "pipe.load_lora_weights";

/** Library versions of a Python stack (`diffusers` null when absent). */
export interface InteropStackInfo {
  /** transformers version, e.g. `4.57.6`. */
  transformers: string;
  /** peft version. */
  peft: string;
  /** diffusers version, or null. */
  diffusers: string | null;
}

/** Whether a call reads an export at the trained strength on a stack, and why not. */
export interface LoaderVerdict {
  /** Loads without key warnings, at the trained strength. */
  reads: boolean;
  /** Why not (a wrong call for the format, the other layout, an upstream bug). */
  reason?: string;
}

/** A way to load an export, for help and `inspect`. */
export interface LoaderUse {
  /** The tool. */
  tool: string;
  /** The call (Python) or the action (UIs). */
  call: string;
  /** Where it works. */
  works: string;
  /** A caveat (an upstream bug), if any. */
  caveat?: string;
}

function major(version: string): number {
  return Number(version.split(".")[0]);
}

/** diffusers issue #13984: on transformers 5, kohya text-encoder LoRA raise IndexError. */
export const KOHYA_TRANSFORMERS5_BUG: string =
  "diffusers on transformers 5 raises IndexError in peft_utils.py on kohya text-encoder files " +
  "(diffusers issue #13984)";

/**
 * Whether `call` reads an export of `format` in `layout` (null: kohya) on `stack`, as the
 * interop check measured it (transformers 4.57.6 and 5.18.0, peft 0.21.0, diffusers 0.33.1,
 * 0.39.0 and 0.40.dev):
 *
 * - merged: `CLIPTextModel.from_pretrained` reads the transformers-4 layout on both majors, the
 *   transformers-5 layout only on transformers 5 (4.x initialises the encoder randomly);
 * - peft: `PeftModel.from_pretrained` reads only the layout of the running major ("Found
 *   missing adapter keys" otherwise); `text_encoder.load_adapter` reads the transformers-4
 *   layout on both majors; `pipe.load_lora_weights` reads neither;
 * - diffusers: `pipe.load_lora_weights` reads the transformers-4 layout everywhere, the
 *   transformers-5 layout only on transformers 5;
 * - kohya: `pipe.load_lora_weights` on transformers 4; on 5 diffusers crashes (#13984).
 *
 * @example
 * ```ts
 * import { loaderVerdict } from "@texforce/core/adapters";
 * loaderVerdict("peft", "transformers-4", "PeftModel.from_pretrained", {
 *   transformers: "4.57.6", peft: "0.21.0", diffusers: null,
 * }); // { reads: true }
 * ```
 */
export function loaderVerdict(
  format: LoraExportFormat,
  layout: ExportLayout | null,
  call: LoaderCall,
  stack: InteropStackInfo,
): LoaderVerdict {
  const tf5 = major(stack.transformers) >= 5;
  const running = tf5 ? "transformers-5" : "transformers-4";
  const wrongLayout: LoaderVerdict = {
    reads: false,
    reason: `${layout} keys on ${running.replace("-", " ")}: export with --layout ${running}`,
  };
  const notALoader: LoaderVerdict = { reads: false, reason: `${call} does not read ${format}` };
  switch (format) {
    case "merged":
      if (call !== "CLIPTextModel.from_pretrained") return notALoader;
      return layout === "transformers-5" && !tf5 ? wrongLayout : { reads: true };
    case "peft":
      if (call === "pipe.load_lora_weights") {
        return {
          reads: false,
          reason: "load_lora_weights finds no text-encoder keys in a PEFT folder",
        };
      }
      if (call === "PeftModel.from_pretrained") {
        return layout === running ? { reads: true } : wrongLayout;
      }
      if (call === "pipe.text_encoder.load_adapter") {
        return layout === "transformers-5" && !tf5 ? wrongLayout : { reads: true };
      }
      return notALoader;
    case "diffusers":
      if (call !== "pipe.load_lora_weights") return notALoader;
      return layout === "transformers-5" && !tf5 ? wrongLayout : { reads: true };
    case "kohya":
      if (call !== "pipe.load_lora_weights") return notALoader;
      return tf5 ? { reads: false, reason: KOHYA_TRANSFORMERS5_BUG } : { reads: true };
  }
}

/**
 * How to load an export of `format` in `layout` (null for kohya), for `inspect` and help: the
 * same facts as {@linkcode loaderVerdict}.
 *
 * @example
 * ```ts
 * import { loraLoaders } from "@texforce/core/adapters";
 * for (const l of loraLoaders("peft", "transformers-4")) console.log(l.call, "-", l.works);
 * ```
 */
export function loraLoaders(format: LoraExportFormat, layout: ExportLayout | null): LoaderUse[] {
  const t5 = layout === "transformers-5";
  switch (format) {
    case "merged":
      return [{
        tool: "transformers",
        call: "CLIPTextModel.from_pretrained(dir), then " +
          "StableDiffusionPipeline.from_pretrained(model, text_encoder=text_encoder)",
        works: t5 ? "transformers 5 only" : "transformers 4 and 5",
        caveat: t5
          ? "transformers 4 loads these keys as a randomly initialised encoder"
          : undefined,
      }];
    case "peft":
      return [
        {
          tool: "peft",
          call: "PeftModel.from_pretrained(CLIPTextModel.from_pretrained(model, " +
            'subfolder="text_encoder"), dir)',
          works: t5 ? "transformers 5 only" : "transformers 4 only",
          caveat: 'the other transformers major drops the LoRA with "Found missing adapter ' +
            `keys\": export with --layout ${t5 ? "transformers-4" : "transformers-5"} for it`,
        },
        {
          tool: "diffusers / transformers",
          call: "pipe.text_encoder.load_adapter(dir)",
          works: t5 ? "transformers 5 only" : "transformers 4 and 5",
          caveat: "not pipe.load_lora_weights(dir): it finds no text-encoder keys in a PEFT folder",
        },
      ];
    case "diffusers":
      return [{
        tool: "diffusers",
        call: "pipe.load_lora_weights(file)",
        works: (t5 ? "transformers 5 only" : "transformers 4 and 5") +
          "; every diffusers version at the trained strength when lora_alpha = r (texforce " +
          "folds alpha/r into the up matrices: diffusers before 0.34 ignores " +
          "lora_adapter_metadata)",
      }];
    case "kohya":
      return [
        {
          tool: "AUTOMATIC1111 / Forge",
          call: "copy to models/Lora/, prompt <lora:NAME:1>",
          works: "SD 1.x/2.x (float alpha, ss_* metadata)",
        },
        { tool: "ComfyUI", call: "copy to models/loras/, LoraLoader node", works: "SD 1.x/2.x" },
        {
          tool: "diffusers",
          call: "pipe.load_lora_weights(file)",
          works: "transformers 4 only",
          caveat: KOHYA_TRANSFORMERS5_BUG,
        },
      ];
  }
}
