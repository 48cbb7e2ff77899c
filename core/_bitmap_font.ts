// A 5×8 bitmap font (the classic 5×7 glcdfont, with a descender row) for labels drawn into
// images without any font on the system. Printable ASCII only; anything else draws as '?'.
// Each glyph is 5 columns, least significant bit at the top.
const GLYPHS: string = "0000000000" + "00005f0000" + "0007000700" + "147f147f14" + "242a7f2a12" +
  "2313086462" +
  "3649562050" + "0008070300" + "001c224100" + "0041221c00" + "2a1c7f1c2a" + "08083e0808" +
  "0080703000" + "0808080808" + "0000606000" + "2010080402" + "3e5149453e" + "00427f4000" +
  "7249494946" + "2141494d33" + "1814127f10" + "2745454539" + "3c4a494931" + "4121110907" +
  "3649494936" + "464949291e" + "0000140000" + "0040340000" + "0008142241" + "1414141414" +
  "0041221408" + "0201590906" + "3e415d594e" + "7c1211127c" + "7f49494936" + "3e41414122" +
  "7f4141413e" + "7f49494941" + "7f09090901" + "3e41415173" + "7f0808087f" + "00417f4100" +
  "2040413f01" + "7f08142241" + "7f40404040" + "7f021c027f" + "7f0408107f" + "3e4141413e" +
  "7f09090906" + "3e4151215e" + "7f09192946" + "2649494932" + "03017f0103" + "3f4040403f" +
  "1f2040201f" + "3f4038403f" + "6314081463" + "0304780403" + "6159494d43" + "007f414141" +
  "0204081020" + "004141417f" + "0402010204" + "4040404040" + "0003070800" + "2054547840" +
  "7f28444438" + "3844444428" + "384444287f" + "3854545418" + "00087e0902" + "18a4a49c78" +
  "7f08040478" + "00447d4000" + "2040403d00" + "7f10284400" + "00417f4000" + "7c04780478" +
  "7c08040478" + "3844444438" + "fc18242418" + "18242418fc" + "7c08040408" + "4854545424" +
  "04043f4424" + "3c4040207c" + "1c2040201c" + "3c4030403c" + "4428102844" + "4c9090907c" +
  "4464544c44" + "0008364100" + "00007f0000" + "0041360800" + "0201020402";

/** Glyph cell: 6 pixels advance (5 + 1 space), 10 pixels per line (8 + 2). */
export const GLYPH_ADVANCE = 6;
/** Line height in font pixels. */
export const LINE_HEIGHT = 10;

function glyph(ch: string): number[] {
  let code = ch.charCodeAt(0);
  if (code < 32 || code > 126) code = 63; // '?'
  const i = (code - 32) * 10;
  return [0, 1, 2, 3, 4].map((k) => parseInt(GLYPHS.slice(i + 2 * k, i + 2 * k + 2), 16));
}

// Common typographic characters spelt in ASCII so that captions stay readable.
const ASCII: Record<string, string> = {
  "·": "-",
  "…": "...",
  "±": "+/-",
  "×": "x",
  "→": "->",
  "—": "-",
  "–": "-",
  "’": "'",
  "‘": "'",
  "“": '"',
  "”": '"',
  "≈": "~",
  "≤": "<=",
  "≥": ">=",
};

/** `text` with non-ASCII characters replaced by ASCII look-alikes or '?'. */
export function toAscii(text: string): string {
  return [...text].map((c) => ASCII[c] ?? c).join("");
}

/** Width in image pixels of `text` at `scale`. */
export function textWidth(text: string, scale: number): number {
  const n = toAscii(text).length;
  return n === 0 ? 0 : (n * GLYPH_ADVANCE - 1) * scale;
}

/** Greedy word wrap to lines of at most `maxWidth` pixels; long words are split. */
export function wrapText(text: string, maxWidth: number, scale: number): string[] {
  const per = Math.max(1, Math.floor((maxWidth / scale + 1) / GLYPH_ADVANCE));
  const lines: string[] = [];
  let line = "";
  for (let word of toAscii(text).split(/\s+/).filter(Boolean)) {
    while (word.length > per) {
      if (line) lines.push(line);
      lines.push(word.slice(0, per));
      line = "";
      word = word.slice(per);
    }
    const next = line ? `${line} ${word}` : word;
    if (next.length <= per) line = next;
    else {
      lines.push(line);
      line = word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

/** An RGB canvas: `width · height · 3` bytes. */
export interface Canvas {
  width: number;
  height: number;
  data: Uint8Array;
}

/** Draw `text` with its top-left corner at (x, y), each font pixel a `scale`×`scale` block. */
export function drawText(
  canvas: Canvas,
  x: number,
  y: number,
  text: string,
  scale: number,
  rgb: [number, number, number] = [0, 0, 0],
): void {
  let cx = x;
  for (const ch of toAscii(text)) {
    const cols = glyph(ch);
    for (let c = 0; c < 5; c++) {
      for (let r = 0; r < 8; r++) {
        if (!((cols[c] >> r) & 1)) continue;
        for (let dy = 0; dy < scale; dy++) {
          const py = y + r * scale + dy;
          if (py < 0 || py >= canvas.height) continue;
          for (let dx = 0; dx < scale; dx++) {
            const px = cx + c * scale + dx;
            if (px < 0 || px >= canvas.width) continue;
            const o = (py * canvas.width + px) * 3;
            canvas.data[o] = rgb[0];
            canvas.data[o + 1] = rgb[1];
            canvas.data[o + 2] = rgb[2];
          }
        }
      }
    }
    cx += GLYPH_ADVANCE * scale;
  }
}
