/**
 * Which of texforce's own wasm kernels replace stock tfjs compositions when the backend is
 * wasm. Each has the stock path as its fallback and as the reference its parity tests compare
 * against. `TEXFORCE_WASM_KERNELS=off` in the environment switches them off at start-up, and
 * `TEXFORCE_WASM_KERNELS=fusedNorm,normSimd` keeps only those on (for
 * A/B runs without code changes).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";

/**
 * The kernel switches.
 *
 * @example
 * ```ts
 * import type { WasmKernelOptions } from "@texforce/core/adapters";
 * const o: WasmKernelOptions = {
 *   fusedNorm: true,
 *   normSimd: true,
 *   packedMatmul: true,
 *   fusedAttention: true,
 *   fusedGeglu: true,
 *   fusedFeedForward: true,
 *   fusedAttentionBlock: true,
 *   fusedResnetBlock: true,
 *   fusedQuickGelu: true,
 * };
 * ```
 */
export interface WasmKernelOptions {
  /** GroupNorm / LayerNorm (+ SiLU) as one kernel forward and one backward. */
  fusedNorm: boolean;
  /**
   * The per-element passes of the fused norms and of GEGLU as WebAssembly SIMD loops
   * (norm_simd.wat, activation_simd.wat) where the channels come in fours; off, JS loops do them
   * (slower; the reference the SIMD loops are tested against).
   */
  normSimd: boolean;
  /**
   * Products with frozen weights (`constLinear`: CLIP's and the UNet's linears, forward and
   * input gradient) by texforce's packed SIMD kernel (packed_matmul.ts) instead of XNNPACK's.
   */
  packedMatmul: boolean;
  /**
   * Attention's core softmax(q kᵀ · scale + mask) v as one differentiable op on the SIMD product
   * with a fused softmax gradient (fused_attention.ts) instead of tfjs' composition.
   */
  fusedAttention: boolean;
  /** GEGLU (`value · gelu(gate)`) as one kernel forward and one backward (fused_geglu.ts). */
  fusedGeglu: boolean;
  /**
   * A transformer block's feed-forward part with frozen weights, `h + W₂·geglu(W₁·LayerNorm(h))`,
   * as one kernel forward and one backward (fused_feed_forward.ts) instead of five tfjs ops
   * each way; needs the `fusedNorm`, `packedMatmul` and `fusedGeglu` switches too.
   */
  fusedFeedForward: boolean;
  /**
   * A transformer block's attention part with frozen weights, `h + W_o·attn(W_q·n, W_k·c, W_v·c)`
   * with `n = LayerNorm(h)`, as one kernel forward and one backward (fused_attention_block.ts)
   * instead of seven tfjs ops; needs the `fusedNorm`, `packedMatmul` and `fusedAttention`
   * switches too.
   */
  fusedAttentionBlock: boolean;
  /**
   * A ResNet block with frozen weights (two GroupNorm + SiLU + convolution steps, the time
   * projection, the shortcut) as one kernel forward and one backward (fused_resnet_block.ts)
   * instead of seven or eight tfjs ops; needs the `fusedNorm` switch too (and `packedMatmul`
   * to take the time projection in).
   */
  fusedResnetBlock: boolean;
  /**
   * CLIP's quick GELU, `x · σ(1.702 x)`, with its gradient as one SIMD kernel
   * (fused_quick_gelu.ts) instead of about eight tfjs ops (the forward stays tfjs' three ops);
   * needs `normSimd` too.
   */
  fusedQuickGelu: boolean;
}

/** Defaults: every kernel on (for the wasm backend only). */
export const wasmKernelDefaults = {
  fusedNorm: true,
  normSimd: true,
  packedMatmul: true,
  fusedAttention: true,
  fusedGeglu: true,
  fusedFeedForward: true,
  fusedAttentionBlock: true,
  fusedResnetBlock: true,
  fusedQuickGelu: true,
} satisfies WasmKernelOptions;

function initial(): WasmKernelOptions {
  let value: string | undefined;
  try {
    value = Deno.env.get("TEXFORCE_WASM_KERNELS");
  } catch { /* no env permission: defaults */ }
  if (value === undefined || value === "" || value === "on") return { ...wasmKernelDefaults };
  // "off", or the switches to keep on, comma-separated (for A/B runs of one kernel).
  const on = value === "off" ? [] : value.split(",").map((v) => v.trim());
  const names = Object.keys(wasmKernelDefaults);
  const unknown = on.filter((v) => !names.includes(v));
  if (unknown.length) {
    throw new Error(
      `TEXFORCE_WASM_KERNELS: unknown switch '${unknown[0]}'; expected on, off or a ` +
        `comma-separated list of ${names.join(", ")}`,
    );
  }
  return Object.fromEntries(names.map((k) => [k, on.includes(k)])) as unknown as WasmKernelOptions;
}

let current: WasmKernelOptions = initial();
let version = 0;

/**
 * A number that changes whenever the switches do (a cache of kernel calls keys on it).
 *
 * @example
 * ```ts
 * import { wasmKernelsVersion } from "./kernel_options.ts";
 * console.log(wasmKernelsVersion());
 * ```
 */
export function wasmKernelsVersion(): number {
  return version;
}

/**
 * Change some switches; returns the previous settings (to restore them).
 *
 * @example
 * ```ts
 * import { setWasmKernels } from "@texforce/core/adapters";
 * const before = setWasmKernels({ fusedNorm: false });
 * // ... stock norms ...
 * setWasmKernels(before);
 * ```
 */
export function setWasmKernels(options: Partial<WasmKernelOptions>): WasmKernelOptions {
  const before = { ...current };
  for (const [k, v] of Object.entries(options)) {
    if (!(k in wasmKernelDefaults)) {
      throw new Error(
        `setWasmKernels: unknown switch '${k}'; expected one of ${
          Object.keys(wasmKernelDefaults).join(", ")
        }`,
      );
    }
    if (typeof v !== "boolean") throw new Error(`setWasmKernels: '${k}' must be a boolean`);
  }
  current = { ...current, ...options };
  version++;
  return before;
}

/**
 * Whether kernel `name` should run now: switched on and the active backend is wasm.
 *
 * @example
 * ```ts
 * import { useWasmKernel } from "@texforce/core/adapters";
 * console.log(useWasmKernel("fusedNorm"));
 * ```
 */
export function useWasmKernel(name: keyof WasmKernelOptions): boolean {
  return current[name] && tf.getBackend() === "wasm";
}
