/**
 * Loading tfjs graph/layers models (`model.json` + `.bin` shards) from local files, without
 * fetch: the face and hand detectors of `@vladmandic/human` ship in this format.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { dirname, join } from "node:path";
import type { GraphModel, IOHandler } from "../tensor_types.ts";

/**
 * A `IOHandler` that reads `model.json` and its weight shards from disk.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fileIOHandler } from "@texforce/core";
 * const model = await tf.loadGraphModel(fileIOHandler("models/blazeface.json"));
 * ```
 */
export function fileIOHandler(modelJsonPath: string): IOHandler {
  return {
    async load(): Promise<tf.io.ModelArtifacts> {
      let json: tf.io.ModelJSON;
      try {
        json = JSON.parse(await Deno.readTextFile(modelJsonPath));
      } catch (e) {
        throw new Error(`${modelJsonPath}: cannot read model.json (${(e as Error).message})`);
      }
      if (!json.modelTopology) throw new Error(`${modelJsonPath}: no 'modelTopology'`);
      const specs: tf.io.WeightsManifestEntry[] = [];
      const buffers: Uint8Array[] = [];
      for (const group of json.weightsManifest ?? []) {
        specs.push(...group.weights);
        for (const p of group.paths) {
          const file = join(dirname(modelJsonPath), decodeURIComponent(p));
          try {
            buffers.push(await Deno.readFile(file));
          } catch {
            throw new Error(`${modelJsonPath}: weight shard ${file} not found`);
          }
        }
      }
      const total = buffers.reduce((a, b) => a + b.byteLength, 0);
      const expected = expectedWeightBytes(specs);
      // A truncated or foreign shard would otherwise surface as an opaque RangeError (or as
      // garbage weights) deep inside tfjs.
      if (expected !== undefined && expected !== total) {
        throw new Error(
          `${modelJsonPath}: weight shards hold ${total} bytes, but the manifest describes ` +
            `${expected} (truncated or corrupt .bin file?)`,
        );
      }
      const all = new Uint8Array(total);
      let o = 0;
      for (const b of buffers) {
        all.set(b, o);
        o += b.byteLength;
      }
      return {
        modelTopology: json.modelTopology,
        format: json.format,
        generatedBy: json.generatedBy,
        convertedBy: json.convertedBy,
        weightSpecs: specs,
        weightData: all.buffer,
        signature: json.signature,
        userDefinedMetadata: json.userDefinedMetadata,
        modelInitializer: json.modelInitializer,
      };
    },
  };
}

const DTYPE_BYTES: Record<string, number> = {
  float32: 4,
  int32: 4,
  bool: 1,
  uint8: 1,
  uint16: 2,
  float16: 2,
  int8: 1,
  int16: 2,
};

// Bytes the manifest's weights occupy (quantized weights count at their stored width);
// undefined when a dtype's width is not fixed (string tensors).
function expectedWeightBytes(specs: tf.io.WeightsManifestEntry[]): number | undefined {
  let total = 0;
  for (const s of specs) {
    const dtype: string = s.quantization?.dtype ?? s.dtype;
    const width = DTYPE_BYTES[dtype];
    if (width === undefined) return undefined;
    total += s.shape.reduce((a, b) => a * b, 1) * width;
  }
  return total;
}

/**
 * Load a tfjs graph model from a local `model.json`.
 *
 * @example
 * ```ts
 * import { loadGraphModelFromFile } from "@texforce/core";
 * const m = await loadGraphModelFromFile("models/handtrack.json");
 * ```
 */
export async function loadGraphModelFromFile(modelJsonPath: string): Promise<GraphModel> {
  try {
    return await tf.loadGraphModel(fileIOHandler(modelJsonPath));
  } catch (e) {
    const message = (e as Error).message;
    if (message.startsWith(modelJsonPath)) throw e;
    throw new Error(`${modelJsonPath}: not a loadable tfjs graph model (${message})`, { cause: e });
  }
}
