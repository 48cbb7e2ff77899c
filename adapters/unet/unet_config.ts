/**
 * Reading and validating a diffusers `UNet2DConditionModel` config (`unet/config.json`) for the
 * Stable Diffusion 1.x/2.x architecture; every unsupported value is an error that names the file
 * and the field.
 *
 * @module
 */

/**
 * Down block types this implementation builds.
 *
 * @example
 * ```ts
 * import type { DownBlockType } from "@texforce/core/adapters";
 * const t: DownBlockType = "CrossAttnDownBlock2D";
 * ```
 */
export type DownBlockType = "CrossAttnDownBlock2D" | "DownBlock2D";
/**
 * Up block types this implementation builds.
 *
 * @example
 * ```ts
 * import type { UpBlockType } from "@texforce/core/adapters";
 * const t: UpBlockType = "UpBlock2D";
 * ```
 */
export type UpBlockType = "CrossAttnUpBlock2D" | "UpBlock2D";

/**
 * A validated UNet config with per-block lists resolved.
 *
 * @example
 * ```ts
 * import { parseUNetConfig, type UNetConfig } from "@texforce/core/adapters";
 * const c: UNetConfig = parseUNetConfig({ cross_attention_dim: 768 });
 * console.log(c.blockOutChannels); // [320, 640, 1280, 1280]
 * ```
 */
export interface UNetConfig {
  /** Latent channels in. */
  inChannels: number;
  /** Channels out. */
  outChannels: number;
  /** Latent side the model was trained at (64 for SD 1.5 at 512 px). */
  sampleSize: number;
  /** Channels per resolution level. */
  blockOutChannels: number[];
  /** Resnets per down block (up blocks have one more). */
  layersPerBlock: number[];
  /** Down block types. */
  downBlockTypes: DownBlockType[];
  /** Up block types. */
  upBlockTypes: UpBlockType[];
  /** Whether there is a mid block (`UNetMidBlock2DCrossAttn`). */
  midBlock: boolean;
  /** Width of the encoder states, per down block. */
  crossAttentionDim: number[];
  /** Attention heads per down block (diffusers' `num_attention_heads or attention_head_dim`). */
  numAttentionHeads: number[];
  /** Transformer blocks per attention, per down block. */
  transformerLayersPerBlock: number[];
  /** `proj_in`/`proj_out` are linear (SD 2.x) rather than 1×1 convs. */
  useLinearProjection: boolean;
  /** Attention in float32 (a no-op here: everything is float32). */
  upcastAttention: boolean;
  /** GroupNorm groups. */
  normNumGroups: number;
  /** GroupNorm/resnet epsilon. */
  normEps: number;
  /** Sinusoidal embedding order. */
  flipSinToCos: boolean;
  /** Sinusoidal frequency shift. */
  freqShift: number;
  /** Width of the time embedding. */
  timeEmbedDim: number;
  /** Downsampler padding. */
  downsamplePadding: number;
  /** Output scale of the mid block's resnets. */
  midBlockScaleFactor: number;
  /** Output scale of the other resnets. */
  resnetOutScaleFactor: number;
  /** conv_in kernel. */
  convInKernel: number;
  /** conv_out kernel. */
  convOutKernel: number;
  /** Map the input from [0, 1] to [-1, 1] first. */
  centerInputSample: boolean;
}

// Fields that must hold one value (or be absent) because only that behaviour is implemented.
const FIXED: Record<string, unknown[]> = {
  act_fn: ["silu"],
  time_embedding_type: ["positional"],
  class_embed_type: [null],
  num_class_embeds: [null],
  addition_embed_type: [null],
  encoder_hid_dim: [null],
  encoder_hid_dim_type: [null],
  time_cond_proj_dim: [null],
  timestep_post_act: [null],
  time_embedding_act_fn: [null],
  resnet_time_scale_shift: ["default"],
  resnet_skip_time_act: [false],
  dual_cross_attention: [false],
  cross_attention_norm: [null],
  attention_type: ["default"],
  class_embeddings_concat: [false],
  mid_block_only_cross_attention: [null, false],
  reverse_transformer_layers_per_block: [null],
  addition_time_embed_dim: [null],
  projection_class_embeddings_input_dim: [null],
  mid_block_type: ["UNetMidBlock2DCrossAttn", null],
  // Only some of diffusers' block types read it; SD checkpoints all use 1.
  resnet_out_scale_factor: [1],
};

/**
 * Validate a raw UNet config (`file` names it in errors) and resolve per-block values.
 *
 * @example
 * ```ts
 * import { parseUNetConfig } from "@texforce/core/adapters";
 * const c = parseUNetConfig({ block_out_channels: [32, 64], down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
 *   up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim: 32, norm_num_groups: 8 }, "unet/config.json");
 * console.log(c.numAttentionHeads); // [8, 8]
 * ```
 */
export function parseUNetConfig(
  raw: Record<string, unknown>,
  file = "unet/config.json",
): UNetConfig {
  const fail = (field: string, why: string): Error =>
    new Error(`${file}: field '${field}' = ${JSON.stringify(raw[field])} ${why}`);
  for (const [field, allowed] of Object.entries(FIXED)) {
    if (!(field in raw)) continue;
    if (!allowed.includes(raw[field] as never)) {
      throw fail(
        field,
        `is not supported (supported: ${allowed.map((a) => JSON.stringify(a)).join(", ")})`,
      );
    }
  }
  const get = <T>(field: string, def: T): T => raw[field] === undefined ? def : (raw[field] as T);
  const int = (field: string, def: number, min = 0): number => {
    const v = get<unknown>(field, def);
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
      throw fail(field, `is not an integer ≥ ${min}`);
    }
    return v;
  };
  const num = (field: string, def: number): number => {
    const v = get<unknown>(field, def);
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0 && field !== "freq_shift") {
      throw fail(field, "is not a valid number");
    }
    return v;
  };
  const bool = (field: string, def: boolean): boolean => {
    const v = get<unknown>(field, def);
    if (typeof v !== "boolean") throw fail(field, "is not a boolean");
    return v;
  };
  const blockOut = get<unknown>("block_out_channels", [320, 640, 1280, 1280]);
  if (
    !Array.isArray(blockOut) || blockOut.length < 1 ||
    blockOut.some((c) => !Number.isInteger(c) || c < 1)
  ) {
    throw fail("block_out_channels", "is not a list of positive integers");
  }
  const n = blockOut.length;
  const perBlock = (field: string, def: unknown): number[] => {
    const v = get<unknown>(field, def);
    if (typeof v === "number" && Number.isInteger(v) && v > 0) return Array(n).fill(v);
    if (Array.isArray(v) && v.length === n && v.every((x) => Number.isInteger(x) && x > 0)) {
      return v as number[];
    }
    throw fail(field, `is not a positive integer or a list of ${n} of them`);
  };
  const down = get<unknown>("down_block_types", [
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "DownBlock2D",
  ]);
  const up = get<unknown>("up_block_types", [
    "UpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
  ]);
  const checkTypes = <T extends string>(field: string, v: unknown, allowed: T[]): T[] => {
    if (!Array.isArray(v) || v.length !== n) throw fail(field, `is not a list of ${n} block types`);
    v.forEach((t, i) => {
      if (!allowed.includes(t)) {
        throw new Error(
          `${file}: field '${field}[${i}]' = ${JSON.stringify(t)} is not supported ` +
            `(supported: ${allowed.join(", ")})`,
        );
      }
    });
    return v as T[];
  };
  const only = get<unknown>("only_cross_attention", false);
  if (only !== false && !(Array.isArray(only) && only.every((x) => x === false))) {
    throw fail("only_cross_attention", "is not supported (supported: false)");
  }
  const heads = raw.num_attention_heads ?? raw.attention_head_dim ?? 8;
  const numAttentionHeads = perBlock(
    raw.num_attention_heads !== undefined && raw.num_attention_heads !== null
      ? "num_attention_heads"
      : "attention_head_dim",
    heads,
  );
  const blockOutChannels = blockOut as number[];
  const normNumGroups = int("norm_num_groups", 32, 1);
  const convIn = int("conv_in_kernel", 3, 1);
  const convOut = int("conv_out_kernel", 3, 1);
  if (convIn % 2 === 0) throw fail("conv_in_kernel", "must be odd");
  if (convOut % 2 === 0) throw fail("conv_out_kernel", "must be odd");
  const ted = get<unknown>("time_embedding_dim", null);
  if (ted !== null && !(Number.isInteger(ted) && (ted as number) > 0)) {
    throw fail("time_embedding_dim", "is not null or a positive integer");
  }
  return {
    inChannels: int("in_channels", 4, 1),
    outChannels: int("out_channels", 4, 1),
    sampleSize: raw.sample_size === null || raw.sample_size === undefined
      ? 64
      : int("sample_size", 64, 1),
    blockOutChannels,
    layersPerBlock: perBlock("layers_per_block", 2),
    downBlockTypes: checkTypes("down_block_types", down, ["CrossAttnDownBlock2D", "DownBlock2D"]),
    upBlockTypes: checkTypes("up_block_types", up, ["CrossAttnUpBlock2D", "UpBlock2D"]),
    midBlock: raw.mid_block_type !== null,
    crossAttentionDim: perBlock("cross_attention_dim", 1280),
    numAttentionHeads,
    transformerLayersPerBlock: perBlock("transformer_layers_per_block", 1),
    useLinearProjection: bool("use_linear_projection", false),
    upcastAttention: bool("upcast_attention", false),
    normNumGroups,
    normEps: num("norm_eps", 1e-5),
    flipSinToCos: bool("flip_sin_to_cos", true),
    freqShift: num("freq_shift", 0),
    timeEmbedDim: (ted as number | null) ?? blockOutChannels[0] * 4,
    downsamplePadding: int("downsample_padding", 1),
    midBlockScaleFactor: num("mid_block_scale_factor", 1),
    resnetOutScaleFactor: 1,
    convInKernel: convIn,
    convOutKernel: convOut,
    centerInputSample: bool("center_input_sample", false),
  };
}
