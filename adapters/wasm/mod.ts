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
export { KernelReplay } from "./kernel_replay.ts";
// Explicit lists where a file also exports its kernels for composite kernels (internal).
export { fusedNorm, type FusedNormWeights } from "./fused_norm.ts";
export {
  packedMatMul,
  packedMatMulFits,
  type PackedProjection,
  PackedWeight,
  packWeight,
} from "./packed_matmul.ts";
export * from "./simd_product.ts";
export { fusedAttention, fusedAttentionFits } from "./fused_attention.ts";
export { fusedGeglu, fusedGegluFits } from "./fused_geglu.ts";
export * from "./fused_quick_gelu.ts";
export {
  fusedFeedForward,
  fusedFeedForwardFits,
  type FusedFeedForwardParts,
} from "./fused_feed_forward.ts";
export {
  fusedAttentionBlock,
  fusedAttentionBlockFits,
  type FusedAttentionBlockParts,
} from "./fused_attention_block.ts";
export {
  fusedResnetBlock,
  fusedResnetBlockFits,
  type FusedResnetBlockParts,
  type ResnetConvPart,
  type ResnetNormPart,
} from "./fused_resnet_block.ts";
