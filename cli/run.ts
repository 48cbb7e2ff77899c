/**
 * `texforce run <pipeline>`: validate a pipeline and train it; Ctrl-C stops cleanly.
 *
 * @module
 */
import { builtinRegistry } from "../builtin_plugins.ts";
import { loadPipeline } from "../core/pipeline.ts";
import { type ProgressPrinter, progressPrinter } from "../core/progress.ts";
import { dryRun } from "./_dry_run.ts";
import { boolFlag, EXIT, listFlag, parseCommandArgs, positionals, reportError } from "./_args.ts";

/** Help of `texforce run`. */
const RUN_HELP: string = `Usage: texforce run <pipeline> [options]

Validate a pipeline file (.yaml, .yml, .json or .ts) and train it.

Options:
  --set <key=value>  Override a pipeline value before validation (repeatable), e.g.
                     --set train.epochs=3 --set sampler.guidance=7.5 --set rewards.0.weight=2
  --resume           Resume from the latest checkpoint in output.dir
  --dry-run          Validate, then print the plan and its cost (images, UNet calls, optimizer
                     steps, weights on disk); loads no weights and trains nothing
  -q, --quiet        Print only the result (the output folder and checkpoint, on stdout)
  -v, --verbose      Also print every optimizer step's PPO diagnostics and each evaluation
  -h, --help         Show this help

Progress goes to stderr: a live bar on a terminal, otherwise a line every 5 seconds (set
TEXFORCE_PROGRESS_SECONDS to change) with the epoch, phase, step, images/s and ETA.

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
  let printer: ProgressPrinter | undefined;
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts > 1) {
      console.error("interrupted again: exiting now");
      Deno.exit(EXIT.interrupted);
    }
    // Above the progress bar, when one is drawn.
    const say = printer?.log ?? ((line: string) => console.error(line));
    say("interrupt: stopping after the current step (Ctrl-C again to exit now)");
    controller.abort(new DOMException("interrupted by Ctrl-C", "AbortError"));
  };
  let listening = false;
  let file = "<pipeline>";
  try {
    const p = parseCommandArgs("run", args, {
      set: { type: "string", multiple: true, short: "s" },
      resume: { type: "boolean" },
      quiet: { type: "boolean", short: "q" },
      verbose: { type: "boolean", short: "v" },
      "dry-run": { type: "boolean" },
    });
    if (boolFlag(p, "help")) {
      console.log(RUN_HELP.trimEnd());
      return EXIT.ok;
    }
    [file] = positionals("run", p, ["pipeline"]);
    const quiet = boolFlag(p, "quiet");
    const pipeline = await loadPipeline(file, { set: listFlag(p, "set") });
    if (boolFlag(p, "dry-run")) {
      for (const line of await dryRun(file, pipeline)) console.log(line);
      return EXIT.ok;
    }
    const every = Number(Deno.env.get("TEXFORCE_PROGRESS_SECONDS") ?? 5);
    printer = quiet ? undefined : progressPrinter({
      verbose: boolFlag(p, "verbose"),
      intervalSeconds: Number.isFinite(every) && every >= 0 ? every : 5,
    });
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
      onProgress: printer?.onProgress,
      log: printer?.log,
    });
    printer?.close();
    printer = undefined;
    if (result.interrupted || controller.signal.aborted) {
      console.error(`interrupted; resume with: texforce run ${file} --resume`);
      console.log(`output: ${result.outputDir}\ncheckpoint: ${result.checkpoint}`);
      return EXIT.interrupted;
    }
    console.log(`output: ${result.outputDir}\ncheckpoint: ${result.checkpoint}`);
    return EXIT.ok;
  } catch (e) {
    printer?.close();
    if (controller.signal.aborted) {
      console.error(`interrupted (${(e as Error).message ?? e})`);
      console.error(`resume from the last checkpoint with: texforce run ${file} --resume`);
      return EXIT.interrupted;
    }
    return reportError(e);
  } finally {
    printer?.close();
    if (listening) Deno.removeSignalListener("SIGINT", onSigint);
  }
}
