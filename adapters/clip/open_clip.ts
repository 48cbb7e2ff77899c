/**
 * open_clip CLIP checkpoints (HPSv2's ViT-H-14 and any open_clip `CLIP.state_dict()`) on the
 * project's CLIP towers: the model config (`ViT-H-14.json` format) becomes a
 * {@linkcode ClipVisionConfig} and {@linkcode ClipTextConfig}, and {@linkcode OpenClipWeights}
 * presents the open_clip keys under transformers' `CLIPModel` names — packed `in_proj_weight`
 * split into q/k/v rows, `visual.proj` and `text_projection` (applied as `x @ P`) transposed into
 * Linear layout — so {@linkcode ClipModel.fromSource} loads it unchanged.
 *
 * @module
 */
import type { HostTensor, TensorInfo, WeightSource } from "../../core/io/safetensors.ts";
import { openWeights } from "../../core/io/weights.ts";
import { readJsonFile } from "../../core/io/model_folder.ts";
import type { ClipTextConfig } from "./clip_text_model.ts";
import { ClipModel, type ClipVisionConfig } from "./clip_vision_model.ts";

/** Both towers' configs and the joint embedding width of an open_clip model config. */
export interface OpenClipConfig {
  /** The image tower. */
  vision: ClipVisionConfig;
  /** The text tower. */
  text: ClipTextConfig;
  /** `embed_dim`: width of the joint embedding (1024 in ViT-H-14). */
  embedDim: number;
}

/**
 * Read an open_clip model config (`embed_dim`, `vision_cfg`, `text_cfg`, optional
 * `quick_gelu`). open_clip's defaults fill absent fields: `head_width` 64, vision `mlp_ratio`
 * 4, text heads 8, context 77, vocab 49408, LayerNorm eps 1e-5; the text MLP is always 4 × width.
 *
 * @example
 * ```ts
 * import { parseOpenClipConfig } from "@texforce/core/adapters";
 * const c = parseOpenClipConfig({
 *   embed_dim: 1024,
 *   vision_cfg: { image_size: 224, layers: 32, width: 1280, head_width: 80, patch_size: 14 },
 *   text_cfg: { context_length: 77, vocab_size: 49408, width: 1024, heads: 16, layers: 24 },
 * }, "ViT-H-14.json");
 * console.log(c.vision.numAttentionHeads); // 16
 * ```
 */
export function parseOpenClipConfig(json: Record<string, unknown>, file: string): OpenClipConfig {
  const section = (name: string): Record<string, unknown> => {
    const v = json[name];
    if (!v || typeof v !== "object" || Array.isArray(v)) {
      throw new Error(`${file}: '${name}' must be an object (an open_clip model config)`);
    }
    return v as Record<string, unknown>;
  };
  const num = (src: Record<string, unknown>, where: string, key: string, fallback?: number) => {
    const v = src[key] ?? fallback;
    if (typeof v !== "number" || !(v > 0)) {
      throw new Error(
        `${file}: '${where}${key}' must be a positive number, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
  const int = (src: Record<string, unknown>, where: string, key: string, fallback?: number) => {
    const v = num(src, where, key, fallback);
    if (!Number.isInteger(v)) throw new Error(`${file}: '${where}${key}' must be an integer`);
    return v;
  };
  const vc = section("vision_cfg");
  const tc = section("text_cfg");
  for (const [cfg, where] of [[vc, "vision_cfg."], [tc, "text_cfg."]] as const) {
    for (const unsupported of ["timm_model_name", "hf_model_name", "attentional_pool"]) {
      if (cfg[unsupported]) {
        throw new Error(
          `${file}: '${where}${unsupported}' is not supported (plain ViT towers only)`,
        );
      }
    }
  }
  const act = json.quick_gelu === true ? "quick_gelu" : "gelu";
  const eps = 1e-5;
  const vWidth = int(vc, "vision_cfg.", "width", 768);
  const headWidth = int(vc, "vision_cfg.", "head_width", 64);
  if (vWidth % headWidth !== 0) {
    throw new Error(
      `${file}: vision_cfg.width ${vWidth} is not a multiple of head_width ${headWidth}`,
    );
  }
  const mlpRatio = num(vc, "vision_cfg.", "mlp_ratio", 4);
  const vision: ClipVisionConfig = {
    hiddenSize: vWidth,
    intermediateSize: Math.trunc(vWidth * mlpRatio),
    numHiddenLayers: int(vc, "vision_cfg.", "layers", 12),
    numAttentionHeads: vWidth / headWidth,
    imageSize: int(vc, "vision_cfg.", "image_size", 224),
    patchSize: int(vc, "vision_cfg.", "patch_size", 16),
    numChannels: 3,
    hiddenAct: act,
    layerNormEps: eps,
  };
  if (vision.imageSize % vision.patchSize !== 0) {
    throw new Error(
      `${file}: vision_cfg.image_size ${vision.imageSize} is not a multiple of patch_size ` +
        `${vision.patchSize}`,
    );
  }
  const tWidth = int(tc, "text_cfg.", "width", 512);
  const heads = int(tc, "text_cfg.", "heads", 8);
  if (tWidth % heads !== 0) {
    throw new Error(`${file}: text_cfg.width ${tWidth} is not divisible by heads ${heads}`);
  }
  const text: ClipTextConfig = {
    vocabSize: int(tc, "text_cfg.", "vocab_size", 49408),
    hiddenSize: tWidth,
    intermediateSize: tWidth * 4,
    numHiddenLayers: int(tc, "text_cfg.", "layers", 12),
    numAttentionHeads: heads,
    maxPositionEmbeddings: int(tc, "text_cfg.", "context_length", 77),
    hiddenAct: act,
    layerNormEps: eps,
    // open_clip pools at text.argmax(-1): ClipTextModel's legacy rule for eos id 2.
    eosTokenId: 2,
  };
  return { vision, text, embedDim: int(json, "", "embed_dim") };
}

// open_clip's name of a layer weight that has no mapping yet (a layer the file lacks), for errors.
const LAYER_NAMES: [RegExp, string][] = [
  [/^vision_model\.encoder\.layers\./, "visual.transformer.resblocks."],
  [/^text_model\.encoder\.layers\./, "transformer.resblocks."],
  [/\.layer_norm1\./, ".ln_1."],
  [/\.layer_norm2\./, ".ln_2."],
  [/\.self_attn\.[qkv]_proj\.weight$/, ".attn.in_proj_weight"],
  [/\.self_attn\.[qkv]_proj\.bias$/, ".attn.in_proj_bias"],
  [/\.self_attn\.out_proj\./, ".attn.out_proj."],
  [/\.mlp\.fc1\./, ".mlp.c_fc."],
  [/\.mlp\.fc2\./, ".mlp.c_proj."],
];

function openClipName(name: string): string {
  if (!/encoder\.layers\./.test(name)) return name;
  return LAYER_NAMES.reduce((n, [re, to]) => n.replace(re, to), name);
}

type Mapping =
  | { from: string; kind: "same" }
  | { from: string; kind: "transpose" }
  | { from: string; kind: "rows"; part: number };

/**
 * An open_clip state dict seen through transformers' `CLIPModel` key names (read lazily; the
 * inner source stays owned by this object and is closed with it).
 *
 * @example
 * ```ts
 * import { openWeights } from "@texforce/core";
 * import { OpenClipWeights } from "@texforce/core/adapters";
 * const w = new OpenClipWeights(await openWeights("hpsv2/model.safetensors"));
 * console.log(w.has("vision_model.encoder.layers.0.self_attn.q_proj.weight"));
 * w.close();
 * ```
 */
export class OpenClipWeights implements WeightSource {
  /** The open_clip file. */
  readonly path: string;
  #inner: WeightSource;
  #map = new Map<string, Mapping>();

  /** Wrap an open_clip source; throws naming the file when it is not open_clip CLIP weights. */
  constructor(inner: WeightSource) {
    this.#inner = inner;
    this.path = inner.path;
    for (const k of ["visual.conv1.weight", "token_embedding.weight"]) {
      if (!inner.has(k)) {
        const sample = inner.keys().slice(0, 3).map((x) => `'${x}'`).join(", ");
        throw new Error(
          `${inner.path}: not an open_clip CLIP state dict: no '${k}' (keys start with ` +
            `${sample || "nothing"}; for a .pt checkpoint convert its ['state_dict'] first)`,
        );
      }
    }
    const same = (to: string, from: string) => this.#map.set(to, { from, kind: "same" });
    same("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight");
    same("vision_model.embeddings.class_embedding", "visual.class_embedding");
    same("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding");
    this.#norm("vision_model.pre_layrnorm", "visual.ln_pre");
    this.#norm("vision_model.post_layernorm", "visual.ln_post");
    this.#map.set("visual_projection.weight", { from: "visual.proj", kind: "transpose" });
    same("text_model.embeddings.token_embedding.weight", "token_embedding.weight");
    same("text_model.embeddings.position_embedding.weight", "positional_embedding");
    this.#norm("text_model.final_layer_norm", "ln_final");
    this.#map.set("text_projection.weight", { from: "text_projection", kind: "transpose" });
    same("logit_scale", "logit_scale");
    for (
      const [to, from] of [["vision_model", "visual.transformer"], ["text_model", "transformer"]]
    ) {
      for (let i = 0; inner.has(`${from}.resblocks.${i}.ln_1.weight`); i++) {
        const t = `${to}.encoder.layers.${i}`;
        const f = `${from}.resblocks.${i}`;
        this.#norm(`${t}.layer_norm1`, `${f}.ln_1`);
        this.#norm(`${t}.layer_norm2`, `${f}.ln_2`);
        ["q_proj", "k_proj", "v_proj"].forEach((n, part) => {
          this.#map.set(`${t}.self_attn.${n}.weight`, {
            from: `${f}.attn.in_proj_weight`,
            kind: "rows",
            part,
          });
          this.#map.set(`${t}.self_attn.${n}.bias`, {
            from: `${f}.attn.in_proj_bias`,
            kind: "rows",
            part,
          });
        });
        this.#linear(`${t}.self_attn.out_proj`, `${f}.attn.out_proj`);
        this.#linear(`${t}.mlp.fc1`, `${f}.mlp.c_fc`);
        this.#linear(`${t}.mlp.fc2`, `${f}.mlp.c_proj`);
      }
    }
  }

  #norm(to: string, from: string): void {
    this.#linear(to, from);
  }

  #linear(to: string, from: string): void {
    this.#map.set(`${to}.weight`, { from: `${from}.weight`, kind: "same" });
    this.#map.set(`${to}.bias`, { from: `${from}.bias`, kind: "same" });
  }

  keys(): string[] {
    return [...this.#map.keys()].filter((k) => this.has(k));
  }

  has(name: string): boolean {
    const m = this.#map.get(name);
    return m !== undefined && this.#inner.has(m.from);
  }

  info(name: string): TensorInfo {
    const m = this.#mapping(name);
    const info = this.#inner.info(m.from);
    const shape = info.shape;
    if (m.kind === "transpose") {
      if (shape.length !== 2) {
        throw new Error(
          `${this.path}: '${m.from}' has shape ${JSON.stringify(shape)}, expected 2-D`,
        );
      }
      return { ...info, shape: [shape[1], shape[0]] };
    }
    if (m.kind === "rows") {
      if (shape[0] % 3 !== 0) {
        throw new Error(
          `${this.path}: '${m.from}' has shape ${JSON.stringify(shape)}: its first dimension ` +
            "must be 3 × width (rows q | k | v)",
        );
      }
      return { ...info, shape: [shape[0] / 3, ...shape.slice(1)] };
    }
    return info;
  }

  async read(name: string): Promise<HostTensor> {
    const m = this.#mapping(name);
    const t = await this.#inner.read(m.from);
    const data = t.data as Float32Array;
    if (m.kind === "same") return t;
    if (m.kind === "transpose") {
      const [r, c] = t.shape;
      const out = new Float32Array(r * c);
      for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = data[i * c + j];
      return { ...t, data: out, shape: [c, r] };
    }
    const rows = t.shape[0] / 3;
    const per = data.length / 3;
    return {
      ...t,
      data: data.slice(m.part * per, (m.part + 1) * per),
      shape: [rows, ...t.shape.slice(1)],
    };
  }

  #mapping(name: string): Mapping {
    const m = this.#map.get(name);
    if (!m || !this.#inner.has(m.from)) {
      throw new Error(
        `${this.path}: missing weight '${m?.from ?? openClipName(name)}' (open_clip layout, ` +
          `read as '${name}')`,
      );
    }
    return m;
  }

  close(): void {
    this.#inner.close();
  }
}

/**
 * Load an open_clip CLIP from its state dict (safetensors) and model config (a
 * `ViT-H-14.json`-style file, or its parsed JSON) as a {@linkcode ClipModel}; checks that the weights hold no more layers than the config.
 *
 * @example
 * ```ts
 * import { loadOpenClip } from "@texforce/core/adapters";
 * const clip = await loadOpenClip("hpsv2/HPS_v2_compressed.safetensors", "hpsv2/ViT-H-14.json");
 * console.log(clip.projectionDim); // 1024
 * ```
 */
export async function loadOpenClip(
  weights: string,
  modelConfig: string | Record<string, unknown>,
): Promise<{ clip: ClipModel; config: OpenClipConfig }> {
  const configPath = typeof modelConfig === "string" ? modelConfig : "the model config";
  const json = typeof modelConfig === "string" ? await readJsonFile(modelConfig) : modelConfig;
  const config = parseOpenClipConfig(json, configPath);
  if (/\.(pt|pth|bin|ckpt)$/.test(weights)) {
    throw new Error(
      `${weights}: a PyTorch pickle, which texforce never loads; convert its state dict once: ` +
        `python -c "import torch; from safetensors.torch import save_file; ` +
        `sd = torch.load('${weights}', map_location='cpu', weights_only=True)['state_dict']; ` +
        `save_file({k.removeprefix('module.'): v.float().contiguous() for k, v in sd.items()}, ` +
        `'${weights.replace(/\.\w+$/, ".safetensors")}')"`,
    );
  }
  const source = new OpenClipWeights(await openWeights(weights, { names: ["model"] }));
  try {
    const check = (prefix: string, n: number, what: string) => {
      for (let i = 0; i < n; i++) {
        const key = `${prefix}.encoder.layers.${i}.layer_norm1.weight`;
        if (!source.has(key)) {
          throw new Error(
            `${source.path}: missing weight '${openClipName(key)}': ${configPath} says ` +
              `layers = ${n}, the weights hold ${i}`,
          );
        }
      }
      if (source.has(`${prefix}.encoder.layers.${n}.layer_norm1.weight`)) {
        throw new Error(
          `${source.path}: holds ${what} resblock ${n} but ${configPath} says layers = ${n}: ` +
            "the config and the weights disagree",
        );
      }
    };
    check("vision_model", config.vision.numHiddenLayers, "visual.transformer");
    check("text_model", config.text.numHiddenLayers, "transformer");
    const clip = await ClipModel.fromSource(source, config.vision, config.text, config.embedDim);
    return { clip, config };
  } finally {
    source.close();
  }
}
