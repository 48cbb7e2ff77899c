// Preflight of the files a CLIP-based reward reads: the CLIPModel folder's configs and weights
// header, and optionally a safetensors head and a tokenizer folder. Nothing is loaded.
import { join, resolve } from "node:path";
import { readJsonFile } from "../core/io/model_folder.ts";
import { openWeights } from "../core/io/weights.ts";
import { checkTokenizer } from "../core/preflight.ts";
import type { PluginIssue } from "../core/plugin.ts";

/** Problems with a CLIPModel folder named by option `key`, each naming its file. */
export async function clipModelIssues(
  baseDir: string,
  key: string,
  folder: string,
): Promise<PluginIssue[]> {
  const dir = resolve(baseDir, folder);
  const issues: PluginIssue[] = [];
  for (const f of ["config.json", "preprocessor_config.json"]) {
    try {
      await readJsonFile(join(dir, f));
    } catch (e) {
      issues.push({ path: key, message: (e as Error).message });
    }
  }
  try {
    (await openWeights(dir, { names: ["model"] })).close();
  } catch (e) {
    issues.push({ path: key, message: (e as Error).message });
  }
  return issues;
}

/** Problems with a safetensors file named by option `key` that must hold `tensor`. */
export async function weightsFileIssues(
  baseDir: string,
  key: string,
  file: string,
  tensor: string,
): Promise<PluginIssue[]> {
  const path = resolve(baseDir, file);
  try {
    const w = await openWeights(path);
    try {
      if (!w.has(tensor)) return [{ path: key, message: `${path}: no tensor '${tensor}'` }];
    } finally {
      w.close();
    }
  } catch (e) {
    return [{ path: key, message: (e as Error).message }];
  }
  return [];
}

/** Problems with a tokenizer folder (vocab.json, merges.txt) named by option `key`. */
export async function tokenizerIssues(
  baseDir: string,
  key: string,
  folder: string,
): Promise<PluginIssue[]> {
  const dir = resolve(baseDir, folder);
  return (await checkTokenizer(dir)).map((message) => ({ path: key, message }));
}
