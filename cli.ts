/**
 * The texforce command line: `deno task texforce <command>` in a checkout, or
 * `deno run -A jsr:@texforce/core/cli <command>`.
 *
 * Commands: `run`, `validate`, `generate`, `export`, `inspect`. Exit codes: 0 ok, 1 the command
 * failed, 2 usage or validation error (printed without a stack trace), 130 interrupted.
 *
 * @example
 * ```ts
 * import { main } from "@texforce/core/cli";
 * Deno.exitCode = await main(["validate", "examples/tiny_brightness.yaml"]);
 * ```
 *
 * @module
 */
import { EXIT, reportError } from "./cli/_args.ts";
import { exportCommand } from "./cli/export.ts";
import { generateCommand } from "./cli/generate.ts";
import { inspectCommand } from "./cli/inspect.ts";
import { runCommand } from "./cli/run.ts";
import { validateCommand } from "./cli/validate.ts";

export { definePipeline } from "./cli/define_pipeline.ts";
export { exportCommand, generateCommand, inspectCommand, runCommand, validateCommand };
export { formatModelSummary, inspectModel } from "./cli/inspect.ts";
export { exportCheckpoint } from "./cli/export.ts";
export type {
  /** One component of a model folder. */
  ComponentSummary,
  /** What `texforce inspect` reports. */
  ModelSummary,
  /** Weights of one component. */
  WeightsSummary,
} from "./cli/inspect.ts";

/**
 * The version printed by `texforce --version`.
 *
 * @example
 * ```ts
 * import { VERSION } from "@texforce/core/cli";
 * console.log(VERSION);
 * ```
 */
export const VERSION = "0.1.0";

const HELP: string =
  `texforce ${VERSION}: fine-tune Stable Diffusion's text encoder with RL (TexForce)

Usage: texforce <command> [options]

Commands:
  run <pipeline>       Validate a pipeline file and train it (--dry-run: the plan and its cost)
  validate <pipeline>  Check a pipeline and print it normalised
  generate             Generate images with and without LoRA adapters, side by side
  export <checkpoint>  Export a trained LoRA (peft, diffusers, kohya, merged)
  inspect <path>       Summarise a model folder, or say which loaders read an export

Options:
  -h, --help     Show help (also: texforce <command> --help)
  -V, --version  Show the version

Exit codes: 0 ok, 1 the command failed, 2 usage or validation error, 130 interrupted.
Set TEXFORCE_DEBUG=1 to print stack traces of failures.
`;

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  run: runCommand,
  validate: validateCommand,
  generate: generateCommand,
  export: exportCommand,
  inspect: inspectCommand,
};

/**
 * Run the command line with `args` (without the program name); returns the exit code.
 *
 * @example
 * ```ts
 * import { main } from "@texforce/core/cli";
 * const code = await main(["inspect", "tests/fixtures/sd-tiny/tiny-sd"]);
 * ```
 */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  if (command === undefined || command === "-h" || command === "--help" || command === "help") {
    if (command === "help" && rest[0] && rest[0] in COMMANDS) return main([rest[0], "--help"]);
    console.log(HELP.trimEnd());
    return command === undefined ? EXIT.usage : EXIT.ok;
  }
  if (command === "-V" || command === "--version") {
    console.log(`texforce ${VERSION}`);
    return EXIT.ok;
  }
  const run = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (!run) {
    console.error(
      `texforce: unknown command '${command}' (expected ${Object.keys(COMMANDS).join(", ")})`,
    );
    console.error("Run 'texforce --help' for usage.");
    return EXIT.usage;
  }
  try {
    return await run(rest);
  } catch (e) {
    return reportError(e);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
