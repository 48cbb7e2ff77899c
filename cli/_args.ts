// Argument parsing and error reporting shared by the commands.
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { SafetensorsError } from "../core/io/safetensors.ts";
import { ModelFolderError } from "../core/io/model_folder.ts";
import { PipelineError } from "../core/pipeline_error.ts";
import { PluginError } from "../core/plugin.ts";
import { RunFolderError } from "../core/run_folder.ts";

/** Exit codes: 0 ok, 1 run failure, 2 usage or validation error, 130 interrupted (Ctrl-C). */
export const EXIT = { ok: 0, failure: 1, usage: 2, interrupted: 130 } as const;

/** A bad command line: printed with a pointer to `--help`, exit code 2. */
export class UsageError extends Error {
  /** The command (for the `--help` hint). */
  readonly command: string;
  /** Builds the error. */
  constructor(command: string, message: string) {
    super(message);
    this.name = "UsageError";
    this.command = command;
  }
}

/** A problem with user input found before any work (bad file, bad flag value): exit code 2. */
export class InputError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "InputError";
  }
}

/** Parsed flags and positionals of one command. */
export interface ParsedArgs {
  /** Flag values by long name. */
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  /** Positional arguments. */
  positionals: string[];
}

/** Parse `args` strictly (unknown flags are usage errors); `-h`/`--help` is always accepted. */
export function parseCommandArgs(
  command: string,
  args: string[],
  options: ParseArgsOptionsConfig,
): ParsedArgs {
  try {
    const r = parseArgs({
      args,
      options: { help: { type: "boolean", short: "h" }, ...options },
      allowPositionals: true,
      strict: true,
    });
    return { values: r.values as ParsedArgs["values"], positionals: r.positionals };
  } catch (e) {
    throw new UsageError(
      command,
      (e as Error).message.replace(/\. To specify a positional.*$/s, ""),
    );
  }
}

/** A string flag (last one wins). */
export function stringFlag(p: ParsedArgs, name: string): string | undefined {
  const v = p.values[name];
  if (Array.isArray(v)) return v.length ? String(v[v.length - 1]) : undefined;
  return typeof v === "string" ? v : undefined;
}

/** A repeatable string flag. */
export function listFlag(p: ParsedArgs, name: string): string[] {
  const v = p.values[name];
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

/** A boolean flag. */
export function boolFlag(p: ParsedArgs, name: string): boolean {
  return p.values[name] === true;
}

/** A numeric flag, or a usage error naming it. */
export function numberFlag(
  command: string,
  p: ParsedArgs,
  name: string,
  check: { int?: boolean; min?: number } = {},
): number | undefined {
  const s = stringFlag(p, name);
  if (s === undefined) return undefined;
  const n = Number(s);
  if (
    s.trim() === "" || !Number.isFinite(n) || (check.int && !Number.isInteger(n)) ||
    (check.min !== undefined && n < check.min)
  ) {
    const what = `${check.int ? "an integer" : "a number"}${
      check.min !== undefined ? ` ≥ ${check.min}` : ""
    }`;
    throw new UsageError(command, `--${name}: expected ${what}, got '${s}'`);
  }
  return n;
}

/** A comma-separated list of integers (`0,1,2`) or a range (`0-3`), or a usage error. */
export function seedsFlag(command: string, p: ParsedArgs, name: string): number[] | undefined {
  const s = stringFlag(p, name);
  if (s === undefined) return undefined;
  const out: number[] = [];
  for (const part of s.split(",").map((x) => x.trim()).filter(Boolean)) {
    const range = /^(\d+)-(\d+)$/.exec(part);
    if (range) {
      const [a, b] = [Number(range[1]), Number(range[2])];
      if (b < a) throw new UsageError(command, `--${name}: empty range '${part}'`);
      for (let i = a; i <= b; i++) out.push(i);
    } else if (/^\d+$/.test(part)) out.push(Number(part));
    else throw new UsageError(command, `--${name}: expected seeds like 0,1,2 or 0-3, got '${s}'`);
  }
  if (!out.length) throw new UsageError(command, `--${name}: no seeds in '${s}'`);
  return out;
}

/** Exactly `n` positionals named `names`, or a usage error. */
export function positionals(command: string, p: ParsedArgs, names: string[]): string[] {
  if (p.positionals.length < names.length) {
    throw new UsageError(command, `missing <${names[p.positionals.length]}>`);
  }
  if (p.positionals.length > names.length) {
    throw new UsageError(
      command,
      `unexpected argument '${p.positionals[names.length]}' (expected ${
        names.map((n) => `<${n}>`).join(" ") || "no arguments"
      })`,
    );
  }
  return p.positionals;
}

function debug(): boolean {
  try {
    return Boolean(Deno.env.get("TEXFORCE_DEBUG"));
  } catch {
    return false;
  }
}

/**
 * Print an error the way the CLI reports it and return the exit code: usage and validation
 * errors (exit 2) print their message without a stack trace; other errors (exit 1) print the
 * message, and the stack when `TEXFORCE_DEBUG` is set.
 */
export function reportError(e: unknown): number {
  if (e instanceof UsageError) {
    console.error(`texforce ${e.command}: ${e.message}`);
    console.error(`Run 'texforce ${e.command} --help' for usage.`);
    return EXIT.usage;
  }
  if (
    e instanceof PipelineError || e instanceof PluginError || e instanceof ModelFolderError ||
    e instanceof SafetensorsError || e instanceof InputError || e instanceof RunFolderError
  ) {
    console.error(`error: ${e.message}`);
    return EXIT.usage;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  console.error(`error: ${err.message}`);
  if (debug() && err.stack) console.error(err.stack);
  else console.error("(set TEXFORCE_DEBUG=1 for a stack trace)");
  return EXIT.failure;
}
