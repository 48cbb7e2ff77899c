/**
 * The WebGPU feature `shader-f16` for the `f16` kernel option. tfjs 4.22 creates its device
 * without that feature and puts its own preamble before every shader, where WGSL wants
 * `enable f16;` first; {@linkcode requestShaderF16} registers the webgpu backend again with a
 * device that has the feature (when the adapter offers it) and moves `enable` directives to the
 * top of each shader module. {@linkcode useF16} is what the kernels ask.
 *
 * Missing feature: the option falls back to f32 with a one-line notice (printed once), never an
 * error, since both paths compute the same function (f16 only rounds the operands).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { webgpuKernels } from "./kernel_options.ts";
import { prepareWebgpuEnvironment } from "../../core/backend.ts";

/** The part of a WebGPU backend {@linkcode useF16} reads. */
export interface F16DeviceLike {
  device: { features: ReadonlySetLike<string> | Set<string> | GPUSupportedFeatures };
}

interface ReadonlySetLike<T> {
  has(value: T): boolean;
}

let noticed = false;

/**
 * Whether the GEMM kernels should stage operands in f16 now: the `f16` option is on and the
 * backend's device has `shader-f16`. With the option on and the feature missing it prints,
 * once per process, one line saying why the kernels run in f32.
 *
 * @example
 * ```ts
 * import { setWebgpuKernels, useF16 } from "@texforce/core/adapters";
 * setWebgpuKernels({ f16: true });
 * console.log(useF16({ device: { features: new Set<string>() } })); // false, with a notice
 * ```
 */
export function useF16(backend: F16DeviceLike): boolean {
  if (!webgpuKernels().f16) return false;
  if (backend.device.features.has("shader-f16")) return true;
  if (!noticed) {
    noticed = true;
    console.warn(
      "texforce webgpu: f16 option ignored, the device has no 'shader-f16' (the adapter lacks " +
        "it, or requestShaderF16() ran after the webgpu backend started); computing in f32",
    );
  }
  return false;
}

/** Move `enable …;` directives to the start of a WGSL module (they must precede all else). */
export function hoistEnableDirectives(code: string): string {
  const directives = new Set<string>();
  const body = code.replace(/^\s*enable\s+[\w\s,]+;\s*$/gm, (d) => {
    directives.add(d.trim());
    return "";
  });
  return directives.size ? [...directives, body].join("\n") : code;
}

/**
 * Make the webgpu backend, when it next starts, run on a device with `shader-f16` (if the
 * adapter has it) whose shader modules get their `enable` directives hoisted. Call it before
 * `useBackend("webgpu")`; a backend already started is left alone. Resolves to whether the
 * adapter offers `shader-f16` (false, too, where WebGPU is missing).
 *
 * @example
 * ```ts
 * import { requestShaderF16, setWebgpuKernels } from "@texforce/core/adapters";
 * import { useBackend } from "@texforce/core";
 * if (await requestShaderF16()) setWebgpuKernels({ f16: true });
 * await useBackend("webgpu");
 * ```
 */
export async function requestShaderF16(): Promise<boolean> {
  // Vulkan on Linux and a runtime folder, as useBackend sets up, before the first adapter.
  prepareWebgpuEnvironment();
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) return false;
  const probe = await gpu.requestAdapter({ powerPreference: "high-performance" }).catch(() => null);
  if (!probe) return false;
  const offered = probe.features.has("shader-f16");
  const started = (tf.engine() as unknown as { registry: Record<string, unknown> })
    .registry.webgpu;
  if (started) return offered;
  // Loading the package registers tfjs' own factory; ours then replaces it.
  const { WebGPUBackend } = await import("@tensorflow/tfjs-backend-webgpu");
  tf.removeBackend("webgpu");
  tf.registerBackend("webgpu", async () => {
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) throw new Error("requestShaderF16: no WebGPU adapter");
    // As tfjs' own factory (tfjs-backend-webgpu/src/base.ts), plus shader-f16.
    const wanted: GPUFeatureName[] = ["timestamp-query", "bgra8unorm-storage", "shader-f16"];
    const features = wanted.filter((f) => adapter.features.has(f));
    const l = adapter.limits;
    const descriptor = (requiredFeatures: GPUFeatureName[]): GPUDeviceDescriptor => ({
      requiredFeatures,
      requiredLimits: {
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxBufferSize: l.maxBufferSize,
        maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      },
    });
    // A device refused with the feature is asked for again without it (the f16 option then
    // falls back to f32 with its notice) rather than leaving no webgpu backend at all.
    const device = await adapter.requestDevice(descriptor(features)).catch(() =>
      adapter.requestDevice(descriptor(features.filter((f) => f !== "shader-f16")))
    );
    const create = device.createShaderModule.bind(device);
    device.createShaderModule = (d: GPUShaderModuleDescriptor) =>
      create({ ...d, code: hoistEnableDirectives(d.code) });
    return new WebGPUBackend(device, adapter.info);
  }, 3);
  return offered;
}
