/**
 * open_clip's tokenizer (`open_clip.tokenize`, what HPSv2 uses), read from its own
 * `bpe_simple_vocab_16e6.txt.gz`: `ftfy.fix_text`, `html.unescape` twice, whitespace collapsed,
 * lower case, the CLIP regex, byte-level BPE, `[sot] + tokens + [eot]` cut to the context length
 * (last id replaced by eot) and padded with **0** — not with eot as SD's `CLIPTokenizer`, and 0
 * is also the id of `!`, so a mask must never be derived from id 0.
 *
 * The vocabulary is open_clip's: the 256 byte symbols, the same with `</w>`, the first 48 894
 * merges joined, then `<start_of_text>` and `<end_of_text>` (49 408 entries).
 *
 * ftfy is reproduced only in the parts that change prompts in practice (see {@linkcode fixText}).
 *
 * @module
 */
import { gunzipSync } from "node:zlib";
import { ClipTokenizer } from "./clip_tokenizer.ts";
import { gpt2ByteSymbols } from "./_gpt2_bytes.ts";

// Latin ligatures ftfy's fix_latin_ligatures expands.
const LIGATURES: Record<string, string> = {
  "\u0132": "IJ",
  "\u0133": "ij",
  "\u0149": "\u02bcn",
  "\u01c7": "LJ",
  "\u01c8": "Lj",
  "\u01c9": "lj",
  "\u01ca": "NJ",
  "\u01cb": "Nj",
  "\u01cc": "nj",
  "\ufb00": "ff",
  "\ufb01": "fi",
  "\ufb02": "fl",
  "\ufb03": "ffi",
  "\ufb04": "ffl",
  "\ufb05": "\u017ft",
  "\ufb06": "st",
};

// Windows-1252's characters for bytes 0x80–0x9f (the C1 range): mojibake is usually UTF-8
// decoded as cp1252, which is how ftfy finds the bytes back.
const CP1252_HIGH =
  "\u20ac\u0081\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u008d\u017d\u008f" +
  "\u0090\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u009d\u017e\u0178";

function singleByte(ch: string): number | undefined {
  const c = ch.codePointAt(0)!;
  if (c < 0x80 || (c >= 0xa0 && c <= 0xff)) return c;
  const i = CP1252_HIGH.indexOf(ch);
  return i >= 0 ? 0x80 + i : undefined;
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Undo UTF-8 read as Latin-1/Windows-1252 (`cafÃ©` → `café`), per run of such characters, as
 * ftfy's `fix_encoding` does for the usual case: a run is replaced only when its bytes are
 * valid UTF-8 holding at least one multi-byte character.
 */
function fixMojibake(text: string): string {
  return text.replace(
    /[\u00a0-\u00ff\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122][\u0080-\u00ff\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]+/g,
    (run) => {
      const bytes: number[] = [];
      for (const ch of run) {
        const b = singleByte(ch);
        if (b === undefined) return run;
        bytes.push(b);
      }
      if (!bytes.some((b) => b >= 0xc2 && b <= 0xf4)) return run;
      // Only the leading part that decodes cleanly is fixed; the rest stays as written.
      for (let end = bytes.length; end >= 2; end--) {
        try {
          const fixed = STRICT_UTF8.decode(new Uint8Array(bytes.slice(0, end)));
          if ([...fixed].some((c) => c.codePointAt(0)! > 0x7f) && fixed.length < end) {
            return fixed + run.slice(end);
          }
        } catch {
          // not UTF-8 this long; try shorter
        }
      }
      return run;
    },
  );
}

/**
 * The parts of `ftfy.fix_text` (ftfy 6 defaults) that matter for prompts: mojibake repair,
 * terminal escapes removed, Latin ligatures expanded, full-width characters narrowed, curly
 * quotes straightened, line breaks unified, C1 controls mapped and control characters dropped,
 * NFC. (ftfy's HTML
 * unescaping is left to the tokenizer's own `html.unescape`.)
 *
 * @example
 * ```ts
 * import { fixText } from "@texforce/core/adapters";
 * console.log(fixText("cafÃ© “quoted”")); // café "quoted"
 * ```
 */
export function fixText(text: string): string {
  // deno-lint-ignore no-control-regex -- terminal escapes are what this removes
  let t = text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
  t = fixMojibake(t);
  // fix_c1_controls: C1 controls are Windows-1252 bytes read as Latin-1.
  t = t.replace(/[\u0080-\u009f]/g, (c) => {
    const mapped = CP1252_HIGH[c.charCodeAt(0) - 0x80];
    return mapped.charCodeAt(0) >= 0xa0 ? mapped : c;
  });
  t = t.replace(/[\u0132\u0133\u0149\u01c7-\u01cc\ufb00-\ufb06]/g, (c) => LIGATURES[c] ?? c);
  // fix_character_width: NFKC on the full-width and half-width forms block only.
  t = t.replace(/[\u3000\uff01-\uffee]/g, (c) => c.normalize("NFKC"));
  t = t.replace(/[\u02bc\u2018-\u201b]/g, "'").replace(/[\u201c-\u201f]/g, '"');
  t = t.replace(/\r\n|[\r\u2028\u2029\u0085]/g, "\n");
  // remove_control_chars: ftfy's CONTROL_CHARS (tab, newline, form feed stay).
  t = t.replace(
    // deno-lint-ignore no-control-regex -- control characters are what this removes
    /[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc\u{1d173}-\u{1d17a}\u{e0000}-\u{e007f}]/gu,
    "",
  );
  return t.normalize("NFC");
}

/** Options of {@linkcode OpenClipTokenizer.encodeBatch}. */
export interface OpenClipEncodeOptions {
  /** Length of every row (default: the context length given at load, 77). */
  contextLength?: number;
}

/**
 * open_clip's `SimpleTokenizer` + `tokenize()`.
 *
 * @example
 * ```ts
 * import { OpenClipTokenizer } from "@texforce/core/adapters";
 * const tok = await OpenClipTokenizer.load("bpe_simple_vocab_16e6.txt.gz");
 * console.log(tok.encodeBatch(["a photo of a cat"])[0].slice(0, 7));
 * ```
 */
export class OpenClipTokenizer {
  /** `<start_of_text>` (49406). */
  readonly sotTokenId: number;
  /** `<end_of_text>` (49407); also the largest id, which is why pooling takes the argmax. */
  readonly eotTokenId: number;
  /** Row length (77). */
  readonly contextLength: number;
  #bpe: ClipTokenizer;

  private constructor(bpe: ClipTokenizer, contextLength: number) {
    this.#bpe = bpe;
    this.sotTokenId = bpe.bosTokenId;
    this.eotTokenId = bpe.eosTokenId;
    this.contextLength = contextLength;
  }

  /**
   * Build from the text of the BPE merges file (already decompressed; first line a header).
   *
   * @example
   * ```ts
   * import { OpenClipTokenizer } from "@texforce/core/adapters";
   * const text = "#version: 0.2\nt h\nth e</w>\n";
   * const tok = OpenClipTokenizer.fromMerges(text, { merges: 2 });
   * ```
   */
  static fromMerges(
    text: string,
    options: { merges?: number; contextLength?: number; path?: string } = {},
  ): OpenClipTokenizer {
    const path = options.path ?? "bpe vocabulary";
    const lines = text.split("\n");
    // open_clip: merges = lines[1 : 49152 - 256 - 2 + 1].
    const count = options.merges ?? 49152 - 256 - 2;
    const merges = lines.slice(1, count + 1);
    if (merges.length < count) {
      throw new Error(`${path}: holds ${merges.length} merges, expected at least ${count}`);
    }
    // GPT-2's byte table in its own order (printable bytes first): open_clip's vocab order.
    const { symbols } = gpt2ByteSymbols();
    const vocabList = [...symbols, ...symbols.map((s) => s + "</w>")];
    for (let i = 0; i < merges.length; i++) {
      const parts = merges[i].split(" ");
      if (parts.length !== 2) {
        throw new Error(`${path}: line ${i + 2} (${JSON.stringify(merges[i])}) is not a merge`);
      }
      vocabList.push(parts[0] + parts[1]);
    }
    vocabList.push("<start_of_text>", "<end_of_text>");
    const vocab: Record<string, number> = {};
    vocabList.forEach((t, i) => {
      if (!(t in vocab)) vocab[t] = i;
    });
    const bpe = ClipTokenizer.fromFiles({
      vocab,
      merges: merges.join("\n"),
      tokenizerConfig: {
        bos_token: "<start_of_text>",
        eos_token: "<end_of_text>",
        unk_token: "<end_of_text>",
        // encodeBatch pads with id 0 itself. "!" (id 0) must not be a special token here:
        // ClipTokenizer splits special tokens out of the text (as transformers does), while
        // open_clip treats "!" as ordinary text.
        pad_token: "<end_of_text>",
        model_max_length: options.contextLength ?? 77,
      },
      paths: { vocab: path, merges: path },
    });
    bpe.htmlUnescape = true;
    return new OpenClipTokenizer(bpe, options.contextLength ?? 77);
  }

  /**
   * Read `bpe_simple_vocab_16e6.txt.gz` (gzip or plain text).
   *
   * @example
   * ```ts
   * import { OpenClipTokenizer } from "@texforce/core/adapters";
   * const tok = await OpenClipTokenizer.load("hpsv2/bpe_simple_vocab_16e6.txt.gz");
   * ```
   */
  static async load(path: string, contextLength = 77): Promise<OpenClipTokenizer> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (e) {
      throw new Error(
        `${path}: cannot read open_clip's BPE vocabulary (${(e as Error).message}); it is ` +
          "bpe_simple_vocab_16e6.txt.gz from the open_clip package",
      );
    }
    let text: string;
    try {
      const raw = bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes;
      text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    } catch (e) {
      throw new Error(`${path}: not a gzip'd UTF-8 BPE file (${(e as Error).message})`);
    }
    return OpenClipTokenizer.fromMerges(text, { path, contextLength });
  }

  /** Number of entries in the vocabulary (49 408). */
  get vocabSize(): number {
    return this.#bpe.vocabSize;
  }

  /**
   * BPE ids of one text (no sot/eot).
   *
   * @example
   * ```ts
   * import type { OpenClipTokenizer } from "@texforce/core/adapters";
   * declare const tok: OpenClipTokenizer;
   * console.log(tok.encode("Tom &amp; Jerry"));
   * ```
   */
  encode(text: string): number[] {
    // basic_clean: ftfy, then html.unescape twice (inside the BPE tokenizer), strip;
    // whitespace_clean and lower() follow there too.
    return this.#bpe.encode(fixText(text));
  }

  /**
   * `open_clip.tokenize(texts)`: rows of `contextLength` ids.
   *
   * @example
   * ```ts
   * import type { OpenClipTokenizer } from "@texforce/core/adapters";
   * declare const tok: OpenClipTokenizer;
   * const rows = tok.encodeBatch(["a cat", ""]);
   * ```
   */
  encodeBatch(texts: string[], options: OpenClipEncodeOptions = {}): number[][] {
    const n = options.contextLength ?? this.contextLength;
    return texts.map((text) => {
      if (typeof text !== "string") {
        throw new TypeError(`OpenClipTokenizer: prompts must be strings, got ${typeof text}`);
      }
      const ids = [this.sotTokenId, ...this.encode(text), this.eotTokenId];
      if (ids.length > n) {
        ids.length = n;
        ids[n - 1] = this.eotTokenId;
      }
      while (ids.length < n) ids.push(0);
      return ids;
    });
  }
}
