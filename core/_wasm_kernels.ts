// Replacements for tfjs-backend-wasm 4.22 kernels that miss a fast path (BatchMatMul and Reverse:
// see their comments below), and for its Slice and SplitV, whose cost grows with the size of the
// *input* rather than of the output.
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
  disposeData(dataId: object): boolean;
  dataIdNextNumber: number;
  dataIdMap: { get(dataId: object): { id: number; memoryOffset: number } };
  wasm: {
    cwrap(name: string, ret: null, args: string[]): (...args: unknown[]) => void;
    tfjs: {
      registerTensor(id: number, size: number, offset: number): void;
      disposeData(id: number): void;
    };
  };
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

/**
 * BatchMatMul on XNNPACK for every shape. tfjs-backend-wasm 4.22 sends a product to XNNPACK
 * only when it has one matrix a side and neither is transposed; every other form (attention's
 * batched products, and the transposed products of every matMul's gradient) runs a scalar loop
 * at about 2 GFLOP/s against XNNPACK's 15–40. This version transposes explicitly (one Transpose
 * over the batch) and multiplies matrix by matrix with the stock kernel's XNNPACK path, on
 * views of the heap registered under fresh ids: no slicing or concatenating copies, and a
 * broadcast right-hand matrix is packed once. Shapes whose batch axes broadcast other than
 * "equal, or one side single" go to the stock kernel.
 */
function makeFastBatchMatMul(stock: KernelFunc, transpose: KernelFunc): KernelFunc {
  let wasmBatchMatMul: ((...args: unknown[]) => void) | null = null;
  let wasmOf: unknown = null;
  return (args) => {
    const { inputs, attrs, backend } = args as unknown as {
      inputs: { a: HeapTensorInfo; b: HeapTensorInfo };
      attrs: { transposeA: boolean; transposeB: boolean };
      backend: WasmBackendInternals;
    };
    const { a, b } = inputs;
    const { transposeA, transposeB } = attrs;
    const ra = a.shape.length;
    const rb = b.shape.length;
    const batchA = sizeOf(a.shape.slice(0, -2));
    const batchB = sizeOf(b.shape.slice(0, -2));
    const batch = Math.max(batchA, batchB);
    const sameLead = ra === rb && a.shape.slice(0, -2).every((v, i) => v === b.shape[i]);
    const lead = sameLead || batchB === 1
      ? a.shape.slice(0, -2)
      : batchA === 1
      ? b.shape.slice(0, -2)
      : null;
    if (
      a.dtype !== "float32" || b.dtype !== "float32" || lead === null ||
      (batch === 1 && !transposeA && !transposeB) || (batchA !== batch && batchA !== 1) ||
      (batchB !== batch && batchB !== 1)
    ) {
      return stock(args as unknown as KernelArgs);
    }
    if (wasmOf !== backend.wasm) {
      wasmBatchMatMul = backend.wasm.cwrap("BatchMatMul", null, [
        "number",
        "array",
        "number",
        "number",
        "array",
        "number",
        "number",
        "number",
        "number",
      ]);
      wasmOf = backend.wasm;
    }
    const t = (x: HeapTensorInfo): HeapTensorInfo => {
      const r = x.shape.length;
      const perm = [...Array(r - 2).keys(), r - 1, r - 2];
      return transpose({ inputs: { x }, attrs: { perm }, backend }) as HeapTensorInfo;
    };
    const at = transposeA ? t(a) : a;
    const bt = transposeB ? t(b) : b;
    const [m, k] = at.shape.slice(-2);
    const p = bt.shape[bt.shape.length - 1];
    const out = backend.makeOutput([...lead, m, p], "float32");
    const offA = backend.dataIdMap.get(at.dataId).memoryOffset;
    const offB = backend.dataIdMap.get(bt.dataId).memoryOffset;
    const offO = backend.dataIdMap.get(out.dataId).memoryOffset;
    const shapeBytes = (s: number[]) => new Uint8Array(new Int32Array(s).buffer);
    const aShape = shapeBytes([1, m, k]);
    const bShape = shapeBytes([1, k, p]);
    const view = (offset: number, size: number) => {
      const id = backend.dataIdNextNumber++;
      backend.wasm.tfjs.registerTensor(id, size, offset);
      return id;
    };
    // A single right-hand matrix keeps one id, so XNNPACK packs it once for the whole batch.
    const sharedB = batchB === 1 ? view(offB, k * p) : 0;
    for (let i = 0; i < batch; i++) {
      const ia = view(offA + 4 * (batchA === 1 ? 0 : i) * m * k, m * k);
      const ib = sharedB || view(offB + 4 * i * k * p, k * p);
      const io = view(offO + 4 * i * m * p, m * p);
      wasmBatchMatMul!(ia, aShape, 3, ib, bShape, 3, false, false, io);
      backend.wasm.tfjs.disposeData(ia);
      if (!sharedB) backend.wasm.tfjs.disposeData(ib);
      backend.wasm.tfjs.disposeData(io);
    }
    if (sharedB) backend.wasm.tfjs.disposeData(sharedB);
    if (at !== a) backend.disposeData(at.dataId);
    if (bt !== b) backend.disposeData(bt.dataId);
    return out;
  };
}

/**
 * Reverse as runs of contiguous copies. The stock kernel moves element by element through
 * generic index arithmetic: 6 ms for a 3×3×64×64 filter, which conv2d's input gradient flips
 * once per call.
 */
const fastReverse: KernelFunc = (args) => {
  const { inputs: { x }, attrs, backend } = args;
  const rank = x.shape.length;
  const dims = attrs.dims as number | number[];
  const axes = new Set((typeof dims === "number" ? [dims] : dims).map((d) => (d + rank) % rank));
  const out = backend.makeOutput(x.shape.slice(), x.dtype);
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  if (rank === 0 || axes.size === 0) {
    dst.set(src);
    return out;
  }
  const last = Math.max(...axes);
  const inner = sizeOf(x.shape.slice(last + 1));
  const outer = x.shape.slice(0, last + 1);
  const strides = new Array(outer.length).fill(inner);
  for (let i = outer.length - 2; i >= 0; i--) strides[i] = strides[i + 1] * outer[i + 1];
  const idx = new Array(outer.length).fill(0);
  const n = sizeOf(outer);
  for (let o = 0; o < n; o++) {
    let from = 0;
    for (let i = 0; i < outer.length; i++) {
      from += (axes.has(i) ? outer[i] - 1 - idx[i] : idx[i]) * strides[i];
    }
    if (inner === 1) dst[o] = src[from];
    else dst.set(src.subarray(from, from + inner), o * inner);
    for (let i = outer.length - 1; i >= 0; i--) {
      if (++idx[i] < outer[i]) break;
      idx[i] = 0;
    }
  }
  return out;
};

/**
 * Identity (tfjs' `clone`) as a second reference to the same data, as the cpu backend does.
 * The stock kernel copies: the engine clones every tensor a kernel saves for its gradient, so
 * a backward pass copied each saved activation once (1356 copies in the tiny UNet's forward +
 * backward at batch 2) and held both. Sharing is safe because no wasm kernel writes into its
 * inputs and a variable's `assign` replaces its data instead of overwriting it.
 */
function makeSharedIdentity(stock: KernelFunc): KernelFunc {
  return (args) => {
    const { inputs: { x }, backend } = args;
    if (x.dtype === "string") return stock(args);
    (backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
}

const BINARY = ["Add", "Sub", "Multiply", "RealDiv"];

/**
 * Broadcasting float32 Add/Sub/Multiply/RealDiv as strided loops. The stock kernels' broadcast
 * path maps every output index back to each input through division by each axis, about 180 ns
 * a value (1.5 ms for layer norm's `x − mean` on [2, 64, 64]), some 70× its same-shape path. A
 * loop over the last axis with per-input strides (0 on broadcast axes) costs a few ns a value.
 * Only operands constant along the last axis take it; the rest go to the stock kernel.
 */
function makeFastBroadcast(name: string, stock: KernelFunc): KernelFunc {
  return (args) => {
    const { inputs, backend } = args as unknown as {
      inputs: { a: HeapTensorInfo; b: HeapTensorInfo };
      backend: WasmBackendInternals;
    };
    const { a, b } = inputs;
    const same = a.shape.length === b.shape.length && a.shape.every((v, i) => v === b.shape[i]);
    if (a.dtype !== "float32" || b.dtype !== "float32" || same) {
      return stock(args as unknown as KernelArgs);
    }
    const rank = Math.max(a.shape.length, b.shape.length);
    const pad = (s: number[]) => [...Array(rank - s.length).fill(1), ...s];
    const sa = pad(a.shape);
    const sb = pad(b.shape);
    const shape = sa.map((v, i) => Math.max(v, sb[i]));
    if (shape.some((v, i) => (sa[i] !== v && sa[i] !== 1) || (sb[i] !== v && sb[i] !== 1))) {
      return stock(args as unknown as KernelArgs);
    }
    const strides = (s: number[]) => {
      const st = new Array(rank).fill(0);
      let acc = 1;
      for (let i = rank - 1; i >= 0; i--) {
        st[i] = s[i] === 1 ? 0 : acc;
        acc *= s[i];
      }
      return st;
    };
    const ta = strides(sa);
    const tb = strides(sb);
    // Only where one side is constant along the last axis (group and layer norm's statistics):
    // scalars and bias-like operands are fast in the stock kernel already.
    const sizeA = sizeOf(sa);
    const sizeB = sizeOf(sb);
    if (
      rank === 0 || sizeA === 1 || sizeB === 1 || shape[rank - 1] === 1 ||
      (ta[rank - 1] !== 0 && tb[rank - 1] !== 0)
    ) {
      return stock(args as unknown as KernelArgs);
    }
    const out = backend.makeOutput(shape, "float32");
    const x = backend.typedArrayFromHeap(a) as Float32Array;
    const y = backend.typedArrayFromHeap(b) as Float32Array;
    const z = backend.typedArrayFromHeap(out) as Float32Array;
    const last = rank === 0 ? 1 : shape[rank - 1];
    const la = rank === 0 ? 0 : ta[rank - 1];
    const lb = rank === 0 ? 0 : tb[rank - 1];
    const rows = z.length / Math.max(last, 1);
    const idx = new Array(Math.max(rank - 1, 0)).fill(0);
    let o = 0;
    for (let r = 0; r < rows; r++) {
      let ia = 0;
      let ib = 0;
      for (let i = 0; i < rank - 1; i++) {
        ia += idx[i] * ta[i];
        ib += idx[i] * tb[i];
      }
      // One loop per operation: a shared loop calling `op` would not inline it. The common
      // case (one side a per-row constant, the other contiguous) hoists the constant.
      if (la === 0 && lb === 1) {
        const c = x[ia];
        if (name === "Add") { for (let j = 0; j < last; j++) z[o + j] = c + y[ib + j]; }
        else if (name === "Sub") { for (let j = 0; j < last; j++) z[o + j] = c - y[ib + j]; }
        else if (name === "Multiply") { for (let j = 0; j < last; j++) z[o + j] = c * y[ib + j]; }
        else for (let j = 0; j < last; j++) z[o + j] = c / y[ib + j];
      } else if (la === 1 && lb === 0) {
        const c = y[ib];
        if (name === "Add") { for (let j = 0; j < last; j++) z[o + j] = x[ia + j] + c; }
        else if (name === "Sub") { for (let j = 0; j < last; j++) z[o + j] = x[ia + j] - c; }
        else if (name === "Multiply") { for (let j = 0; j < last; j++) z[o + j] = x[ia + j] * c; }
        else for (let j = 0; j < last; j++) z[o + j] = x[ia + j] / c;
      } else if (name === "Add") {
        for (let j = 0; j < last; j++) z[o + j] = x[ia + j * la] + y[ib + j * lb];
      } else if (name === "Sub") {
        for (let j = 0; j < last; j++) z[o + j] = x[ia + j * la] - y[ib + j * lb];
      } else if (name === "Multiply") {
        for (let j = 0; j < last; j++) z[o + j] = x[ia + j * la] * y[ib + j * lb];
      } else for (let j = 0; j < last; j++) z[o + j] = x[ia + j * la] / y[ib + j * lb];
      o += last;
      for (let i = rank - 2; i >= 0; i--) {
        if (++idx[i] < shape[i]) break;
        idx[i] = 0;
      }
    }
    return out;
  };
}

let installed = false;
let fastBatchMatMul = false;

/**
 * Whether the wasm BatchMatMul runs every shape on XNNPACK (see `makeFastBatchMatMul`), so
 * callers need not split batched or transposed products into 2-D ones themselves.
 *
 * @example
 * ```ts
 * import { wasmBatchMatMulIsFast } from "./_wasm_kernels.ts";
 * console.log(wasmBatchMatMulIsFast()); // true once the wasm backend is set up by useBackend
 * ```
 */
export function wasmBatchMatMulIsFast(): boolean {
  return fastBatchMatMul;
}

/**
 * Replace the wasm backend's Slice and SplitV kernels with versions whose cost is that of their
 * output (see the file comment), and BatchMatMul and Reverse with faster ones. Idempotent; call
 * after tfjs-backend-wasm has been imported.
 *
 * @example
 * ```ts
 * import "@tensorflow/tfjs-backend-wasm";
 * import { installWasmSliceKernels } from "./_wasm_kernels.ts";
 * installWasmSliceKernels();
 * ```
 */
export function installWasmSliceKernels(): void {
  if (installed) return;
  const slice = tf.getKernel("Slice", "wasm");
  const split = tf.getKernel("SplitV", "wasm");
  if (!slice || !split) return;
  const stockSlice = slice.kernelFunc as unknown as KernelFunc;
  const batchMatMul = tf.getKernel("BatchMatMul", "wasm");
  const transposeKernel = tf.getKernel("Transpose", "wasm");
  const stockSplit = split.kernelFunc as unknown as KernelFunc;
  const identity = tf.getKernel("Identity", "wasm")!;

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
    const [name, kernelFunc] of [
      ["Slice", fastSlice],
      ["SplitV", fastSplit],
      ["Reverse", fastReverse],
      ["Identity", makeSharedIdentity(identity.kernelFunc as unknown as KernelFunc)],
    ] as const
  ) {
    tf.unregisterKernel(name, "wasm");
    tf.registerKernel({
      kernelName: name,
      backendName: "wasm",
      kernelFunc: kernelFunc as unknown as tf.KernelFunc,
    });
  }
  for (const name of BINARY) {
    const k = tf.getKernel(name, "wasm");
    if (!k) continue;
    tf.unregisterKernel(name, "wasm");
    tf.registerKernel({
      kernelName: name,
      backendName: "wasm",
      setupFunc: k.setupFunc,
      kernelFunc: makeFastBroadcast(
        name,
        k.kernelFunc as unknown as KernelFunc,
      ) as unknown as tf.KernelFunc,
    });
  }
  if (batchMatMul && transposeKernel) {
    const fast = makeFastBatchMatMul(
      batchMatMul.kernelFunc as unknown as KernelFunc,
      transposeKernel.kernelFunc as unknown as KernelFunc,
    );
    tf.unregisterKernel("BatchMatMul", "wasm");
    tf.registerKernel({
      kernelName: "BatchMatMul",
      backendName: "wasm",
      // The stock kernel's setup creates its cwrap; this one makes its own per module.
      setupFunc: batchMatMul.setupFunc,
      kernelFunc: fast as unknown as tf.KernelFunc,
    });
    fastBatchMatMul = true;
  }
  installed = true;
}
