/**
 * Key names and shapes of CLIP encoder layers, for benches that build random-weight CLIP models.
 *
 * @module
 */

/**
 * Call `add(key, shape)` for every tensor of `layers` CLIP encoder layers under
 * `${prefix}encoder.layers.{i}` (width `d`, MLP width `m`).
 *
 * @example
 * ```ts
 * import { clipEncoderLayerShapes } from "./_clip_layout.ts";
 * const shapes = new Map<string, number[]>();
 * clipEncoderLayerShapes((k, s) => shapes.set(k, s), "text_model.", 12, 768, 3072);
 * ```
 */
export function clipEncoderLayerShapes(
  add: (key: string, shape: number[]) => void,
  prefix: string,
  layers: number,
  d: number,
  m: number,
): void {
  for (let i = 0; i < layers; i++) {
    const p = `${prefix}encoder.layers.${i}`;
    for (const n of ["layer_norm1", "layer_norm2"]) {
      add(`${p}.${n}.weight`, [d]);
      add(`${p}.${n}.bias`, [d]);
    }
    for (const n of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      add(`${p}.self_attn.${n}.weight`, [d, d]);
      add(`${p}.self_attn.${n}.bias`, [d]);
    }
    add(`${p}.mlp.fc1.weight`, [m, d]);
    add(`${p}.mlp.fc1.bias`, [m]);
    add(`${p}.mlp.fc2.weight`, [d, m]);
    add(`${p}.mlp.fc2.bias`, [d]);
  }
}
