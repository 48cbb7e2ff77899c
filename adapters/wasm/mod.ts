/**
 * texforce's own wasm kernels — fused GroupNorm / LayerNorm + SiLU (forward and backward), the
 * packed SIMD matrix product for frozen weights and the SIMD product of two computed tensors —
 * and the switches that choose them over the stock tfjs compositions on the wasm backend. The wasm
 * backend's replacements of stock kernels (Slice, SplitV, BatchMatMul, Reverse, broadcasts) are
 * installed by `useBackend` itself (core/_wasm_kernels.ts).
 *
 * @module
 */
export * from "./kernel_options.ts";
export * from "./fused_norm.ts";
export * from "./packed_matmul.ts";
export * from "./simd_product.ts";
export * from "./fused_attention.ts";
export * from "./fused_geglu.ts";
