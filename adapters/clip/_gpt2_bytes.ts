/**
 * GPT-2's reversible byte → printable character table, shared by the CLIP and open_clip BPE
 * tokenizers.
 *
 * @module
 */

/**
 * The 256 byte symbols in GPT-2's own order (printable bytes first, then the rest mapped to
 * U+0100…): the order of the first 256 entries of open_clip's vocabulary.
 *
 * @example
 * ```ts
 * import { gpt2ByteSymbols } from "./_gpt2_bytes.ts";
 * const { bytes, symbols } = gpt2ByteSymbols();
 * console.log(bytes[0], symbols[0]); // 33 "!"
 * ```
 */
export function gpt2ByteSymbols(): { bytes: number[]; symbols: string[] } {
  const bytes: number[] = [];
  for (let b = 33; b <= 126; b++) bytes.push(b);
  for (let b = 161; b <= 172; b++) bytes.push(b);
  for (let b = 174; b <= 255; b++) bytes.push(b);
  const codes = [...bytes];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bytes.includes(b)) {
      bytes.push(b);
      codes.push(256 + n);
      n++;
    }
  }
  return { bytes, symbols: codes.map((c) => String.fromCharCode(c)) };
}
