/**
 * `texforce validate <pipeline>`: check a pipeline without loading model weights and print it
 * normalised (every default filled in, every path absolute) as YAML.
 *
 * @module
 */
import { stringify } from "yaml";
import { loadPipeline } from "../core/pipeline.ts";
import { boolFlag, EXIT, listFlag, parseCommandArgs, positionals, reportError } from "./_args.ts";

/** Help of `texforce validate`. */
const VALIDATE_HELP: string = `Usage: texforce validate <pipeline> [options]

Check a pipeline file (schema, model folder, plugins and their options, prompts) without loading
model weights, then print it normalised as YAML (or report every problem with its path).

Options:
  --set <key=value>   Override a value before validation (repeatable)
  --skip-model-check  Do not check the model folder (e.g. on a machine without the weights)
  --json              Print JSON instead of YAML
  -h, --help          Show this help

Exit codes: 0 valid, 2 invalid or usage error.
`;

/**
 * Run `texforce validate` with its arguments (after `validate`); returns the exit code.
 *
 * @example
 * ```ts
 * import { validateCommand } from "@texforce/core/cli";
 * Deno.exitCode = await validateCommand(["examples/tiny_brightness.yaml"]);
 * ```
 */
export async function validateCommand(args: string[]): Promise<number> {
  try {
    const p = parseCommandArgs("validate", args, {
      set: { type: "string", multiple: true, short: "s" },
      "skip-model-check": { type: "boolean" },
      json: { type: "boolean" },
    });
    if (boolFlag(p, "help")) {
      console.log(VALIDATE_HELP.trimEnd());
      return EXIT.ok;
    }
    const [file] = positionals("validate", p, ["pipeline"]);
    const pipeline = await loadPipeline(file, {
      set: listFlag(p, "set"),
      checkModel: !boolFlag(p, "skip-model-check"),
    });
    if (boolFlag(p, "json")) console.log(JSON.stringify(pipeline, null, 2));
    else console.log(stringify(pipeline).trimEnd());
    console.error(`${file}: valid`);
    return EXIT.ok;
  } catch (e) {
    return reportError(e);
  }
}
