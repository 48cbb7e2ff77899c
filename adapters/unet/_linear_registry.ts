// Linear layers by their diffusers module path, so a LoRA can find and patch them after loading.
import * as tf from "@tensorflow/tfjs";
import type { LinearWeights } from "../nn/linear.ts";
import type { WeightReader } from "../nn/weight_reader.ts";
import type { Tensor1D, Tensor2D } from "../../core/tensor_types.ts";

/** Linear (and 1×1 convolution) layers by module path, e.g. `mid_block.attentions.0.proj_in`. */
export type LinearRegistry = Map<string, LinearWeights>;

/**
 * Read `name.weight` ([out, in], or [out, in, 1, 1] for a 1×1 convolution, which is the same map
 * applied per pixel) and `name.bias`, store it transposed to [in, out] and register it.
 */
export async function loadRegisteredLinear(
  r: WeightReader,
  name: string,
  inDim: number,
  outDim: number,
  registry: LinearRegistry | undefined,
  bias = true,
): Promise<LinearWeights> {
  const key = `${name}.weight`;
  const full = r.prefix + key;
  const rank = r.source.has(full) ? r.source.info(full).shape.length : 2;
  const w = await r.tensor(key, rank === 4 ? [outDim, inDim, 1, 1] : [outDim, inDim]);
  const weight = r.adopt(
    key,
    tf.tidy(() => w.reshape([outDim, inDim]).transpose() as Tensor2D),
    "linear",
  );
  w.dispose();
  const out: LinearWeights = { weight };
  if (bias && r.has(`${name}.bias`)) {
    out.bias = (await r.tensor(`${name}.bias`, [outDim])) as Tensor1D;
  }
  registry?.set(r.prefix + name, out);
  return out;
}
