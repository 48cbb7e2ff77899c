/**
 * Weight and model I/O: safetensors, sharded checkpoints, diffusers model folders, tfjs graph
 * models from disk.
 *
 * @module
 */
export * from "./safetensors.ts";
export * from "./atomic_file.ts";
export * from "./weights.ts";
export * from "./model_folder.ts";
export * from "./graph_model.ts";
export * from "./path_exists.ts";
