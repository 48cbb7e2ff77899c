/**
 * The CLIP byte-level BPE tokenizer, read from a diffusers `tokenizer/` folder (`vocab.json`,
 * `merges.txt`, `tokenizer_config.json`, `special_tokens_map.json`).
 *
 * It reproduces what transformers' `CLIPTokenizer` does when `ftfy` is not installed (the
 * usual case): NFC, whitespace runs collapsed to one space, lower case, the CLIP
 * pre-tokenisation regex, byte-to-unicode mapping, BPE with a `</w>` end-of-word marker, then
 * `bos … eos` truncated and padded to `model_max_length` with the configured pad token
 * (`<|endoftext|>` in SD 1.x, `!` in SD 2.x).
 *
 * @module
 */
import { join } from "node:path";
import { gpt2ByteSymbols } from "./_gpt2_bytes.ts";

/** What {@linkcode ClipTokenizer.fromFiles} needs; `load` reads it from a folder. */
export interface ClipTokenizerFiles {
  /** Token → id, the content of `vocab.json`. */
  vocab: Record<string, number>;
  /** Content of `merges.txt` (the `#version` line is skipped). */
  merges: string;
  /** Content of `tokenizer_config.json` (optional). */
  tokenizerConfig?: Record<string, unknown>;
  /** Content of `special_tokens_map.json` (optional; `tokenizerConfig` wins). */
  specialTokensMap?: Record<string, unknown>;
  /** Content of `added_tokens.json` (optional): extra token → id, split out of text like specials. */
  addedTokens?: Record<string, number>;
  /** Names used in error messages (defaults: `vocab.json`, `merges.txt`). */
  paths?: { vocab?: string; merges?: string; config?: string };
}

/** Options of {@linkcode ClipTokenizer.encodeBatch}. */
export interface ClipEncodeOptions {
  /** Pad every row to `maxLength` (default true). */
  padding?: boolean;
  /** Cut rows longer than `maxLength`, keeping bos and eos (default true). */
  truncation?: boolean;
  /** Override the model's `model_max_length`. */
  maxLength?: number;
}

/** Token ids and attention masks of a batch. */
export interface ClipEncoding {
  /** Token ids per prompt: `bos, tokens…, eos, pad…`. */
  inputIds: number[][];
  /** 1 for real tokens (bos … eos), 0 for padding. */
  attentionMask: number[][];
}

/**
 * An error in tokenizer files; the message names the file and the line or field.
 *
 * @example
 * ```ts
 * import { ClipTokenizer, ClipTokenizerError } from "@texforce/core/adapters";
 * try {
 *   await ClipTokenizer.load("broken/tokenizer");
 * } catch (e) {
 *   if (e instanceof ClipTokenizerError) console.error(e.message);
 * }
 * ```
 */
export class ClipTokenizerError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "ClipTokenizerError";
  }
}

/** The CLIP pre-tokenisation pattern (same as the original openai/CLIP code and transformers). */
export const PRETOKENIZE: RegExp =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;

/**
 * GPT-2's reversible byte → printable unicode character table (index: byte).
 *
 * @example
 * ```ts
 * import { bytesToUnicode } from "@texforce/core/adapters";
 * console.log(bytesToUnicode()[32]); // "Ġ"
 * ```
 */
export function bytesToUnicode(): string[] {
  const { bytes, symbols } = gpt2ByteSymbols();
  const table = new Array<string>(256);
  for (let i = 0; i < bytes.length; i++) table[bytes[i]] = symbols[i];
  return table;
}

const BYTE_ENCODER = bytesToUnicode();

const HTML_ENTITIES: Record<string, string> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
  nbsp: "\u00a0",
};

/**
 * Decode the common HTML entities (`&amp;`, `&#39;`, `&#x27;`, …), as openai/CLIP's
 * `basic_clean` does; transformers skips this without ftfy, so it is off by default.
 */
function htmlUnescape(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, body: string) => {
    if (body[0] === "#") {
      const code = body[1] === "x" || body[1] === "X"
        ? parseInt(body.slice(2), 16)
        : parseInt(body.slice(1), 10);
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : m;
    }
    return HTML_ENTITIES[body.toLowerCase()] ?? m;
  });
}

function tokenContent(v: unknown): string | undefined {
  // transformers writes special tokens either as strings or as AddedToken objects.
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return undefined;
}

/**
 * CLIP's BPE tokenizer.
 *
 * @example
 * ```ts
 * import { ClipTokenizer } from "@texforce/core/adapters";
 * const tok = await ClipTokenizer.load("stable-diffusion-v1-5/tokenizer");
 * const { inputIds } = tok.encodeBatch(["a photo of a cat"]);
 * console.log(inputIds[0].slice(0, 8));
 * ```
 */
export class ClipTokenizer {
  /** Id of `<|startoftext|>`. */
  readonly bosTokenId: number;
  /** Id of `<|endoftext|>`. */
  readonly eosTokenId: number;
  /** Id used for padding (eos in SD 1.x, `!` in SD 2.x). */
  readonly padTokenId: number;
  /** Id of the unknown token (CLIP maps it to eos). */
  readonly unkTokenId: number;
  /** Sequence length after padding and truncation (77). */
  readonly maxLength: number;
  /** Whether text is lower-cased (always true for CLIP). */
  readonly doLowerCase: boolean;
  /** Decode HTML entities before tokenising (openai/CLIP does, transformers does not). */
  htmlUnescape = false;

  #vocab: Map<string, number>;
  #ranks: Map<string, number>;
  #cache = new Map<string, number[]>();
  #special: Map<string, number>;
  #specialRe: RegExp | null;

  private constructor(files: ClipTokenizerFiles) {
    const vocabPath = files.paths?.vocab ?? "vocab.json";
    const mergesPath = files.paths?.merges ?? "merges.txt";
    const configPath = files.paths?.config ?? "tokenizer_config.json";
    if (!files.vocab || typeof files.vocab !== "object" || Array.isArray(files.vocab)) {
      throw new ClipTokenizerError(`${vocabPath}: expected a JSON object of token → id`);
    }
    this.#vocab = new Map();
    for (const [tok, id] of Object.entries(files.vocab)) {
      if (!Number.isInteger(id) || id < 0) {
        throw new ClipTokenizerError(
          `${vocabPath}: token ${JSON.stringify(tok)} has id ${JSON.stringify(id)}, ` +
            "expected a non-negative integer",
        );
      }
      this.#vocab.set(tok, id);
    }
    this.#ranks = new Map();
    const lines = files.merges.split(/\r?\n/);
    let rank = 0;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      if ((i === 0 && line.startsWith("#version")) || line.trim() === "") continue;
      const parts = line.split(" ");
      if (parts.length !== 2 || !parts[0] || !parts[1]) {
        throw new ClipTokenizerError(
          `${mergesPath}: line ${i + 1} (${JSON.stringify(line)}): expected two symbols ` +
            "separated by one space",
        );
      }
      const merged = parts[0] + parts[1];
      if (!this.#vocab.has(merged)) {
        throw new ClipTokenizerError(
          `${mergesPath}: line ${i + 1} (${JSON.stringify(line)}) merges into ` +
            `${JSON.stringify(merged)}, which is not in ${vocabPath}: the vocabulary and merges ` +
            "come from different tokenizers",
        );
      }
      // The first occurrence wins, as in the reference implementations.
      const key = `${parts[0]} ${parts[1]}`;
      if (!this.#ranks.has(key)) this.#ranks.set(key, rank);
      rank++;
    }

    const cfg = files.tokenizerConfig ?? {};
    const map = files.specialTokensMap ?? {};
    const special = (field: string, fallback: string): string =>
      tokenContent(cfg[field]) ?? tokenContent(map[field]) ?? fallback;
    const idOf = (field: string, fallback: string): number => {
      const tok = special(field, fallback);
      const id = this.#vocab.get(tok);
      if (id === undefined) {
        throw new ClipTokenizerError(
          `${configPath}: ${field} ${JSON.stringify(tok)} is not in ${vocabPath}`,
        );
      }
      return id;
    };
    this.bosTokenId = idOf("bos_token", "<|startoftext|>");
    this.eosTokenId = idOf("eos_token", "<|endoftext|>");
    this.unkTokenId = idOf("unk_token", "<|endoftext|>");
    this.padTokenId = idOf("pad_token", "<|endoftext|>");
    const maxLen = cfg.model_max_length ?? 77;
    // transformers writes a huge sentinel when no length is known; CLIP's positions are 77.
    this.maxLength = typeof maxLen === "number" && Number.isInteger(maxLen) && maxLen > 2 &&
        maxLen < 1e6
      ? maxLen
      : 77;
    this.doLowerCase = cfg.do_lower_case !== false;

    // transformers splits every special and added token out of the raw text before BPE,
    // whatever it looks like: SD 2.x's pad token is "!", so each "!" in a prompt is the pad id.
    this.#special = new Map();
    const specialTexts = ["bos_token", "eos_token", "unk_token", "pad_token"]
      .map((field) => special(field, ""));
    for (const source of [cfg, map]) {
      const extra = source.additional_special_tokens;
      if (Array.isArray(extra)) { for (const t of extra) specialTexts.push(tokenContent(t) ?? ""); }
    }
    const decoder = cfg.added_tokens_decoder;
    if (decoder && typeof decoder === "object") {
      for (const t of Object.values(decoder as Record<string, unknown>)) {
        specialTexts.push(tokenContent(t) ?? "");
      }
    }
    for (const [tok, id] of Object.entries(files.addedTokens ?? {})) {
      if (typeof id === "number" && !this.#vocab.has(tok)) this.#vocab.set(tok, id);
      specialTexts.push(tok);
    }
    for (const tok of specialTexts) {
      const id = this.#vocab.get(tok);
      if (tok && id !== undefined) this.#special.set(tok, id);
    }
    // Longest first, so that a token containing another one wins (transformers' trie does too).
    const escaped = [...this.#special.keys()].sort((a, b) => b.length - a.length)
      .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    this.#specialRe = escaped.length ? new RegExp(`(${escaped.join("|")})`) : null;
  }

  /**
   * Build a tokenizer from file contents.
   *
   * @example
   * ```ts
   * import { ClipTokenizer } from "@texforce/core/adapters";
   * const tok = ClipTokenizer.fromFiles({
   *   vocab: { "a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2 },
   *   merges: "#version: 0.2\n",
   * });
   * ```
   */
  static fromFiles(files: ClipTokenizerFiles): ClipTokenizer {
    return new ClipTokenizer(files);
  }

  /**
   * Read a tokenizer folder (`vocab.json`, `merges.txt`, optional `tokenizer_config.json` and
   * `special_tokens_map.json`).
   *
   * @example
   * ```ts
   * import { ClipTokenizer } from "@texforce/core/adapters";
   * const tok = await ClipTokenizer.load("stable-diffusion-v1-5/tokenizer");
   * ```
   */
  static async load(dir: string): Promise<ClipTokenizer> {
    const vocabPath = join(dir, "vocab.json");
    const mergesPath = join(dir, "merges.txt");
    const configPath = join(dir, "tokenizer_config.json");
    const readText = async (p: string, optional: boolean): Promise<string | undefined> => {
      try {
        return await Deno.readTextFile(p);
      } catch (e) {
        if (optional && e instanceof Deno.errors.NotFound) return undefined;
        throw new ClipTokenizerError(
          `${p}: ${
            e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message
          } (a CLIP tokenizer folder needs vocab.json and merges.txt)`,
        );
      }
    };
    const parse = (p: string, text: string | undefined): Record<string, unknown> | undefined => {
      if (text === undefined) return undefined;
      try {
        return JSON.parse(text);
      } catch (e) {
        throw new ClipTokenizerError(`${p}: invalid JSON (${(e as Error).message})`);
      }
    };
    const specialPath = join(dir, "special_tokens_map.json");
    const addedPath = join(dir, "added_tokens.json");
    return new ClipTokenizer({
      vocab: parse(vocabPath, await readText(vocabPath, false)) as Record<string, number>,
      merges: (await readText(mergesPath, false))!,
      tokenizerConfig: parse(configPath, await readText(configPath, true)),
      specialTokensMap: parse(specialPath, await readText(specialPath, true)),
      addedTokens: parse(addedPath, await readText(addedPath, true)) as
        | Record<string, number>
        | undefined,
      paths: { vocab: vocabPath, merges: mergesPath, config: configPath },
    });
  }

  /** Number of entries in the vocabulary. */
  get vocabSize(): number {
    return this.#vocab.size;
  }

  /** Normalise text as transformers does without ftfy. */
  #normalize(text: string): string {
    let t = this.htmlUnescape ? htmlUnescape(htmlUnescape(text)) : text;
    t = t.normalize("NFC").replace(/\s+/gu, " ").trim();
    return this.doLowerCase ? t.toLowerCase() : t;
  }

  /** BPE of one pre-token (already byte-encoded); cached. */
  #bpe(word: string): number[] {
    const hit = this.#cache.get(word);
    if (hit) return hit;
    const chars = [...word];
    let symbols = chars.slice(0, -1);
    symbols.push(chars[chars.length - 1] + "</w>");
    while (symbols.length > 1) {
      let best = Infinity;
      let pair = "";
      for (let i = 0; i < symbols.length - 1; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        const r = this.#ranks.get(key);
        if (r !== undefined && r < best) {
          best = r;
          pair = key;
        }
      }
      if (best === Infinity) break;
      const [a, b] = pair.split(" ");
      const next: string[] = [];
      for (let i = 0; i < symbols.length;) {
        if (i < symbols.length - 1 && symbols[i] === a && symbols[i + 1] === b) {
          next.push(a + b);
          i += 2;
        } else {
          next.push(symbols[i]);
          i++;
        }
      }
      symbols = next;
    }
    const ids = symbols.map((s) => this.#vocab.get(s) ?? this.unkTokenId);
    // Bounded so a long run over varied prompts cannot grow memory without limit.
    if (this.#cache.size > 100_000) this.#cache.clear();
    this.#cache.set(word, ids);
    return ids;
  }

  /**
   * Token ids of one text, without bos/eos, padding or truncation.
   *
   * @example
   * ```ts
   * import { ClipTokenizer } from "@texforce/core/adapters";
   * declare const tok: ClipTokenizer;
   * console.log(tok.encode("A Photo of a HAND!!"));
   * ```
   */
  encode(text: string): number[] {
    const out: number[] = [];
    // Special tokens written in the text are kept whole, before any normalisation.
    const pieces = this.#specialRe ? text.split(this.#specialRe) : [text];
    for (let p = 0; p < pieces.length; p++) {
      const piece = pieces[p];
      if (p % 2 === 1) {
        out.push(this.#special.get(piece)!);
        continue;
      }
      const norm = this.#normalize(piece);
      if (!norm) continue;
      for (const m of norm.matchAll(PRETOKENIZE)) {
        const bytes = new TextEncoder().encode(m[0]);
        let word = "";
        for (const b of bytes) word += BYTE_ENCODER[b];
        for (const id of this.#bpe(word)) out.push(id);
      }
    }
    return out;
  }

  /**
   * Encode prompts into `bos … eos` rows, truncated and padded to `maxLength`.
   *
   * @example
   * ```ts
   * import { ClipTokenizer } from "@texforce/core/adapters";
   * declare const tok: ClipTokenizer;
   * const { inputIds, attentionMask } = tok.encodeBatch(["a cat", ""]);
   * ```
   */
  encodeBatch(texts: string[], options: ClipEncodeOptions = {}): ClipEncoding {
    const maxLength = options.maxLength ?? this.maxLength;
    const padding = options.padding ?? true;
    const truncation = options.truncation ?? true;
    const inputIds: number[][] = [];
    const attentionMask: number[][] = [];
    for (const text of texts) {
      if (typeof text !== "string") {
        throw new TypeError(`ClipTokenizer: prompts must be strings, got ${typeof text}`);
      }
      let body = this.encode(text);
      if (truncation && body.length > maxLength - 2) body = body.slice(0, maxLength - 2);
      const ids = [this.bosTokenId, ...body, this.eosTokenId];
      const mask = ids.map(() => 1);
      if (padding) {
        while (ids.length < maxLength) {
          ids.push(this.padTokenId);
          mask.push(0);
        }
      }
      inputIds.push(ids);
      attentionMask.push(mask);
    }
    return { inputIds, attentionMask };
  }

  /**
   * Text of token ids (byte-level decoding; `</w>` becomes a space; special tokens dropped
   * unless `keepSpecial`).
   *
   * @example
   * ```ts
   * import { ClipTokenizer } from "@texforce/core/adapters";
   * declare const tok: ClipTokenizer;
   * console.log(tok.decode(tok.encodeBatch(["a cat"]).inputIds[0]));
   * ```
   */
  decode(ids: ArrayLike<number>, keepSpecial = false): string {
    const inv = this.#inverse();
    const specialIds = new Set([this.bosTokenId, this.eosTokenId, this.padTokenId]);
    let text = "";
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!keepSpecial && specialIds.has(id)) continue;
      text += inv.tokens[id] ?? "";
    }
    const bytes: number[] = [];
    for (const ch of text.replaceAll("</w>", " ")) {
      const b = inv.bytes.get(ch);
      if (b !== undefined) bytes.push(b);
      else bytes.push(...new TextEncoder().encode(ch));
    }
    return new TextDecoder().decode(new Uint8Array(bytes)).trim();
  }

  #inverseCache?: { tokens: string[]; bytes: Map<string, number> };
  #inverse(): { tokens: string[]; bytes: Map<string, number> } {
    if (!this.#inverseCache) {
      const tokens: string[] = [];
      for (const [t, id] of this.#vocab) tokens[id] = t;
      const bytes = new Map(BYTE_ENCODER.map((c, b) => [c, b]));
      this.#inverseCache = { tokens, bytes };
    }
    return this.#inverseCache;
  }
}
