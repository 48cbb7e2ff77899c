// Reading the fields that CLIP's text and vision tower configs share, with errors naming the
// file and key.
import type { ClipActivation } from "./clip_text_model.ts";

const ACTIVATIONS: readonly ClipActivation[] = [
  "quick_gelu",
  "gelu",
  "gelu_new",
  "gelu_pytorch_tanh",
  "relu",
];

/** Typed getters over one tower's config object (`text_config`, `vision_config` or the root). */
export interface ClipConfigFields {
  /** A positive integer field, or its default. */
  int(key: string, fallback: number): number;
  /** `hidden_act`, checked against the supported activations. */
  activation(): ClipActivation;
  /** `layer_norm_eps`, a positive number (default 1e-5). */
  layerNormEps(): number;
}

/** Getters over `json[section]` when present, else `json` itself; `file` names errors. */
export function clipConfigFields(
  json: Record<string, unknown>,
  section: "text_config" | "vision_config",
  file: string,
): ClipConfigFields {
  const nested = json[section];
  const src = (nested && typeof nested === "object" ? nested : json) as Record<string, unknown>;
  return {
    int(key, fallback) {
      const v = src[key] ?? fallback;
      if (!Number.isInteger(v) || (v as number) < 1) {
        throw new Error(`${file}: '${key}' must be a positive integer, got ${JSON.stringify(v)}`);
      }
      return v as number;
    },
    activation() {
      const act = String(src.hidden_act ?? "quick_gelu");
      if (!ACTIVATIONS.includes(act as ClipActivation)) {
        throw new Error(
          `${file}: 'hidden_act' ${JSON.stringify(act)} is not supported (expected one of ` +
            `${ACTIVATIONS.join(", ")})`,
        );
      }
      return act as ClipActivation;
    },
    layerNormEps() {
      const eps = src.layer_norm_eps ?? 1e-5;
      if (typeof eps !== "number" || !(eps > 0)) {
        throw new Error(`${file}: 'layer_norm_eps' must be a positive number`);
      }
      return eps;
    },
  };
}
