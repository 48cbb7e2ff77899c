/**
 * `texforce run <pipeline>`: validate a pipeline and train it; Ctrl-C stops cleanly.
 *
 * @module
 */
import { builtinRegistry } from "../builtin_plugins.ts";
import { loadPipeline } from "../core/pipeline.ts";
import { boolFlag, EXIT, listFlag, parseCommandArgs, positionals, reportError } from "./_args.ts";

/** Help of `texforce run`. */
const RUN_HELP: string = `Usage: texforce run <pipeline> [options]

Validate a pipeline file (.yaml, .yml, .json or .ts) and train it.

Options:
  --set <key=value>  Override a pipeline value before validation (repeatable), e.g.
                     --set train.epochs=3 --set sampler.guidance=7.5 --set rewards.0.weight=2
  --resume           Resume from the latest checkpoint in output.dir
  -q, --quiet        Print only the result
  -h, --help         Show this help

Ctrl-C stops the run after the current step (a second Ctrl-C exits at once).
Exit codes: 0 done, 1 the run failed, 2 usage or validation error, 130 interrupted.
`;

/**
 * Run `texforce run` with its arguments (after `run`); returns the exit code.
 *
 * @example
 * ```ts
 * import { runCommand } from "@texforce/core/cli";
 * Deno.exitCode = await runCommand(["examples/tiny_brightness.yaml", "--set", "train.epochs=1"]);
 * ```
 */
export async function runCommand(args: string[]): Promise<number> {
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts > 1) {
      console.error("interrupted again: exiting now");
      Deno.exit(EXIT.interrupted);
    }
    console.error("interrupt: stopping after the current step (Ctrl-C again to exit now)");
    controller.abort(new DOMException("interrupted by Ctrl-C", "AbortError"));
  };
  let listening = false;
  let file = "<pipeline>";
  try {
    const p = parseCommandArgs("run", args, {
      set: { type: "string", multiple: true, short: "s" },
      resume: { type: "boolean" },
      quiet: { type: "boolean", short: "q" },
    });
    if (boolFlag(p, "help")) {
      console.log(RUN_HELP.trimEnd());
      return EXIT.ok;
    }
    [file] = positionals("run", p, ["pipeline"]);
    const quiet = boolFlag(p, "quiet");
    const pipeline = await loadPipeline(file, { set: listFlag(p, "set") });
    const registry = builtinRegistry();
    const { train } = await import("../core/trainer.ts");
    try {
      Deno.addSignalListener("SIGINT", onSigint);
      listening = true;
    } catch { /* signals unsupported here: Ctrl-C kills the process */ }
    const result = await train(pipeline, {
      registry,
      signal: controller.signal,
      resume: boolFlag(p, "resume") || pipeline.checkpoint.resume,
      onProgress: quiet ? undefined : (e) => {
        console.error(`[epoch ${e.epoch} step ${e.step}] ${e.phase}: ${e.message}`);
      },
      log: quiet ? undefined : (line) => console.error(line),
    });
    if (result.interrupted || controller.signal.aborted) {
      console.error(`interrupted; resume with: texforce run ${file} --resume`);
      console.log(`output: ${result.outputDir}\ncheckpoint: ${result.checkpoint}`);
      return EXIT.interrupted;
    }
    console.log(`output: ${result.outputDir}\ncheckpoint: ${result.checkpoint}`);
    return EXIT.ok;
  } catch (e) {
    if (controller.signal.aborted) {
      console.error(`interrupted (${(e as Error).message ?? e})`);
      console.error(`resume from the last checkpoint with: texforce run ${file} --resume`);
      return EXIT.interrupted;
    }
    return reportError(e);
  } finally {
    if (listening) Deno.removeSignalListener("SIGINT", onSigint);
  }
}
