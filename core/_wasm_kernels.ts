// Replacements for tfjs-backend-wasm 4.22's Slice and SplitV kernels, whose cost grows with the
// size of the *input* rather than of the output.
//
// The stock Slice starts with `backend.readSync(x)`, which copies the whole input out of the wasm
// heap (`HEAPU8.slice`) before taking the piece it needs; SplitV calls that Slice once per piece.
// Splitting a tensor into n pieces therefore copies n × its size: splitting attention's
// [batch · heads, L, d] products into 2-D matrices (the XNNPACK fast path, adapters/_fast_matmul.ts)
// made the tiny UNet's forward grow with the square of the batch (73 ms at 2, 23 s at 64). These
// versions read the input through a view of the heap, so a piece costs its own size (and a
// slice narrowing several axes copies whole runs instead of element by element).
import * as tf from "@tensorflow/tfjs";

interface HeapTensorInfo {
  dataId: object;
  shape: number[];
  dtype: tf.DataType;
}

/** The wasm backend's internals these kernels use (stable across tfjs 4.x). */
interface WasmBackendInternals {
  makeOutput(shape: number[], dtype: tf.DataType): HeapTensorInfo;
  typedArrayFromHeap(t: HeapTensorInfo): Float32Array | Int32Array | Uint8Array;
}

type KernelArgs = {
  inputs: { x: HeapTensorInfo };
  attrs: Record<string, unknown>;
  backend: WasmBackendInternals;
};
type KernelFunc = (args: KernelArgs) => HeapTensorInfo | HeapTensorInfo[];

const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Copy the block `x[..., begin:begin+size on axis, ...]` (all of every other axis) into a new
 * output. Rows of `size · inner` values are contiguous in both, `outer` of them.
 */
function axisBlock(
  backend: WasmBackendInternals,
  x: HeapTensorInfo,
  axis: number,
  begin: number,
  size: number,
): HeapTensorInfo {
  const outShape = x.shape.slice();
  outShape[axis] = size;
  const out = backend.makeOutput(outShape, x.dtype);
  // Views after makeOutput: allocating can grow the heap and detach older views.
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  const outer = sizeOf(x.shape.slice(0, axis));
  const inner = sizeOf(x.shape.slice(axis + 1));
  const row = size * inner;
  const stride = x.shape[axis] * inner;
  if (outer === 1) {
    dst.set(src.subarray(begin * inner, begin * inner + row));
  } else {
    for (let o = 0; o < outer; o++) {
      const from = o * stride + begin * inner;
      dst.set(src.subarray(from, from + row), o * row);
    }
  }
  return out;
}

/**
 * Copy any slice into a new output: runs of `size[a] · inner` contiguous values, one per index
 * of the axes before `a`, the last axis the slice narrows.
 */
function sliceBlock(
  backend: WasmBackendInternals,
  x: HeapTensorInfo,
  begin: number[],
  size: number[],
): HeapTensorInfo {
  const rank = x.shape.length;
  let a = 0;
  for (let i = 0; i < rank; i++) if (begin[i] !== 0 || size[i] !== x.shape[i]) a = i;
  const out = backend.makeOutput(size, x.dtype);
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  const strides = new Array(rank).fill(1);
  for (let i = rank - 2; i >= 0; i--) strides[i] = strides[i + 1] * x.shape[i + 1];
  const run = size[a] * strides[a];
  const outer = sizeOf(size.slice(0, a));
  const idx = new Array(a).fill(0);
  for (let o = 0; o < outer; o++) {
    let from = begin[a] * strides[a];
    for (let i = 0; i < a; i++) from += (begin[i] + idx[i]) * strides[i];
    dst.set(src.subarray(from, from + run), o * run);
    for (let i = a - 1; i >= 0; i--) {
      if (++idx[i] < size[i]) break;
      idx[i] = 0;
    }
  }
  return out;
}

function normaliseSlice(
  shape: number[],
  begin: number | number[],
  size?: number | number[],
): [number[], number[]] {
  const rank = shape.length;
  const b = typeof begin === "number" ? [begin, ...Array(rank - 1).fill(0)] : [...begin];
  while (b.length < rank) b.push(0);
  const s = size === undefined
    ? shape.map(() => -1)
    : typeof size === "number"
    ? [size, ...Array(rank - 1).fill(-1)]
    : [...size];
  while (s.length < rank) s.push(-1);
  return [b, s.map((v, i) => (v === -1 ? shape[i] - b[i] : v))];
}

let installed = false;

/**
 * Replace the wasm backend's Slice and SplitV kernels with versions whose cost is that of their
 * output (see the file comment). Idempotent; call after tfjs-backend-wasm has been imported.
 */
export function installWasmSliceKernels(): void {
  if (installed) return;
  const slice = tf.getKernel("Slice", "wasm");
  const split = tf.getKernel("SplitV", "wasm");
  if (!slice || !split) return;
  const stockSlice = slice.kernelFunc as unknown as KernelFunc;
  const stockSplit = split.kernelFunc as unknown as KernelFunc;

  const fastSlice: KernelFunc = (args) => {
    const { inputs: { x }, attrs, backend } = args;
    if (x.dtype === "string") return stockSlice(args);
    const [begin, size] = normaliseSlice(
      x.shape,
      attrs.begin as number | number[],
      attrs.size as number | number[] | undefined,
    );
    return sliceBlock(backend, x, begin, size);
  };

  const fastSplit: KernelFunc = (args) => {
    const { inputs: { x }, attrs, backend } = args;
    if (x.dtype === "string") return stockSplit(args);
    const rank = x.shape.length;
    const axis = ((attrs.axis as number) % rank + rank) % rank;
    const n = x.shape[axis];
    const spec = attrs.numOrSizeSplits as number | number[];
    let sizes: number[];
    if (typeof spec === "number") {
      sizes = Array(spec).fill(n / spec);
    } else {
      const known = spec.reduce((a, v) => (v === -1 ? a : a + v), 0);
      sizes = spec.map((v) => (v === -1 ? n - known : v));
    }
    let begin = 0;
    return sizes.map((s) => {
      const out = axisBlock(backend, x, axis, begin, s);
      begin += s;
      return out;
    });
  };

  for (
    const [name, kernelFunc] of [["Slice", fastSlice], ["SplitV", fastSplit]] as const
  ) {
    tf.unregisterKernel(name, "wasm");
    tf.registerKernel({
      kernelName: name,
      backendName: "wasm",
      kernelFunc: kernelFunc as unknown as tf.KernelFunc,
    });
  }
  installed = true;
}
