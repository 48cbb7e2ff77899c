/**
 * texforce's own WebGPU kernels (tiled attention, tiled matmul, fused GroupNorm + SiLU) and the
 * switches that choose them over the stock tfjs ops on the webgpu backend.
 *
 * @module
 */
export * from "./kernel_options.ts";
export * from "./flash_attention.ts";
export * from "./tiled_matmul.ts";
export * from "./group_norm_silu.ts";
export * from "./implicit_gemm_conv.ts";
export * from "./f16.ts";
