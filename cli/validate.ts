/**
 * `texforce validate <pipeline>`: check a pipeline without loading model weights and print it
 * normalised (every default filled in, every path absolute) as YAML.
 *
 * @module
 */
import { stringify } from "yaml";
import { loadPipeline } from "../builtin_plugins.ts";
import { PipelineError } from "../core/pipeline_error.ts";
import { holdsRun, preflightRunFolder, RunFolderError } from "../core/run_folder.ts";
import { boolFlag, EXIT, listFlag, parseCommandArgs, positionals, reportError } from "./_args.ts";

/** Help of `texforce validate`. */
const VALIDATE_HELP: string = `Usage: texforce validate <pipeline> [options]

Check a pipeline file (schema, model folder: configs, tokenizer files and safetensors headers,
plugins and their options and files, prompts, output folder) without loading model weights,
then print it normalised as YAML (or report every problem with its path).

Plugin modules inside the pipeline's folder are imported; any other (a path outside it, an
https: URL, npm: or jsr:) only with consent: --allow-plugin or a texforce.allow file beside the
pipeline. What would be imported is printed before anything is.

Options:
  --set <key=value>   Override a value before validation (repeatable)
  --allow-plugin <specifier>
                      Consent to import this plugin module (repeatable)
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
      "allow-plugin": { type: "string", multiple: true },
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
      allowPlugins: listFlag(p, "allow-plugin"),
      onImport: (line) => console.error(line),
    });
    // The output folder as `run` will find it (nothing is written).
    try {
      await preflightRunFolder(pipeline, { resume: true });
      if (await holdsRun(pipeline.output.dir) && !pipeline.checkpoint.resume) {
        console.error(
          `note: output.dir ${pipeline.output.dir} already holds a run: 'run' needs --resume ` +
            "(or another output.dir)",
        );
      }
    } catch (e) {
      if (!(e instanceof RunFolderError)) throw e;
      if (!e.message.startsWith("output.dir: ")) console.error(`note: ${e.message}`);
      else throw new PipelineError(file, [{ path: "output.dir", message: e.message.slice(12) }]);
    }
    if (boolFlag(p, "json")) console.log(JSON.stringify(pipeline, null, 2));
    else console.log(stringify(pipeline).trimEnd());
    console.error(`${file}: valid`);
    return EXIT.ok;
  } catch (e) {
    return reportError(e);
  }
}
