/**
 * Train a CLIP-format byte-level BPE vocabulary on a corpus, so that a model of one's own gets
 * a tokenizer that {@linkcode ClipTokenizer} reads exactly like Stable Diffusion's.
 *
 * The procedure is the one the CLIP vocabulary was built with: text normalised as the tokenizer
 * does (NFC, collapsed whitespace, lower case), split by CLIP's pre-tokenisation pattern, each
 * pre-token byte-encoded with GPT-2's table and ended by `</w>`; then the most frequent adjacent
 * pair of symbols is merged, again and again (ties: the pair first in code-unit order, so the
 * result is deterministic), until `merges` merges are made or no pair occurs `minFrequency`
 * times. The vocabulary lists the 256 byte symbols, the 256 byte symbols with `</w>`, one
 * symbol per merge, then `<|startoftext|>` and `<|endoftext|>`, like CLIP's.
 *
 * @example
 * ```ts
 * import { ClipTokenizer, trainClipBpe } from "@texforce/core/adapters";
 * const files = trainClipBpe(["a red circle", "two red circles"], { merges: 20 });
 * const tok = ClipTokenizer.fromFiles(files);
 * console.log(tok.encode("red circles"));
 * ```
 *
 * @module
 */
import { join } from "node:path";
import { bytesToUnicode, type ClipTokenizerFiles, PRETOKENIZE } from "./clip_tokenizer.ts";

/** Options of {@linkcode trainClipBpe}. */
export interface BpeTrainOptions {
  /** Most merges to learn (default 2000). */
  merges?: number;
  /** Stop when the most frequent pair occurs fewer times than this (default 2). */
  minFrequency?: number;
  /** Sequence length the tokenizer pads to (`model_max_length`, default 77). */
  maxLength?: number;
}

/**
 * Learn merges and a vocabulary from `texts`; returns the tokenizer files' contents.
 *
 * @example
 * ```ts
 * import { trainClipBpe } from "@texforce/core/adapters";
 * const { vocab, merges } = trainClipBpe(["a blue square"], { merges: 5 });
 * console.log(Object.keys(vocab).length, merges.split("\n")[1]);
 * ```
 */
export function trainClipBpe(
  texts: Iterable<string>,
  options: BpeTrainOptions = {},
): ClipTokenizerFiles {
  const maxMerges = options.merges ?? 2000;
  const minFrequency = options.minFrequency ?? 2;
  const maxLength = options.maxLength ?? 77;
  if (!Number.isInteger(maxMerges) || maxMerges < 0) {
    throw new Error(`trainClipBpe: merges must be a non-negative integer, got ${maxMerges}`);
  }
  const byteChar = bytesToUnicode();
  const encoder = new TextEncoder();
  // Word (as symbols) → frequency.
  const counts = new Map<string, number>();
  for (const text of texts) {
    const t = text.normalize("NFC").replace(/\s+/gu, " ").trim().toLowerCase();
    for (const m of t.matchAll(PRETOKENIZE)) {
      const word = [...encoder.encode(m[0])].map((b) => byteChar[b]).join("");
      counts.set(word, (counts.get(word) ?? 0) + 1);
    }
  }
  const words = [...counts.keys()].sort().map((w) => {
    const chars = [...w];
    const symbols = chars.slice(0, -1);
    symbols.push(chars[chars.length - 1] + "</w>");
    return { symbols, n: counts.get(w)! };
  });
  const merges: [string, string][] = [];
  while (merges.length < maxMerges) {
    const pairs = new Map<string, number>();
    for (const { symbols, n } of words) {
      for (let i = 0; i < symbols.length - 1; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + n);
      }
    }
    let best = "";
    let bestN = 0;
    for (const [key, n] of pairs) {
      if (n > bestN || (n === bestN && key < best)) {
        best = key;
        bestN = n;
      }
    }
    if (bestN < minFrequency || !best) break;
    const [a, b] = best.split(" ");
    merges.push([a, b]);
    for (const w of words) {
      const next: string[] = [];
      for (let i = 0; i < w.symbols.length;) {
        if (i < w.symbols.length - 1 && w.symbols[i] === a && w.symbols[i + 1] === b) {
          next.push(a + b);
          i += 2;
        } else {
          next.push(w.symbols[i]);
          i++;
        }
      }
      w.symbols = next;
    }
  }
  const vocab: Record<string, number> = {};
  const add = (tok: string) => {
    if (!(tok in vocab)) vocab[tok] = Object.keys(vocab).length;
  };
  // CLIP orders the base symbols by the byte table's *character* order, not by byte value.
  const base = [...byteChar].sort((x, y) => x.codePointAt(0)! - y.codePointAt(0)!);
  for (const c of base) add(c);
  for (const c of base) add(c + "</w>");
  for (const [a, b] of merges) add(a + b);
  add("<|startoftext|>");
  add("<|endoftext|>");
  const special = {
    bos_token: "<|startoftext|>",
    eos_token: "<|endoftext|>",
    pad_token: "<|endoftext|>",
    unk_token: "<|endoftext|>",
  };
  return {
    vocab,
    merges: ["#version: 0.2", ...merges.map(([a, b]) => `${a} ${b}`)].join("\n") + "\n",
    tokenizerConfig: {
      add_prefix_space: false,
      ...special,
      do_lower_case: true,
      errors: "replace",
      model_max_length: maxLength,
      tokenizer_class: "CLIPTokenizer",
    },
    specialTokensMap: special,
  };
}

/**
 * Write tokenizer files as a diffusers `tokenizer/` folder (`vocab.json`, `merges.txt`,
 * `tokenizer_config.json`, `special_tokens_map.json`).
 *
 * @example
 * ```ts
 * import { trainClipBpe, writeClipTokenizer } from "@texforce/core/adapters";
 * await writeClipTokenizer("out/tokenizer", trainClipBpe(["a red circle"]));
 * ```
 */
export async function writeClipTokenizer(dir: string, files: ClipTokenizerFiles): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const json = (v: unknown) => JSON.stringify(v, null, 2) + "\n";
  await Deno.writeTextFile(join(dir, "vocab.json"), JSON.stringify(files.vocab) + "\n");
  await Deno.writeTextFile(join(dir, "merges.txt"), files.merges);
  await Deno.writeTextFile(join(dir, "tokenizer_config.json"), json(files.tokenizerConfig ?? {}));
  await Deno.writeTextFile(
    join(dir, "special_tokens_map.json"),
    json(files.specialTokensMap ?? {}),
  );
}
