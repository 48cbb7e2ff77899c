/**
 * Training prompts: reading a prompt file and resolving a pipeline's prompt source (inline list,
 * file or built-in set) to a list of strings.
 *
 * @module
 */
import type { Pipeline, PromptSource } from "./pipeline_schema.ts";
import { promptSet } from "./prompt_sets.ts";

/**
 * Read a prompt file: a `.json` file holds an array of strings; any other file holds one prompt
 * per line (blank lines and lines starting with `#` are skipped). Errors name the file.
 *
 * @example
 * ```ts
 * import { readPromptFile } from "@texforce/core";
 * const prompts = await readPromptFile("prompts/animals.txt");
 * ```
 */
export async function readPromptFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${path}: prompt file not found`);
    throw new Error(`${path}: cannot read prompt file (${(e as Error).message})`);
  }
  let prompts: string[];
  if (path.toLowerCase().endsWith(".json")) {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw new Error(`${path}: invalid JSON (${(e as Error).message})`);
    }
    if (!Array.isArray(data)) throw new Error(`${path}: expected a JSON array of prompt strings`);
    const bad = data.findIndex((x) => typeof x !== "string" || x.trim() === "");
    if (bad >= 0) {
      throw new Error(
        `${path}: item ${bad} is not a non-empty string (${JSON.stringify(data[bad])})`,
      );
    }
    prompts = (data as string[]).map((s) => s.trim());
  } else {
    prompts = text.split(/\r?\n/).map((l) => l.trim()).filter((l) =>
      l !== "" && !l.startsWith("#")
    );
  }
  if (prompts.length === 0) throw new Error(`${path}: the prompt file holds no prompts`);
  return prompts;
}

/**
 * The prompts of a prompt source or of a pipeline (its `prompts` field).
 *
 * @example
 * ```ts
 * import { resolvePrompts } from "@texforce/core";
 * console.log(await resolvePrompts({ builtin: "tiny" }));
 * ```
 */
export async function resolvePrompts(source: Pipeline | PromptSource): Promise<string[]> {
  const s: PromptSource = "prompts" in source ? source.prompts : source;
  if ("list" in s) return [...s.list];
  if ("file" in s) return await readPromptFile(s.file);
  return promptSet(s.builtin);
}
