/**
 * BERT's WordPiece tokenizer (transformers' slow `BertTokenizer`), read from a
 * `save_pretrained` folder (`vocab.txt`, `tokenizer_config.json`, `added_tokens.json`,
 * `special_tokens_map.json`), as ImageReward's BLIP uses it (bert-base-uncased + `[DEC]` +
 * `[ENC]`).
 *
 * Text is split on the special and added tokens first (kept whole), then the basic tokenizer:
 * control characters dropped, whitespace unified, spaces put around CJK ideographs, NFC,
 * whitespace split, lower case and accents stripped (NFD, marks removed) when `do_lower_case`,
 * punctuation split off; then greedy longest-match-first WordPiece with `##` continuations, a
 * word that cannot be covered (or is over 100 characters) becoming `[UNK]`. Rows are
 * `[CLS] … [SEP]`, cut to `maxLength` and padded with `[PAD]`.
 *
 * @module
 */
import { join } from "node:path";

/** What {@linkcode BertTokenizer.fromFiles} needs; `load` reads it from a folder. */
export interface BertTokenizerFiles {
  /** Content of `vocab.txt`: one token per line, the id is the line number. */
  vocab: string;
  /** Added tokens beyond the vocabulary (`added_tokens.json`): token → id. */
  addedTokens?: Record<string, number>;
  /** Content of `tokenizer_config.json` (optional). */
  tokenizerConfig?: Record<string, unknown>;
  /** Name of the vocabulary for messages. */
  path?: string;
}

/** Token ids and attention masks of a batch. */
export interface BertEncoding {
  /** `[CLS] tokens… [SEP] [PAD]…` per text. */
  inputIds: number[][];
  /** 1 for real tokens, 0 for padding. */
  attentionMask: number[][];
}

/** Options of {@linkcode BertTokenizer.encodeBatch}. */
export interface BertEncodeOptions {
  /** Row length for padding and truncation (default: `model_max_length`, 512). */
  maxLength?: number;
  /** Pad to `maxLength` (default true: `padding='max_length'`). */
  padding?: boolean;
  /** Cut to `maxLength`, keeping `[CLS]` and `[SEP]` (default true). */
  truncation?: boolean;
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return undefined;
}

function isCjk(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) || (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/**
 * BERT's `_is_punctuation`: all non-alphanumeric ASCII, and Unicode `P*`.
 *
 * @example
 * ```ts
 * import { isBertPunctuation } from "@texforce/core/adapters";
 * console.log(isBertPunctuation("$"), isBertPunctuation("a")); // true false
 * ```
 */
export function isBertPunctuation(ch: string): boolean {
  const cp = ch.codePointAt(0)!;
  if (
    (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
    (cp >= 123 && cp <= 126)
  ) return true;
  return /^\p{P}$/u.test(ch);
}

function isWhitespace(ch: string): boolean {
  return ch === " " || ch === "\t" || ch === "\n" || ch === "\r" || /^\p{Zs}$/u.test(ch);
}

function isControl(ch: string): boolean {
  if (ch === "\t" || ch === "\n" || ch === "\r") return false;
  return /^[\p{Cc}\p{Cf}]$/u.test(ch);
}

/**
 * transformers' `BasicTokenizer.tokenize` (never_split empty): the words WordPiece sees.
 *
 * @example
 * ```ts
 * import { bertBasicTokenize } from "@texforce/core/adapters";
 * console.log(bertBasicTokenize(" \tHeLLo!how  \n Are yoU?  ")); // hello ! how are you ?
 * ```
 */
export function bertBasicTokenize(
  text: string,
  options: { lowerCase?: boolean; stripAccents?: boolean | null; chineseChars?: boolean } = {},
): string[] {
  const lower = options.lowerCase ?? true;
  const strip = options.stripAccents ?? null;
  let clean = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd || isControl(ch)) continue;
    if (isWhitespace(ch)) clean += " ";
    else if ((options.chineseChars ?? true) && isCjk(cp)) clean += ` ${ch} `;
    else clean += ch;
  }
  const words = clean.normalize("NFC").trim().split(/ +/).filter((w) => w);
  const out: string[] = [];
  for (let w of words) {
    if (lower) w = w.toLowerCase();
    // strip_accents None follows lower-casing; an explicit true/false wins.
    if (strip === true || (strip === null && lower)) {
      w = w.normalize("NFD").replace(/\p{Mn}/gu, "");
    }
    let cur = "";
    for (const ch of w) {
      if (isBertPunctuation(ch)) {
        if (cur) out.push(cur);
        out.push(ch);
        cur = "";
      } else cur += ch;
    }
    if (cur) out.push(cur);
  }
  return out;
}

/**
 * The WordPiece tokenizer of BERT.
 *
 * @example
 * ```ts
 * import { BertTokenizer } from "@texforce/core/adapters";
 * const tok = await BertTokenizer.load("ImageReward/tokenizer");
 * const { inputIds } = tok.encodeBatch(["a photo of a cat"], { maxLength: 35 });
 * ```
 */
export class BertTokenizer {
  /** `[CLS]`. */
  readonly clsTokenId: number;
  /** `[SEP]`. */
  readonly sepTokenId: number;
  /** `[PAD]`. */
  readonly padTokenId: number;
  /** `[UNK]`. */
  readonly unkTokenId: number;
  /** `model_max_length` (512 unless the config says otherwise). */
  readonly maxLength: number;
  /** `do_lower_case`. */
  readonly lowerCase: boolean;
  #vocab = new Map<string, number>();
  #special = new Map<string, number>();
  #specialRe: RegExp | null;
  #stripAccents: boolean | null;
  #chineseChars: boolean;
  #unkToken: string;

  private constructor(files: BertTokenizerFiles) {
    const path = files.path ?? "vocab.txt";
    const lines = files.vocab.split(/\r?\n/);
    if (lines.length && lines[lines.length - 1] === "") lines.pop();
    lines.forEach((t, i) => {
      if (!this.#vocab.has(t)) this.#vocab.set(t, i);
    });
    if (this.#vocab.size === 0) throw new Error(`${path}: empty vocabulary`);
    for (const [t, id] of Object.entries(files.addedTokens ?? {})) {
      if (!Number.isInteger(id) || id < 0) {
        throw new Error(`added_tokens.json: ${JSON.stringify(t)} has id ${JSON.stringify(id)}`);
      }
      this.#vocab.set(t, id);
      this.#special.set(t, id);
    }
    const cfg = files.tokenizerConfig ?? {};
    const idOf = (field: string, fallback: string): number => {
      const tok = tokenContent(cfg[field]) ?? fallback;
      const id = this.#vocab.get(tok);
      if (id === undefined) {
        throw new Error(`${path}: ${field} ${JSON.stringify(tok)} is not in the vocabulary`);
      }
      this.#special.set(tok, id);
      return id;
    };
    this.clsTokenId = idOf("cls_token", "[CLS]");
    this.sepTokenId = idOf("sep_token", "[SEP]");
    this.padTokenId = idOf("pad_token", "[PAD]");
    this.unkTokenId = idOf("unk_token", "[UNK]");
    this.#unkToken = tokenContent(cfg.unk_token) ?? "[UNK]";
    const mask = tokenContent(cfg.mask_token) ?? "[MASK]";
    if (this.#vocab.has(mask)) this.#special.set(mask, this.#vocab.get(mask)!);
    const maxLen = cfg.model_max_length;
    this.maxLength = typeof maxLen === "number" && Number.isInteger(maxLen) && maxLen > 2 &&
        maxLen < 1e6
      ? maxLen
      : 512;
    this.lowerCase = cfg.do_lower_case !== false;
    const sa = cfg.strip_accents;
    this.#stripAccents = typeof sa === "boolean" ? sa : null;
    this.#chineseChars = cfg.tokenize_chinese_chars !== false;
    const escaped = [...this.#special.keys()].sort((a, b) => b.length - a.length)
      .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    this.#specialRe = escaped.length ? new RegExp(`(${escaped.join("|")})`) : null;
  }

  /**
   * Build from file contents.
   *
   * @example
   * ```ts
   * import { BertTokenizer } from "@texforce/core/adapters";
   * const tok = BertTokenizer.fromFiles({ vocab: "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n" });
   * console.log(tok.encode("Hello")); // [4]
   * ```
   */
  static fromFiles(files: BertTokenizerFiles): BertTokenizer {
    return new BertTokenizer(files);
  }

  /**
   * Read a `BertTokenizer.save_pretrained` folder.
   *
   * @example
   * ```ts
   * import { BertTokenizer } from "@texforce/core/adapters";
   * const tok = await BertTokenizer.load("bert-base-uncased");
   * ```
   */
  static async load(dir: string): Promise<BertTokenizer> {
    const vocabPath = join(dir, "vocab.txt");
    let vocab: string;
    try {
      vocab = await Deno.readTextFile(vocabPath);
    } catch (e) {
      throw new Error(
        `${vocabPath}: ${
          e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message
        } (a BERT tokenizer folder needs vocab.txt)`,
      );
    }
    const json = async (name: string): Promise<Record<string, unknown> | undefined> => {
      const p = join(dir, name);
      let text: string;
      try {
        text = await Deno.readTextFile(p);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return undefined;
        throw e;
      }
      try {
        return JSON.parse(text);
      } catch (e) {
        throw new Error(`${p}: invalid JSON (${(e as Error).message})`);
      }
    };
    const cfg = {
      ...(await json("special_tokens_map.json")),
      ...(await json("tokenizer_config.json")),
    };
    return new BertTokenizer({
      vocab,
      addedTokens: (await json("added_tokens.json")) as Record<string, number> | undefined,
      tokenizerConfig: cfg,
      path: vocabPath,
    });
  }

  /** Entries including added tokens. */
  get vocabSize(): number {
    return this.#vocab.size;
  }

  /** Id of a token, if it is in the vocabulary. */
  tokenId(token: string): number | undefined {
    return this.#vocab.get(token);
  }

  /** WordPiece of one basic token. */
  #wordPiece(word: string): string[] | null {
    const chars = [...word];
    if (chars.length > 100) return null;
    const pieces: string[] = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let found: string | null = null;
      while (start < end) {
        const sub = (start > 0 ? "##" : "") + chars.slice(start, end).join("");
        if (this.#vocab.has(sub)) {
          found = sub;
          break;
        }
        end--;
      }
      if (found === null) return null;
      pieces.push(found);
      start = end;
    }
    return pieces;
  }

  /**
   * Tokens of one text (no `[CLS]`/`[SEP]`); unknown words are `[UNK]`'s text.
   *
   * @example
   * ```ts
   * import type { BertTokenizer } from "@texforce/core/adapters";
   * declare const tok: BertTokenizer;
   * console.log(tok.tokenize("UNwant\u00e9d,running")); // un ##want ##ed , runn ##ing
   * ```
   */
  tokenize(text: string): string[] {
    const out: string[] = [];
    const parts = this.#specialRe ? text.split(this.#specialRe) : [text];
    for (let p = 0; p < parts.length; p++) {
      if (p % 2 === 1) {
        out.push(parts[p]);
        continue;
      }
      const words = bertBasicTokenize(parts[p], {
        lowerCase: this.lowerCase,
        stripAccents: this.#stripAccents,
        chineseChars: this.#chineseChars,
      });
      for (const w of words) {
        const pieces = this.#wordPiece(w);
        if (pieces) out.push(...pieces);
        else out.push(this.#unkToken);
      }
    }
    return out;
  }

  /**
   * Ids of one text (no `[CLS]`/`[SEP]`).
   *
   * @example
   * ```ts
   * import type { BertTokenizer } from "@texforce/core/adapters";
   * declare const tok: BertTokenizer;
   * console.log(tok.encode("a photo of a cat"));
   * ```
   */
  encode(text: string): number[] {
    return this.tokenize(text).map((t) => this.#vocab.get(t) ?? this.unkTokenId);
  }

  /**
   * `tokenizer(texts, padding='max_length', truncation=True, max_length)`.
   *
   * @example
   * ```ts
   * import type { BertTokenizer } from "@texforce/core/adapters";
   * declare const tok: BertTokenizer;
   * const { inputIds, attentionMask } = tok.encodeBatch(["a cat", ""], { maxLength: 35 });
   * ```
   */
  encodeBatch(texts: string[], options: BertEncodeOptions = {}): BertEncoding {
    const n = options.maxLength ?? this.maxLength;
    if (!Number.isInteger(n) || n < 2) {
      throw new Error(`BertTokenizer: maxLength must be an integer ≥ 2, got ${n}`);
    }
    const inputIds: number[][] = [];
    const attentionMask: number[][] = [];
    for (const text of texts) {
      if (typeof text !== "string") {
        throw new TypeError(`BertTokenizer: texts must be strings, got ${typeof text}`);
      }
      let body = this.encode(text);
      if ((options.truncation ?? true) && body.length > n - 2) body = body.slice(0, n - 2);
      const ids = [this.clsTokenId, ...body, this.sepTokenId];
      const mask = ids.map(() => 1);
      if (options.padding ?? true) {
        while (ids.length < n) {
          ids.push(this.padTokenId);
          mask.push(0);
        }
      }
      inputIds.push(ids);
      attentionMask.push(mask);
    }
    return { inputIds, attentionMask };
  }
}
