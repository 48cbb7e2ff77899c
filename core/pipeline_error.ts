/**
 * `PipelineError`: every problem found in a pipeline file, one `path: message` line each.
 *
 * @module
 */

/**
 * One problem in a pipeline, at a path such as `train.epochs` or `rewards[0].options.quality`.
 *
 * @example
 * ```ts
 * import type { PipelineIssue } from "@texforce/core";
 * const issue: PipelineIssue = { path: "model", message: "/models/sd15: model folder not found" };
 * ```
 */
export interface PipelineIssue {
  /** Dotted path with bracketed indices (`rewards[0].use`); `""` for the whole file. */
  path: string;
  /** What is wrong and what was expected. */
  message: string;
}

/**
 * An invalid pipeline. The message names the file and has one `path: message` line per problem;
 * `issues` holds the same problems as data.
 *
 * @example
 * ```ts
 * import { PipelineError } from "@texforce/core";
 * const e = new PipelineError("pipeline.yaml", [{ path: "train.epochs", message: "expected number" }]);
 * console.log(e.message);
 * // pipeline.yaml: invalid pipeline
 * //   train.epochs: expected number
 * ```
 */
export class PipelineError extends Error {
  /** The pipeline file (or another description of where the config came from). */
  readonly file: string;
  /** Every problem found. */
  readonly issues: PipelineIssue[];
  /** Builds the error from its problems. */
  constructor(file: string, issues: PipelineIssue[]) {
    const lines = issues.map((i) => `  ${i.path || "(top level)"}: ${i.message}`);
    super(`${file}: invalid pipeline\n${lines.join("\n")}`);
    this.name = "PipelineError";
    this.file = file;
    this.issues = issues;
  }
}
