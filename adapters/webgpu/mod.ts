/**
 * texforce's own WebGPU kernels (tiled attention, tiled matmul, fused GroupNorm + SiLU, the
 * implicit-GEMM 3×3 conv with input, filter and bias gradients), the switches that choose them
 * over the stock tfjs ops on the webgpu backend, and the `shader-f16` device for the `f16`
 * option (f16 operand tiles with f32 accumulation in the GEMM kernels).
 *
 * @module
 */
export * from "./kernel_options.ts";
export * from "./flash_attention.ts";
export * from "./tiled_matmul.ts";
export * from "./group_norm_silu.ts";
export * from "./implicit_gemm_conv.ts";
export * from "./f16.ts";
