// Key layouts of LoRA files, for the CLIP text encoder and the UNet: PEFT, diffusers and kohya
// (A1111/ComfyUI). Each parser maps a file key to a module path
// (`encoder.layers.0.self_attn.q_proj`, `down_blocks.0.attentions.0.….attn1.to_q`) and a part.

/** The part of a LoRA a key holds. */
export type LoraPart = "down" | "up" | "alpha";

/** A parsed key. */
export interface ParsedLoraKey {
  /** Module path without `text_model.`. */
  module: string;
  /** A (`down`), B (`up`) or the alpha scalar. */
  part: LoraPart;
  /** Whether the key had `text_model.` (or kohya's `text_model_`). */
  textModelPrefix: boolean;
}

const MODULE = String.raw`encoder\.layers\.\d+\.(?:self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])`;

const PEFT_RE = new RegExp(
  String
    .raw`^base_model\.model\.(text_model\.)?(${MODULE})\.lora_([AB])(?:\.[A-Za-z0-9_-]+)?\.weight$`,
);

/** `base_model.model.[text_model.]<module>.lora_{A,B}[.<adapter>].weight`. */
export function parsePeftKey(key: string): ParsedLoraKey | null {
  const m = PEFT_RE.exec(key);
  if (!m) return null;
  return { module: m[2], part: m[3] === "A" ? "down" : "up", textModelPrefix: Boolean(m[1]) };
}

const DIFFUSERS_RE = new RegExp(
  String.raw`^text_encoder\.(?:base_model\.model\.)?(text_model\.)?(${MODULE})\.` +
    String.raw`(?:lora_linear_layer\.(down|up)\.weight|lora_([AB])\.weight|(alpha))$`,
);
// The oldest diffusers attention-processor layout: `…self_attn.to_q_lora.down.weight`.
const DIFFUSERS_OLD_RE = new RegExp(
  String
    .raw`^text_encoder\.(text_model\.)?(encoder\.layers\.\d+\.self_attn)\.to_(q|k|v|out)_lora\.(down|up)\.weight$`,
);

/** `text_encoder.[base_model.model.][text_model.]<module>.lora_linear_layer.{down,up}.weight`. */
export function parseDiffusersKey(key: string): ParsedLoraKey | null {
  const m = DIFFUSERS_RE.exec(key);
  if (m) {
    const part: LoraPart = m[5]
      ? "alpha"
      : m[3]
      ? (m[3] as LoraPart)
      : m[4] === "A"
      ? "down"
      : "up";
    return { module: m[2], part, textModelPrefix: Boolean(m[1]) };
  }
  const o = DIFFUSERS_OLD_RE.exec(key);
  if (o) {
    return {
      module: `${o[2]}.${o[3]}_proj`,
      part: o[4] as LoraPart,
      textModelPrefix: Boolean(o[1]),
    };
  }
  return null;
}

const KOHYA_RE =
  /^lora_te1?_(text_model_)?encoder_layers_(\d+)_(self_attn_(?:q|k|v|out)_proj|mlp_fc[12])\.(lora_down\.weight|lora_up\.weight|alpha)$/;

/** `lora_te[1]_[text_model_]encoder_layers_<i>_self_attn_q_proj.{lora_down.weight,lora_up.weight,alpha}`. */
export function parseKohyaKey(key: string): ParsedLoraKey | null {
  const m = KOHYA_RE.exec(key);
  if (!m) return null;
  const sub = m[3].startsWith("self_attn_")
    ? `self_attn.${m[3].slice("self_attn_".length)}`
    : `mlp.${m[3].slice("mlp_".length)}`;
  const part: LoraPart = m[4] === "alpha" ? "alpha" : m[4].startsWith("lora_down") ? "down" : "up";
  return { module: `encoder.layers.${m[2]}.${sub}`, part, textModelPrefix: Boolean(m[1]) };
}

/** Keys that belong to another model of the pipeline (UNet, SDXL's second encoder): skipped. */
export function isOtherModelKey(key: string): boolean {
  return /^(unet\.|lora_unet_|lora_te2_|text_encoder_2\.|transformer\.)/.test(key);
}

/** Kohya key stem of a module: `lora_te_text_model_encoder_layers_0_self_attn_q_proj`. */
export function kohyaStem(module: string, textModelPrefix = true): string {
  return `lora_te_${textModelPrefix ? "text_model_" : ""}${module.replaceAll(".", "_")}`;
}

// ---------------------------------------------------------------------------------------------
// UNet keys.

const TE_PREFIX = /^(text_encoder(_2)?\.|lora_te\d?_)/;

/** Whether a key belongs to a text encoder (skipped when a UNet LoRA is read). */
export function isTextEncoderKey(key: string): boolean {
  return TE_PREFIX.test(key);
}

/** A parsed UNet key. */
export interface ParsedUNetKey {
  /** Module path (diffusers dots), or the kohya name with underscores when `kohya` is set. */
  module: string;
  /** Whether `module` is a kohya flat name. */
  kohya: boolean;
  /** A (`down`), B (`up`) or the alpha scalar. */
  part: LoraPart;
}

/**
 * A UNet key of any layout: kohya `lora_unet_<flat>.{lora_down,lora_up}.weight` / `.alpha`,
 * the diffusers attention processor's `….processor.to_q_lora.down.weight`, PEFT
 * `….lora_{A,B}[.<adapter>].weight`, diffusers `….{lora,lora_linear_layer}.{down,up}.weight`,
 * each with an optional `base_model.model.` / `unet.` prefix.
 */
export function parseUNetKey(key: string): ParsedUNetKey | null {
  let k = key;
  if (k.startsWith("base_model.model.")) k = k.slice("base_model.model.".length);
  if (k.startsWith("unet.")) k = k.slice(5);
  let m = /^lora_unet_(.+)\.(lora_down|lora_up)\.weight$/.exec(k);
  if (m) return { module: m[1], kohya: true, part: m[2] === "lora_down" ? "down" : "up" };
  m = /^lora_unet_(.+)\.alpha$/.exec(k);
  if (m) return { module: m[1], kohya: true, part: "alpha" };
  m = /^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/.exec(k);
  if (m) {
    const proj = m[2] === "to_out" ? "to_out.0" : m[2];
    return { module: `${m[1]}.${proj}`, kohya: false, part: m[3] as "down" | "up" };
  }
  m = /^(.+)\.lora_(A|B)(?:\.[A-Za-z0-9_]+)?\.weight$/.exec(k);
  if (m) return { module: m[1], kohya: false, part: m[2] === "A" ? "down" : "up" };
  m = /^(.+)\.(?:lora|lora_linear_layer)\.(down|up)\.weight$/.exec(k);
  if (m) return { module: m[1], kohya: false, part: m[2] as "down" | "up" };
  m = /^(.+)\.alpha$/.exec(k);
  if (m) return { module: m[1], kohya: false, part: "alpha" };
  return null;
}
