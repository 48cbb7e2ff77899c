// Release tfjs 4.22's backward-pass tensors as soon as they are used, instead of at the end.
//
// `engine.gradients` walks the tape backward inside one tidy, and `backpropagateGradients`
// never disposes the gradient of a node's outputs after the node has pushed it to its inputs,
// nor the tensors the node saved for its gradient: every intermediate gradient and every saved
// activation of the whole pass stays allocated until the pass returns. The tiny UNet's forward +
// backward at batch 8 peaked at 1.3 GiB that way (2.5 GiB at 16; at 32 the wasm heap ran out).
//
// Processing a node is the last use of its output gradients and of its saved tensors: each
// tensor is the output of one node, and the tape is walked in reverse order of creation. So
// when the next node's gradient is asked for, the previous node's output gradients and saved
// tensors are disposed, except
// - a gradient one of that node's own input gradients returned as is (a pass-through: it is now
//   the input's gradient);
// - tensors made before the pass began (a caller's `dy`) or kept;
// - everything in passes nested in a forward function (`gradientDepth` > 0: the tape is shared
//   with an outer pass, whose own walk needs those tensors), which run as stock tfjs does.
// A gradient function that calls `tf.grad` itself (recomputation) starts a pass of its own and
// has its own bookkeeping.
import * as tf from "@tensorflow/tfjs";

interface TapeNodeLike {
  gradient?: (dys: tf.Tensor[]) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

interface EngineLike {
  state: {
    gradientDepth: number;
    activeTape: TapeNodeLike[] | null;
    tensorInfo: Map<object, { backend: { incRef?: (dataId: object) => void } }>;
  };
  backendName: string;
  backend: unknown;
  clone(t: tf.Tensor): tf.Tensor;
  makeTensorFromTensorInfo(
    info: { dataId: object; shape: number[]; dtype: tf.DataType },
    backend: unknown,
  ): tf.Tensor;
  addTapeNode(...args: unknown[]): void;
  gradients(...args: unknown[]): unknown;
  constructor: { nextTensorId: number };
}

/** One backward pass's bookkeeping. */
interface Pass {
  /** Tensors with an id from here on were made during the pass. */
  firstId: number;
  /** How often input-gradient functions of this pass returned each tensor. */
  returns: Map<tf.Tensor, number>;
  /** Output gradients of the node processed last, to dispose once the walk moves on. */
  dys: tf.Tensor[];
  /** Its saved tensors (engine-made clones, used by nothing else). */
  saved: tf.Tensor[];
  /** Its input gradients: a pass-through gradient lives on as one of them. */
  returned: Set<tf.Tensor>;
}

/** Innermost pass last; `null` for a pass nested in a forward function (left as tfjs does). */
const passes: (Pass | null)[] = [];
let installed = false;

function flush(pass: Pass): void {
  for (const t of pass.dys) {
    if (!t.isDisposed && !pass.returned.has(t) && !(t as { kept?: boolean }).kept) t.dispose();
  }
  for (const t of pass.saved) if (!t.isDisposed) t.dispose();
  pass.dys = [];
  pass.saved = [];
  pass.returned = new Set();
}

/**
 * Patch the tfjs engine so that a backward pass frees each node's output gradients and saved
 * tensors once the node is done (see the file comment). Idempotent.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { installTapeMemoryRelease } from "./_tape_memory.ts";
 * installTapeMemoryRelease();
 * const g = tf.grad((x: tf.Tensor) => x.square().sum())(tf.ones([4]));
 * ```
 */
export function installTapeMemoryRelease(): void {
  if (installed) return;
  const engine = tf.engine() as unknown as EngineLike;
  const addTapeNode = engine.addTapeNode;
  const gradients = engine.gradients;

  engine.addTapeNode = function (this: EngineLike, ...args: unknown[]): void {
    addTapeNode.apply(this, args);
    const tape = this.state.activeTape;
    const node = tape?.[tape.length - 1];
    const grad = node?.gradient;
    if (!node || !grad) return;
    const saved = node.saved ?? [];
    node.gradient = (dys: tf.Tensor[]) => {
      const pass = passes[passes.length - 1];
      if (!pass) return grad(dys);
      flush(pass);
      const thunks = grad(dys);
      // A gradient handed to two inputs (returned twice) lives on in the other: keep it. So do a
      // caller's dy (made before the pass) and null entries (tfjs fills zeros inside `grad`).
      pass.dys = dys.filter((t): t is tf.Tensor =>
        t != null && t.id >= pass.firstId && (pass.returns.get(t) ?? 0) <= 1
      );
      pass.saved = saved;
      const wrapped: Record<string, () => tf.Tensor> = {};
      for (const [name, thunk] of Object.entries(thunks)) {
        wrapped[name] = () => {
          const dx = thunk();
          pass.returned.add(dx);
          pass.returns.set(dx, (pass.returns.get(dx) ?? 0) + 1);
          return dx;
        };
      }
      return wrapped;
    };
  };

  // Tensors a kernel or a custom gradient saves for its gradient are clones made by
  // `engine.clone` (saveTensorsForBackwardMode and customGrad's save): a tfjs op each (an
  // Identity kernel and a tape node of its own), 1356 + 316 of them in the tiny UNet's forward +
  // backward at batch 2. On wasm (whose kernels never write into their inputs, and whose
  // Identity already shares data) such a clone is made directly as a second reference to the
  // same data: no kernel, no tape node (a saved tensor only feeds its node's gradient function).
  const clone = engine.clone;
  engine.clone = function (this: EngineLike, t: tf.Tensor): tf.Tensor {
    if (this.backendName !== "wasm") return clone.call(this, t);
    const info = this.state.tensorInfo.get(t.dataId);
    if (
      !info || info.backend !== this.backend || t.dtype === "string" ||
      typeof info.backend.incRef !== "function"
    ) {
      return clone.call(this, t);
    }
    info.backend.incRef(t.dataId);
    return this.makeTensorFromTensorInfo(
      { dataId: t.dataId, shape: t.shape, dtype: t.dtype },
      info.backend,
    );
  };

  engine.gradients = function (this: EngineLike, ...args: unknown[]): unknown {
    const pass: Pass | null = this.state.gradientDepth !== 0 ? null : {
      firstId: this.constructor.nextTensorId,
      returns: new Map(),
      dys: [],
      saved: [],
      returned: new Set(),
    };
    passes.push(pass);
    try {
      return gradients.apply(this, args);
    } finally {
      passes.pop();
    }
  };
  installed = true;
}
