/**
 * `texforce run <pipeline>`: validate a pipeline and train it; Ctrl-C stops cleanly.
 *
 * @module
 */
import { builtinRegistry, loadPipeline } from "../builtin_plugins.ts";
import { type ProgressPrinter, progressPrinter } from "../core/progress.ts";
import { dryRun } from "./_dry_run.ts";
import { boolFlag, EXIT, listFlag, parseCommandArgs, positionals, reportError } from "./_args.ts";

/** Help of `texforce run`. */
const RUN_HELP: string = `Usage: texforce run <pipeline> [options]

Validate a pipeline file (.yaml, .yml, .json or .ts) and train it.

Options:
  --set <key=value>  Override a pipeline value before validation (repeatable), e.g.
                     --set train.epochs=3 --set sampler.guidance=7.5 --set rewards.0.weight=2
  --resume           Resume from the newest intact checkpoint in output.dir
  --force            With --resume: continue although the pipeline changed in keys that are
                     not safe to change (the differences are listed otherwise)
  --allow-plugin <specifier>
                     Consent to import a plugin module from outside the pipeline's folder
                     (a path, https: URL, npm: or jsr: package; repeatable; see README)
  --dry-run          Validate, then print the plan and its cost (images, UNet calls, optimizer
                     steps, weights on disk); loads no weights and trains nothing
  -q, --quiet        Print only the result (the output folder and checkpoint, on stdout)
  -v, --verbose      Also print every optimizer step's PPO diagnostics and each evaluation
  -h, --help         Show this help

Progress goes to stderr: a live bar on a terminal, otherwise a line every 5 seconds (set
TEXFORCE_PROGRESS_SECONDS to change) with the epoch, phase, step, images/s and ETA.

Ctrl-C, SIGTERM or SIGHUP stop the run after the current step with a checkpoint (a second one
exits at once) and print the command that continues it.
Exit codes: 0 done, 1 the run failed, 2 usage or validation error, 130 interrupted (SIGINT),
143 (SIGTERM), 129 (SIGHUP).
`;

/** Exit code of a run stopped by each signal: 128 + its number, as shells report it. */
const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };

/** Quote an argument for a POSIX shell when it needs it. */
function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'"'"'`)}'`;
}

/**
 * The command that continues a run, in the form the user ran it: the same arguments (and so the
 * same --set overrides) with --resume.
 *
 * @example
 * ```ts
 * import { resumeCommand } from "./run.ts";
 * console.log(resumeCommand(["my.yaml", "--set", "train.epochs=3"]));
 * // texforce run my.yaml --set train.epochs=3 --resume
 * ```
 */
export function resumeCommand(args: string[]): string {
  const rest = args.filter((a) => a !== "--resume");
  let prefix = "texforce run";
  try {
    // `deno task texforce …` runs from the folder of deno.json, where INIT_CWD is set.
    if (Deno.env.get("INIT_CWD") !== undefined) prefix = "deno task texforce run";
  } catch { /* no env access: the plain name */ }
  return [prefix, ...rest.map(shellQuote), "--resume"].join(" ");
}

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
  let stoppedBy = "";
  const handlers = new Map<Deno.Signal, () => void>();
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    handlers.set(sig, () => {
      if (stoppedBy) {
        console.error(`${sig} again: exiting now`);
        Deno.exit(SIGNAL_EXIT[sig]);
      }
      stoppedBy = sig;
      // Above the progress bar, when one is drawn.
      const say = printer?.log ?? ((line: string) => console.error(line));
      say(
        `${sig === "SIGINT" ? "interrupt" : sig}: stopping after the current step with a ` +
          "checkpoint (send it again to exit now)",
      );
      controller.abort(new DOMException(`interrupted by ${sig}`, "AbortError"));
    });
  }
  const stopCode = () => SIGNAL_EXIT[stoppedBy] ?? EXIT.interrupted;
  let listening = false;
  let file = "<pipeline>";
  try {
    const p = parseCommandArgs("run", args, {
      set: { type: "string", multiple: true, short: "s" },
      resume: { type: "boolean" },
      force: { type: "boolean" },
      "allow-plugin": { type: "string", multiple: true },
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
    const pipeline = await loadPipeline(file, {
      set: listFlag(p, "set"),
      allowPlugins: listFlag(p, "allow-plugin"),
      onImport: quiet ? undefined : (line) => console.error(line),
    });
    if (boolFlag(p, "dry-run")) {
      for (const line of await dryRun(file, pipeline)) console.log(line);
      return EXIT.ok;
    }
    const resume = boolFlag(p, "resume") || pipeline.checkpoint.resume;
    const every = Number(Deno.env.get("TEXFORCE_PROGRESS_SECONDS") ?? 5);
    printer = quiet ? undefined : progressPrinter({
      verbose: boolFlag(p, "verbose"),
      intervalSeconds: Number.isFinite(every) && every >= 0 ? every : 5,
    });
    const registry = builtinRegistry();
    const { train } = await import("../core/train.ts");
    for (const [sig, handler] of handlers) {
      try {
        Deno.addSignalListener(sig, handler);
        listening = true;
      } catch { /* this signal is unsupported here (Windows has no SIGHUP) */ }
    }
    const result = await train(pipeline, {
      registry,
      signal: controller.signal,
      resume,
      force: boolFlag(p, "force"),
      onProgress: printer?.onProgress,
      log: printer?.log,
    });
    printer?.close();
    printer = undefined;
    if (result.interrupted || controller.signal.aborted) {
      console.error(`interrupted; continue this run with:\n  ${resumeCommand(args)}`);
      console.log(`output: ${result.outputDir}\ncheckpoint: ${result.checkpoint}`);
      return stopCode();
    }
    console.log(`output: ${result.outputDir}\ncheckpoint: ${result.checkpoint}`);
    return EXIT.ok;
  } catch (e) {
    printer?.close();
    if (controller.signal.aborted) {
      console.error(`interrupted (${(e as Error).message ?? e})`);
      console.error(`continue from the last checkpoint with:\n  ${resumeCommand(args)}`);
      return stopCode();
    }
    return reportError(e);
  } finally {
    printer?.close();
    if (listening) {
      for (const [sig, handler] of handlers) {
        try {
          Deno.removeSignalListener(sig, handler);
        } catch { /* was not added */ }
      }
    }
  }
}
