// Every tensor the wasm backend makes gets a shape array of one elements kind.
//
// V8 stores an array's elements in one of several kinds. Most of tfjs' shape arrays are "holey"
// (HOLEY_SMI_ELEMENTS: made as `new Array(rank)`, or copied from one that was), while array
// literals and spreads, in many of texforce's kernels, start packed. Both kinds reach the same
// hot functions (tfjs' `sizeFromShape`, the wasm backend's `move`), and there V8 optimised, met
// the other kind ("wrong map"), deoptimised and optimised again, once or twice per call for as
// long as a program ran: the small UNet of tests/fixtures at batch 1 deoptimised `sizeFromShape`
// 92–98 times and `move` 63–68 times in 100 forward + backward calls (`--trace-deopt`), and
// V8's compiler threads took 21–22 % of a core beside the calling thread doing it (perf, steady
// state), cores that sample workers and wasm threads need. With one kind: 2–7 and 0
// deoptimisations, the compiler threads' share 15–17 %, calls 3 % faster (median of 8 paired
// runs; 4–9 % in single pairs).
//
// The kind is holey because that is what tfjs makes: a copy into `new Array(n)` stays holey
// whatever V8 does, where a packed copy does not stay packed (an optimised `[]` filled by pushes
// comes out holey, and literals become holey once their allocation site has seen holey arrays).
// So the backend's two entry points that record a new tensor's shape, `makeOutput` and `move`,
// record such a copy; values and every other behaviour are unchanged.
// `TEXFORCE_UNIFORM_SHAPES=off` leaves them as tfjs has them (for comparing).

/** The wasm backend's two methods that take a new tensor's shape. */
interface ShapeTakingBackend {
  makeOutput(shape: number[], dtype: string, memoryOffset?: number, values?: unknown): unknown;
  move(
    dataId: object,
    values: unknown,
    shape: number[],
    dtype: string,
    refCount: number,
  ): unknown;
}

const PATCHED = Symbol.for("texforce.uniformShapes");

/**
 * A copy of `shape` in the one elements kind (holey small integers; see the file comment).
 *
 * @example
 * ```ts
 * import { uniformShape } from "./_uniform_shapes.ts";
 * console.log(uniformShape([2, 77, 32])); // [2, 77, 32]
 * ```
 */
export function uniformShape(shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let i = 0; i < shape.length; i++) out[i] = shape[i];
  return out;
}

function wanted(): boolean {
  try {
    return Deno.env.get("TEXFORCE_UNIFORM_SHAPES")?.trim().toLowerCase() !== "off";
  } catch {
    return true; // no env permission: the default
  }
}

/**
 * Make the wasm backend `backend` (its class, so every instance, including a restarted one)
 * record shapes in one elements kind (see the file comment). Idempotent; returns whether the
 * class is patched.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { installUniformShapes } from "./_uniform_shapes.ts";
 * console.log(installUniformShapes(tf.backend()));
 * ```
 */
export function installUniformShapes(backend: unknown): boolean {
  const proto = Object.getPrototypeOf(backend) as ShapeTakingBackend & { [PATCHED]?: true };
  if (proto[PATCHED]) return true;
  if (typeof proto.makeOutput !== "function" || typeof proto.move !== "function") return false;
  if (!wanted()) return false;
  const { makeOutput, move } = proto;
  proto.makeOutput = function (shape, dtype, memoryOffset, values) {
    return makeOutput.call(this, uniformShape(shape), dtype, memoryOffset, values);
  };
  proto.move = function (dataId, values, shape, dtype, refCount) {
    return move.call(this, dataId, values, uniformShape(shape), dtype, refCount);
  };
  proto[PATCHED] = true;
  return true;
}
