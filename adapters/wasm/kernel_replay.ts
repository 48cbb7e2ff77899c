/**
 * A region of tfjs code recorded once as the wasm kernel calls it makes, then replayed on
 * TensorInfos: the same kernel functions, in the same order, on the same inputs, without
 * tfjs' engine around each (no tensor objects, scopes, tape nodes, gradient filtering or
 * accumulation maps for the intermediates).
 *
 * Why: at batch 1 the tiny UNet's forward + backward makes about 450 kernel calls, and the
 * engine's bookkeeping around them (tensor and tape objects, scopes, the tape's filtering,
 * their garbage) was about a tenth of the call. A batch of 2 shared between two threads is
 * two such calls side by side, so that share of fixed cost set how far the per-sample time
 * stayed from a large batch's.
 *
 * A region is replayable when its kernel calls depend on its inputs' shapes only, never on
 * their values: no value is read back to JavaScript inside it, and whatever it writes from
 * JavaScript (tfjs' scalars, zeros and ones) is the same on every call, so it is kept once as
 * a constant. Every other tensor a kernel reads is an input of the region, the output of an
 * earlier call in it, or one that outlives it (a model's weights: checked alive before each
 * replay). Each output of a call holds one reference to its data (a view, such as a
 * reshape's, one more on its input's); a replay gives up its references after the last call
 * that reads the data, and hands its outputs over as tensors.
 *
 * A forward + backward is recorded from one gradient computation seeded with the output's
 * gradient: its calls up to the output are the forward, the rest the backward. The data the
 * backward reads from the forward (or from the inputs) are the forward's saved tensors.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";

type KernelFunc = (args: { inputs: unknown; backend: unknown; attrs: unknown }) =>
  | tf.TensorInfo
  | tf.TensorInfo[];

interface KernelConfigLike {
  kernelName: string;
  kernelFunc: KernelFunc;
}

/** The wasm backend's parts a replay uses. */
interface ReplayBackend {
  write(values: unknown, shape: number[], dtype: tf.DataType): object;
  readSync(dataId: object): unknown;
  read(dataId: object): unknown;
  incRef(dataId: object): void;
  disposeData(dataId: object, force?: boolean): boolean;
  dataIdMap: { get(dataId: object): { refCount: number } | undefined; has(d: object): boolean };
}

/** Where a recorded datum comes from. */
type Source =
  | { kind: "input"; index: number }
  | { kind: "external"; dataId: object }
  | { kind: "constant"; values: tf.TypedArray; shape: number[]; dtype: tf.DataType }
  | { kind: "produced" };

interface Ref {
  data: number;
  shape: number[];
  dtype: tf.DataType;
}

interface Step {
  fn: KernelFunc;
  /** The input names, or null where the kernel takes an array (Concat). */
  names: string[] | null;
  refs: Ref[];
  attrs: unknown;
  /** The data of each output, and the shape it had. */
  outs: number[];
  outShapes: number[][];
  outDtypes: tf.DataType[];
  /** References each output adds to its datum (1 for new data; a view's on its source). */
  outRefs: number[];
}

interface Recording {
  sources: Source[];
  steps: Step[];
}

/** One replayable part: steps, what to give up after each, and what to hand over at the end. */
interface Part {
  steps: Step[];
  /** After step i: the data whose references the part gives up (`held` of each). */
  releaseAfter: number[][];
  /** References the part's outputs add to each datum, by datum. */
  held: number[];
  /** The kept data (held to the end, then given up once handed over as tensors). */
  kept: number[];
  /** The last step reading each datum. */
  lastRead: Map<number, number>;
}

let recorder: Recording | null = null;
let backendInRecord: ReplayBackend | null = null;
let depth = 0;
let failure: string | null = null;
const ids = new Map<object, number>();

function dataOf(dataId: object): number {
  const known = ids.get(dataId);
  if (known !== undefined) return known;
  const rec = recorder!;
  rec.sources.push({ kind: "external", dataId });
  ids.set(dataId, rec.sources.length - 1);
  return rec.sources.length - 1;
}

function recordingWrapper(name: string, fn: KernelFunc): KernelFunc {
  return (args) => {
    // Installed only while recording; a kernel's own inner calls run as they are.
    if (depth > 0) {
      depth++;
      try {
        return fn(args);
      } finally {
        depth--;
      }
    }
    const rec = recorder!;
    const backend = args.backend as ReplayBackend;
    if (backend !== backendInRecord) failure ??= `${name} ran on another backend`;
    const inputs = args.inputs as Record<string, tf.TensorInfo> | tf.TensorInfo[];
    const isArray = Array.isArray(inputs);
    const names = isArray ? null : Object.keys(inputs);
    const list: tf.TensorInfo[] = isArray ? inputs : names!.map((n) => inputs[n]);
    const refs = list.map((t): Ref => ({
      data: dataOf(t.dataId),
      shape: [...t.shape],
      dtype: t.dtype,
    }));
    const before = list.map((t) => backend.dataIdMap.get(t.dataId)?.refCount ?? 0);
    depth++;
    let out: tf.TensorInfo | tf.TensorInfo[];
    try {
      out = fn(args);
    } finally {
      depth--;
    }
    const outList = Array.isArray(out) ? out : [out];
    const outs: number[] = [];
    const outRefs: number[] = [];
    for (const o of outList) {
      const known = ids.get(o.dataId);
      if (known === undefined) {
        rec.sources.push({ kind: "produced" });
        ids.set(o.dataId, rec.sources.length - 1);
        outs.push(rec.sources.length - 1);
        outRefs.push(1);
        if (backend.dataIdMap.get(o.dataId)?.refCount !== 1) {
          failure ??= `${name} made data with a reference count other than 1`;
        }
      } else {
        // A view of an input: the kernel added a reference to its data.
        const at = list.findIndex((t) => t.dataId === o.dataId);
        const added = at < 0 ? 0 : (backend.dataIdMap.get(o.dataId)?.refCount ?? 0) - before[at] -
          outRefs.filter((_, j) => outs[j] === known).length;
        if (added !== 1) failure ??= `${name} returned earlier data without a reference`;
        outs.push(known);
        outRefs.push(1);
      }
    }
    rec.steps.push({
      fn,
      names,
      refs,
      attrs: args.attrs && typeof args.attrs === "object" ? { ...args.attrs } : args.attrs,
      outs,
      outShapes: outList.map((o) => [...o.shape]),
      outDtypes: outList.map((o) => o.dtype),
      outRefs,
    });
    return out;
  };
}

// Record `run`'s kernel calls (made on `backend`, with `inputs` its inputs by position).
function record(backend: ReplayBackend, inputs: tf.Tensor[], run: () => void): Recording | string {
  const rec: Recording = { sources: [], steps: [] };
  ids.clear();
  for (const [i, t] of inputs.entries()) {
    if (ids.has(t.dataId)) {
      ids.clear();
      return "two inputs share their data";
    }
    rec.sources.push({ kind: "input", index: i });
    ids.set(t.dataId, i);
  }
  const configs = tf.getKernelsForBackend("wasm") as unknown as KernelConfigLike[];
  const originals = configs.map((c) => c.kernelFunc);
  const write = backend.write, readSync = backend.readSync, read = backend.read;
  recorder = rec;
  backendInRecord = backend;
  failure = null;
  for (const c of configs) c.kernelFunc = recordingWrapper(c.kernelName, c.kernelFunc);
  backend.write = function (this: ReplayBackend, values, shape, dtype) {
    const dataId = write.call(this, values, shape, dtype);
    if (depth === 0 && values == null) {
      failure ??= "data was made outside a kernel";
    } else if (depth === 0) {
      rec.sources.push({
        kind: "constant",
        values: (values as tf.TypedArray).slice(),
        shape: [...shape],
        dtype,
      });
      ids.set(dataId, rec.sources.length - 1);
    }
    return dataId;
  };
  backend.readSync = function (this: ReplayBackend, dataId) {
    if (depth === 0) failure ??= "a value was read back inside the region";
    return readSync.call(this, dataId);
  };
  backend.read = function (this: ReplayBackend, dataId) {
    if (depth === 0) failure ??= "a value was read back inside the region";
    return read.call(this, dataId);
  };
  try {
    run();
  } finally {
    for (const [i, c] of configs.entries()) c.kernelFunc = originals[i];
    // Own properties shadowing the prototype's: removing them restores the backend's own.
    delete (backend as Partial<ReplayBackend>).write;
    delete (backend as Partial<ReplayBackend>).readSync;
    delete (backend as Partial<ReplayBackend>).read;
    if (backend.write !== write) backend.write = write;
    if (backend.readSync !== readSync) backend.readSync = readSync;
    if (backend.read !== read) backend.read = read;
    recorder = null;
    backendInRecord = null;
    ids.clear();
    // Kernels registered while recording (a first use) ran unrecorded.
    if (tf.getKernelsForBackend("wasm").length !== configs.length) {
      failure ??= "kernels were registered while recording";
    }
  }
  return failure ?? rec;
}

// The part of the recording's steps [from, to): when to give each datum's references up.
function partOf(rec: Recording, from: number, to: number, keep: Set<number>): Part {
  const steps = rec.steps.slice(from, to);
  const lastRead = new Map<number, number>();
  const lastMade = new Map<number, number>();
  const held = new Array<number>(rec.sources.length).fill(0);
  for (const [i, s] of steps.entries()) {
    for (const r of s.refs) lastRead.set(r.data, i);
    for (const [j, d] of s.outs.entries()) {
      held[d] += s.outRefs[j];
      lastMade.set(d, i);
    }
  }
  // A datum's references (this part's outputs of it) go after its last read here, or right
  // after it is made if nothing later reads it; kept data keep theirs to the end.
  const releaseAfter: number[][] = steps.map(() => []);
  const kept: number[] = [];
  for (const [d, at] of lastMade) {
    if (keep.has(d)) kept.push(d);
    else releaseAfter[Math.max(at, lastRead.get(d) ?? -1)].push(d);
  }
  return { steps, releaseAfter, held, kept, lastRead };
}

/**
 * A recorded region: {@linkcode KernelReplay.forward} runs it for new inputs of the same
 * shapes; a region recorded with its gradient also {@linkcode KernelReplay.backward}.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { KernelReplay } from "./kernel_replay.ts";
 * const w = tf.ones([4, 4]);
 * const r = KernelReplay.recordForward([tf.ones([2, 4])], ([x]) => tf.matMul(x, w).relu());
 * const y = typeof r === "string" ? null : r.forward([tf.ones([2, 4])]);
 * ```
 */
export class KernelReplay {
  readonly #backend: ReplayBackend;
  readonly #sources: Source[];
  readonly #forward: Part;
  readonly #backward: Part | null;
  readonly #output: Ref;
  readonly #gradient: Ref | null;
  /** What the backward reads from the forward or the inputs, in save order. */
  readonly #saved: Ref[];
  /** The gradient's seed: an input of the recording, after the region's own. */
  readonly #seed: number;
  /** Constants' data, written once; externals' data ids (checked alive). */
  readonly #fixed: (object | null)[];
  readonly #externals: object[];
  /** After backward step i: the saved tensors (by index) nothing later reads. */
  readonly #savedDoneAfter: number[][];
  #disposed = false;

  private constructor(
    backend: ReplayBackend,
    rec: Recording,
    forwardSteps: number,
    output: number,
    gradient: number,
    seed: number,
  ) {
    this.#backend = backend;
    this.#sources = rec.sources;
    this.#seed = seed;
    // The datum as the last of the steps [from, to) that made it left it.
    const refOf = (d: number, from: number, to: number): Ref => {
      for (let k = to - 1; k >= from; k--) {
        const st = rec.steps[k];
        const j = st.outs.lastIndexOf(d);
        if (j >= 0) return { data: d, shape: st.outShapes[j], dtype: st.outDtypes[j] };
      }
      for (const st of rec.steps) {
        const r = st.refs.find((x) => x.data === d);
        if (r) return r;
      }
      throw new Error("KernelReplay: a datum neither made nor read");
    };
    this.#output = refOf(output, 0, forwardSteps);
    this.#gradient = gradient >= 0 ? refOf(gradient, forwardSteps, rec.steps.length) : null;
    const backwardReads = new Set<number>();
    const madeInBackward = new Set<number>();
    for (const st of rec.steps.slice(forwardSteps)) {
      for (const r of st.refs) if (!madeInBackward.has(r.data)) backwardReads.add(r.data);
      for (const d of st.outs) madeInBackward.add(d);
    }
    // Read back there as the forward left it: its own data, and the region's inputs.
    this.#saved = gradient < 0 ? [] : [...backwardReads].filter((d) => {
      const src = rec.sources[d];
      return src.kind === "produced" || (src.kind === "input" && src.index !== seed);
    }).sort((a, b) => a - b).map((d) => refOf(d, 0, forwardSteps));
    this.#forward = partOf(
      rec,
      0,
      forwardSteps,
      new Set([output, ...this.#saved.map((r) => r.data)]),
    );
    this.#backward = gradient >= 0
      ? partOf(rec, forwardSteps, rec.steps.length, new Set([gradient]))
      : null;
    this.#savedDoneAfter = (this.#backward?.steps ?? []).map(() => []);
    for (const [k, r] of this.#saved.entries()) {
      this.#savedDoneAfter[this.#backward!.lastRead.get(r.data)!].push(k);
    }
    this.#fixed = rec.sources.map((src) => {
      if (src.kind === "constant") return backend.write(src.values, src.shape, src.dtype);
      if (src.kind === "external") return src.dataId;
      return null;
    });
    this.#externals = rec.sources.flatMap((src) => src.kind === "external" ? [src.dataId] : []);
  }

  /**
   * Record `region` (tensors in, one tensor out) run on `inputs`, for forwards without a
   * gradient. A string says why it cannot be replayed.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import { KernelReplay } from "./kernel_replay.ts";
   * const r = KernelReplay.recordForward([tf.ones([2])], ([x]) => x.square());
   * console.log(typeof r === "string" ? r : "recorded");
   * ```
   */
  static recordForward(
    inputs: tf.Tensor[],
    region: (inputs: tf.Tensor[]) => tf.Tensor,
  ): KernelReplay | string {
    const backend = tf.backend() as unknown as ReplayBackend;
    let out = -1;
    const rec = record(backend, inputs, () => {
      const y = tf.tidy(() => region(inputs));
      out = ids.get(y.dataId) ?? -1;
      y.dispose();
    });
    if (typeof rec === "string") return rec;
    if (out < 0 || rec.sources[out].kind !== "produced") return "the output is not made inside";
    return new KernelReplay(backend, rec, rec.steps.length, out, -1, -1);
  }

  /**
   * Record `region` with its gradient into its last input (the others take none), seeded
   * with `dy`, the output's gradient. A string says why it cannot be replayed.
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import { KernelReplay } from "./kernel_replay.ts";
   * const r = KernelReplay.recordGradient([tf.ones([2])], ([s]) => s.square(), tf.ones([2]));
   * console.log(typeof r === "string" ? r : "recorded");
   * ```
   */
  static recordGradient(
    inputs: tf.Tensor[],
    region: (inputs: tf.Tensor[]) => tf.Tensor,
    dy: tf.Tensor,
  ): KernelReplay | string {
    const backend = tf.backend() as unknown as ReplayBackend;
    const last = inputs.length - 1;
    let out = -1, grad = -1, forwardSteps = -1;
    const rec = record(backend, [...inputs, dy], () => {
      // A pass of its own even inside a caller's gradient: a nested pass would add its nodes,
      // and keep their saved tensors, on the caller's tape until that pass ends.
      const state = (tf.engine() as unknown as {
        state: { gradientDepth: number; activeTape: unknown[] | null };
      }).state;
      const outer = { depth: state.gradientDepth, tape: state.activeTape };
      state.gradientDepth = 0;
      state.activeTape = null;
      try {
        const g = tf.grad((s: tf.Tensor) => {
          const y = region([...inputs.slice(0, last), s]);
          out = ids.get(y.dataId) ?? -1;
          forwardSteps = recorder!.steps.length;
          return y;
        })(inputs[last], dy);
        grad = ids.get(g.dataId) ?? -1;
        g.dispose();
      } finally {
        state.gradientDepth = outer.depth;
        state.activeTape = outer.tape;
      }
    });
    if (typeof rec === "string") return rec;
    if (out < 0 || rec.sources[out].kind !== "produced") return "the output is not made inside";
    if (grad < 0 || rec.sources[grad].kind !== "produced") {
      return "the gradient is not made inside";
    }
    return new KernelReplay(backend, rec, forwardSteps, out, grad, inputs.length);
  }

  /**
   * Whether the backend and every tensor from outside the region are still there.
   *
   * @example
   * ```ts
   * import type { KernelReplay } from "./kernel_replay.ts";
   * declare const r: KernelReplay;
   * console.log(r.usable());
   * ```
   */
  usable(): boolean {
    if (this.#disposed || (tf.backend() as unknown) !== this.#backend) return false;
    for (const d of this.#externals) if (!this.#backend.dataIdMap.has(d)) return false;
    return true;
  }

  /**
   * How many tensors the forward hands its backward.
   *
   * @example
   * ```ts
   * import type { KernelReplay } from "./kernel_replay.ts";
   * declare const r: KernelReplay;
   * console.log(r.savedCount);
   * ```
   */
  get savedCount(): number {
    return this.#saved.length;
  }

  /**
   * How many kernel calls a forward and a backward replay.
   *
   * @example
   * ```ts
   * import type { KernelReplay } from "./kernel_replay.ts";
   * declare const r: KernelReplay;
   * console.log(r.kernelCalls);
   * ```
   */
  get kernelCalls(): { forward: number; backward: number } {
    return { forward: this.#forward.steps.length, backward: this.#backward?.steps.length ?? 0 };
  }

  #run(part: Part, data: (object | null)[], done?: (step: number) => void): void {
    const backend = this.#backend;
    for (const [i, st] of part.steps.entries()) {
      const infos = st.refs.map((r) => ({ dataId: data[r.data]!, shape: r.shape, dtype: r.dtype }));
      let inputs: unknown = infos;
      if (st.names !== null) {
        const named: Record<string, tf.TensorInfo> = {};
        for (const [j, n] of st.names.entries()) named[n] = infos[j];
        inputs = named;
      }
      const out = st.fn({ inputs, backend, attrs: st.attrs });
      const list = Array.isArray(out) ? out : [out];
      for (const [j, d] of st.outs.entries()) {
        const o = list[j];
        const shape = st.outShapes[j];
        if (o.shape.length !== shape.length || o.shape.some((v, k) => v !== shape[k])) {
          throw new Error(
            `KernelReplay: call ${i} gave [${o.shape}] where [${shape}] was recorded`,
          );
        }
        data[d] = o.dataId;
      }
      for (const d of part.releaseAfter[i]) {
        for (let k = 0; k < part.held[d]; k++) backend.disposeData(data[d]!);
      }
      done?.(i);
    }
  }

  // A tensor of its own reference to the datum.
  #tensor(data: (object | null)[], r: Ref): tf.Tensor {
    const dataId = data[r.data]!;
    this.#backend.incRef(dataId);
    return tf.engine().makeTensorFromTensorInfo(
      { dataId, shape: r.shape, dtype: r.dtype },
      this.#backend as unknown as tf.KernelBackend,
    );
  }

  #giveUpKept(part: Part, data: (object | null)[]): void {
    for (const d of part.kept) {
      for (let k = 0; k < part.held[d]; k++) this.#backend.disposeData(data[d]!);
    }
  }

  /**
   * The region's output for `inputs` (the recorded shapes), and, for a region recorded with
   * its gradient, the tensors its backward needs (to be saved with it).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { KernelReplay } from "./kernel_replay.ts";
   * declare const r: KernelReplay;
   * const { output, saved } = r.forward([tf.ones([2])]);
   * tf.dispose([output, ...saved]);
   * ```
   */
  forward(inputs: tf.Tensor[]): { output: tf.Tensor; saved: tf.Tensor[] } {
    const data = [...this.#fixed];
    for (const [d, src] of this.#sources.entries()) {
      if (src.kind === "input" && src.index !== this.#seed) data[d] = inputs[src.index].dataId;
    }
    this.#run(this.#forward, data);
    const output = this.#tensor(data, this.#output);
    const saved = this.#saved.map((r) => this.#tensor(data, r));
    this.#giveUpKept(this.#forward, data);
    return { output, saved };
  }

  /**
   * The gradient into the region's last input, from the output's gradient `dy` and the
   * tensors {@linkcode KernelReplay.forward} returned as `saved` (or clones of them).
   *
   * @example
   * ```ts
   * import * as tf from "@tensorflow/tfjs";
   * import type { KernelReplay } from "./kernel_replay.ts";
   * declare const r: KernelReplay;
   * const { output, saved } = r.forward([tf.ones([2])]);
   * const g = r.backward(tf.onesLike(output), saved);
   * ```
   */
  backward(dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor {
    const part = this.#backward;
    if (!part || !this.#gradient) throw new Error("KernelReplay: recorded without its gradient");
    const data = [...this.#fixed];
    for (const [d, src] of this.#sources.entries()) {
      if (src.kind === "input" && src.index === this.#seed) data[d] = dy.dataId;
    }
    for (const [k, r] of this.#saved.entries()) data[r.data] = saved[k].dataId;
    // A saved tensor is the backward's alone (tfjs disposes it after the gradient): freed as
    // soon as nothing later reads it, as tfjs' own pass frees a node's saved tensors (see
    // core/_tape_memory.ts), not all at the end.
    this.#run(part, data, (i) => {
      for (const k of this.#savedDoneAfter[i]) saved[k].dispose();
    });
    const g = this.#tensor(data, this.#gradient);
    this.#giveUpKept(part, data);
    return g;
  }

  /**
   * Free the constants the recording keeps.
   *
   * @example
   * ```ts
   * import type { KernelReplay } from "./kernel_replay.ts";
   * declare const r: KernelReplay;
   * r.dispose();
   * ```
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const [d, src] of this.#sources.entries()) {
      if (src.kind === "constant") this.#backend.disposeData(this.#fixed[d]!);
    }
  }
}
