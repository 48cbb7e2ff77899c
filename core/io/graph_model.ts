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

/**
 * Load a tfjs graph model from a local `model.json`.
 *
 * @example
 * ```ts
 * import { loadGraphModelFromFile } from "@texforce/core";
 * const m = await loadGraphModelFromFile("models/handtrack.json");
 * ```
 */
export function loadGraphModelFromFile(modelJsonPath: string): Promise<GraphModel> {
  return tf.loadGraphModel(fileIOHandler(modelJsonPath));
}
