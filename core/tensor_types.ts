/**
 * Names for the tfjs and zod types in texforce's public API, so users (and `deno doc`) can refer
 * to them without importing tfjs or zod themselves.
 *
 * @module
 */
import type * as tf from "@tensorflow/tfjs";

/** A tfjs tensor of any rank. */
export type Tensor = tf.Tensor;
/** A rank-1 tfjs tensor. */
export type Tensor1D = tf.Tensor1D;
/** A rank-2 tfjs tensor. */
export type Tensor2D = tf.Tensor2D;
/** A rank-3 tfjs tensor. */
export type Tensor3D = tf.Tensor3D;
/** A rank-4 tfjs tensor (images and latents are NHWC). */
export type Tensor4D = tf.Tensor4D;
/** A rank-5 tfjs tensor. */
export type Tensor5D = tf.Tensor5D;
/** A trainable tfjs variable. */
export type Variable = tf.Variable;
/** A tfjs model loader (`tf.io.IOHandler`). */
export type IOHandler = tf.io.IOHandler;
/** A loaded tfjs graph model. */
export type GraphModel = tf.GraphModel;
/** One problem found by a {@linkcode Schema}. */
export interface SchemaIssue {
  /** Path of the offending value. */
  path: PropertyKey[];
  /** What is wrong. */
  message: string;
}

/** The result of {@linkcode Schema.safeParse}. */
export type SchemaResult<T> =
  | { success: true; data: T }
  | { success: false; error: { issues: SchemaIssue[] } };

/** An options schema: any zod schema (`z.strictObject({...})`) fits. */
export interface Schema<T> {
  /** Validate and normalise `data`. */
  safeParse(data: unknown): SchemaResult<T>;
}
/** A rank-0 tfjs tensor. */
export type Scalar = tf.Scalar;
/** Tensors by name (gradients). */
export type NamedTensorMap = tf.NamedTensorMap;
