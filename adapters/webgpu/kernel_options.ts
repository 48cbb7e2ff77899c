/**
 * Which of texforce's own WebGPU kernels replace the stock tfjs ops when the backend is webgpu.
 * Every kernel has the stock path as its fallback (other backends, or switched off here) and as
 * the reference its parity tests compare against. `TEXFORCE_WEBGPU_KERNELS=off` in the
 * environment switches them all off at start-up (for A/B runs without code changes).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";

/**
 * The kernel switches (see `requestShaderF16` in `f16.ts` for the `f16` one).
 *
 * @example
 * ```ts
 * import type { WebgpuKernelOptions } from "@texforce/core/adapters";
 * const o: WebgpuKernelOptions = {
 *   flashAttention: true, tiledMatmul: true, groupNormSilu: true, implicitGemmConv: true,
 *   recomputeBlocks: false, gemmTile: 64, f16: false,
 * };
 * ```
 */
export interface WebgpuKernelOptions {
  /** Tiled attention with online softmax, forward and backward (no Lq × Lk matrix). */
  flashAttention: boolean;
  /** Shared-memory tiled matmul for linear layers (4×4 outputs per thread). */
  tiledMatmul: boolean;
  /** GroupNorm and SiLU in one pass. */
  groupNormSilu: boolean;
  /** 3×3 stride-1 convolutions as an implicit GEMM on the tiled kernel. */
  implicitGemmConv: boolean;
  /**
   * Recompute each UNet block's forward in the backward pass instead of keeping its
   * activations (any backend): less memory, about one more forward of compute.
   */
  recomputeBlocks: boolean;
  /**
   * Output tile of the tiled matmul and the implicit-GEMM conv: 64 (4 × 4 outputs per thread,
   * 8 KiB of workgroup memory) or 128 (8 × 8 per thread, 16 KiB; more reuse per load, more
   * registers). Which is faster depends on the GPU: `bench/gpu_kernels.ts` times both.
   */
  gemmTile: 64 | 128;
  /**
   * f16 storage with f32 accumulation in the tiled GEMM (matmul and the 3×3 conv, forward and
   * gradients): the operand slices sit in workgroup memory as f16 (half its bytes and its
   * traffic), products and sums stay f32. Tensors in GPU buffers stay f32 (tfjs 4.22 has no
   * float16 dtype). Off by default: it rounds every operand to f16 (relative error about 3e-4
   * of the largest output on the parity shapes, against about 1e-6 in f32). Needs the device feature `shader-f16`, which
   * tfjs does not request: call `requestShaderF16()` (f16.ts) before the webgpu backend starts.
   * Where the device lacks it, the kernels run in f32 and print one line saying so, once.
   */
  f16: boolean;
}

/** Defaults: the kernels on (for webgpu only), block recomputation off. */
export const webgpuKernelDefaults = {
  flashAttention: true,
  tiledMatmul: true,
  groupNormSilu: true,
  implicitGemmConv: true,
  recomputeBlocks: false,
  gemmTile: 64,
  f16: false,
} satisfies WebgpuKernelOptions;

function initial(): WebgpuKernelOptions {
  let off = false;
  try {
    off = Deno.env.get("TEXFORCE_WEBGPU_KERNELS") === "off";
  } catch { /* no env permission: defaults */ }
  return off
    ? {
      flashAttention: false,
      tiledMatmul: false,
      groupNormSilu: false,
      implicitGemmConv: false,
      recomputeBlocks: false,
      gemmTile: 64,
      f16: false,
    }
    : { ...webgpuKernelDefaults };
}

let current: WebgpuKernelOptions = initial();

/**
 * Change some switches; returns the previous settings (to restore them).
 *
 * @example
 * ```ts
 * import { setWebgpuKernels } from "@texforce/core/adapters";
 * const before = setWebgpuKernels({ flashAttention: false });
 * // ... stock attention ...
 * setWebgpuKernels(before);
 * ```
 */
export function setWebgpuKernels(options: Partial<WebgpuKernelOptions>): WebgpuKernelOptions {
  const before = { ...current };
  for (const [k, v] of Object.entries(options)) {
    if (!(k in webgpuKernelDefaults)) {
      throw new Error(
        `setWebgpuKernels: unknown switch '${k}'; expected one of ${
          Object.keys(webgpuKernelDefaults).join(", ")
        }`,
      );
    }
    if (k === "gemmTile") {
      if (v !== 64 && v !== 128) throw new Error(`setWebgpuKernels: 'gemmTile' must be 64 or 128`);
    } else if (typeof v !== "boolean") {
      throw new Error(`setWebgpuKernels: '${k}' must be a boolean`);
    }
  }
  current = { ...current, ...options };
  return before;
}

/**
 * The switches now in effect.
 *
 * @example
 * ```ts
 * import { webgpuKernels } from "@texforce/core/adapters";
 * console.log(webgpuKernels().flashAttention);
 * ```
 */
export function webgpuKernels(): WebgpuKernelOptions {
  return { ...current };
}

/**
 * Whether kernel `name` should run now: switched on and the active backend is webgpu.
 *
 * @example
 * ```ts
 * import { useWebgpuKernel } from "@texforce/core/adapters";
 * console.log(useWebgpuKernel("tiledMatmul"));
 * ```
 */
export function useWebgpuKernel(
  name: "flashAttention" | "tiledMatmul" | "groupNormSilu" | "implicitGemmConv",
): boolean {
  return current[name] && tf.getBackend() === "webgpu";
}
