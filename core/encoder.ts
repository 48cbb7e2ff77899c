/**
 * The `Encoder` interface: turns prompts into the conditioning the UNet cross-attends to, and
 * owns the trainable parameters (TexForce trains only the text encoder's LoRA).
 *
 * @module
 */
import type { Tensor2D, Tensor3D, Variable } from "./tensor_types.ts";
import type { ExportFormat, ExportLayout } from "./pipeline_schema.ts";

/**
 * Options of {@linkcode Encoder.exportWeights}.
 *
 * @example
 * ```ts
 * import type { ExportOptions } from "@texforce/core";
 * const o: ExportOptions = { layout: "transformers-5" };
 * ```
 */
export interface ExportOptions {
  /** Key layout (default `transformers-4`: keys with `text_model.`). */
  layout?: ExportLayout;
}

/**
 * A text encoder whose output conditions the diffusion model.
 *
 * All tensors returned are owned by the caller (dispose them or call inside `tf.tidy`).
 * `encode` must be differentiable with respect to `trainableVariables()` so the trainer can call
 * it inside `tf.variableGrads`.
 *
 * @example
 * ```ts
 * import type { Encoder } from "@texforce/core";
 * declare const encoder: Encoder;
 * const hidden = encoder.encode(["a photo of a cat", ""]); // [2, 77, D]
 * ```
 */
export interface Encoder {
  /** Plugin name that built it, e.g. `clip-lora`. */
  readonly name: string;
  /** Width D of the hidden states. */
  readonly hiddenSize: number;
  /** Sequence length L of the hidden states (77 for CLIP). */
  readonly maxLength: number;
  /** Token ids [B, L] of prompts (padded and truncated). */
  tokenize(prompts: string[]): Tensor2D;
  /** Conditioning hidden states [B, L, D] for token ids. */
  encodeIds(ids: Tensor2D): Tensor3D;
  /** Conditioning hidden states [B, L, D] for prompts (tokenize + encodeIds). */
  encode(prompts: string[]): Tensor3D;
  /** The trainable variables by stable name (PEFT names for the CLIP LoRA encoder). */
  trainableVariables(): Map<string, Variable>;
  /**
   * Write the trained weights in a format other tools load (`peft`, `diffusers`, `kohya`, or
   * `merged` for a full text encoder) under `dir`; returns the files written. Optional: an
   * encoder without it is not exported at the end of a run.
   */
  exportWeights?(
    dir: string,
    format: ExportFormat,
    options?: ExportOptions,
  ): Promise<string[]>;
  /** Release all weights. */
  dispose(): void;
}
