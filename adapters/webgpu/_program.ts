// Running hand-written WGSL compute shaders through tfjs-backend-webgpu's own program runner, so
// their buffers, uniforms, pipeline cache and command batching are the backend's.
//
// tfjs prepends a preamble to every shader: one `result` storage binding for the output, one read
// binding per name in `variableNames`, and a `uniforms` struct holding every input's shape and
// strides followed by the fields in `uniforms`. Programs here take flat (rank-1) outputs and a
// 3-D dispatch, so the preamble defines no output-coordinate helpers and `main()` has no
// parameters; the shader indexes its buffers itself.
import * as tf from "@tensorflow/tfjs";

/** A uniform value appended after tfjs' own (order must match `uniforms` of the program). */
export interface ProgramUniform {
  type: "int32" | "float32" | "uint32";
  data: number[];
}

/** What tfjs-backend-webgpu's `runWebGPUProgram` reads from a program object. */
export interface WgslProgram {
  /** Output shape (rank 1 here: the shader computes flat indices). */
  outputShape: number[];
  /** Cache key: must change whenever the generated code changes. */
  shaderKey: string;
  /** Axis mapping; a 3-axis layout over a rank-1 output keeps tfjs' coordinate helpers out. */
  dispatchLayout: { x: number[]; y: number[]; z: number[] };
  /** Workgroups per dimension. */
  dispatch: [number, number, number];
  /** Input binding names, in input order. */
  variableNames: string[];
  /** Per-input vector width (1 or 4) of the binding's element type. */
  variableComponents?: number[];
  /** WGSL struct fields appended to tfjs' uniforms, e.g. `lq : i32, scale : f32,`. */
  uniforms?: string;
  /** Threads per workgroup. */
  workgroupSize: [number, number, number];
  /** The shader body (must define `fn main()`). */
  getUserCode(): string;
}

/** The part of tfjs-backend-webgpu's `WebGPUBackend` these kernels use. */
export interface WebGPUBackendLike {
  runWebGPUProgram(
    program: WgslProgram,
    inputs: tf.TensorInfo[],
    outputDtype: tf.DataType,
    uniforms?: ProgramUniform[],
  ): tf.TensorInfo;
  disposeData(dataId: tf.DataId, force?: boolean): boolean;
  device: GPUDevice;
}

/** Build a program object for {@linkcode WebGPUBackendLike.runWebGPUProgram}. */
export function wgslProgram(p: {
  key: string;
  outputSize: number;
  dispatch: [number, number, number];
  workgroupSize: number;
  inputs: string[];
  components?: number[];
  uniforms?: string;
  code: string;
}): WgslProgram {
  return {
    outputShape: [p.outputSize],
    shaderKey: p.key,
    dispatchLayout: { x: [0], y: [1], z: [2] },
    dispatch: p.dispatch,
    variableNames: p.inputs,
    variableComponents: p.components,
    uniforms: p.uniforms,
    workgroupSize: [p.workgroupSize, 1, 1],
    getUserCode: () => p.code,
  };
}

/** The active backend as a WebGPU backend, or null on any other backend. */
export function webgpuBackend(): WebGPUBackendLike | null {
  if (tf.getBackend() !== "webgpu") return null;
  return tf.backend() as unknown as WebGPUBackendLike;
}

/** Register a webgpu kernel once (tfjs warns on re-registration). */
export function registerWebgpuKernel(name: string, kernelFunc: tf.KernelFunc): void {
  if (tf.getKernel(name, "webgpu")) return;
  tf.registerKernel({ kernelName: name, backendName: "webgpu", kernelFunc });
}

/** Run a registered kernel through the engine (so tidy and memory tracking see its outputs). */
export function runKernel(
  name: string,
  inputs: Record<string, tf.Tensor>,
  attrs: Record<string, unknown> = {},
): tf.Tensor {
  return tf.engine().runKernel(
    name,
    inputs as unknown as tf.NamedTensorMap,
    attrs as unknown as tf.NamedAttrMap,
  ) as tf.Tensor;
}

/** Bytes of workgroup memory a shader may use on this device (the WebGPU default is 16 KiB). */
export function workgroupStorageBytes(backend: WebGPUBackendLike): number {
  return backend.device.limits.maxComputeWorkgroupStorageSize ?? 16384;
}
