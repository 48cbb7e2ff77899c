// Shared checks and conversions for rewards that read image batches.
import type { Tensor } from "../core/tensor_types.ts";

/** Throw unless `images` is [B, H, W, 3]; names the reward. */
export function checkImages(reward: string, images: Tensor): [number, number, number, number] {
  if (images.rank !== 4 || images.shape[3] !== 3) {
    throw new Error(
      `${reward}: expected images [B, H, W, 3] in [0, 1], got shape [${images.shape.join(", ")}]`,
    );
  }
  return images.shape as [number, number, number, number];
}

/** Float [0, 1] values → 8-bit (clamped, rounded). */
export function toUint8(values: Float32Array | Int32Array | Uint8Array): Uint8Array {
  const out = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = Math.round(values[i] * 255);
    out[i] = v < 0 ? 0 : v > 255 ? 255 : v;
  }
  return out;
}
