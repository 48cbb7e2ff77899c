/**
 * How well an image of the shapes world matches its caption, attribute by attribute.
 *
 * The image is read the way the renderer draws it, without any learned model:
 *
 * 1. every pixel takes the nearest colour of {@linkcode PALETTE} (RGB distance);
 * 2. the background is the most common colour along the border;
 * 3. objects are the 4-connected regions of one shape colour, at least {@linkcode MIN_AREA}
 *    pixels (smaller specks are noise);
 * 4. each object's kind comes from its outline: a triangle (apex up) has far less area in the
 *    top half of its bounding box than in the bottom half; of the rest, a square reaches into
 *    the corner pixels of its bounding box (its corner pixels' colour, as a fraction of the way
 *    from the background to the object's and relative to the edges meeting there, averages
 *    ≥ 0.5) and a circle does not; its size is the nearest of small / medium / large by
 *    area for that kind; regions without two interior pixels (anti-aliased edges) are dropped;
 * 5. the caption's objects are matched greedily to detected objects (colour first, then kind,
 *    then size).
 *
 * Scores, each in [0, 1]: `background` (1 if right), `count` (1 − |detected − stated| / stated,
 * floored at 0), `colour` and `shape` (fraction of stated objects whose match has the stated
 * colour / kind), `size` (fraction of stated sizes matched; only when the caption states one),
 * `position` (pairs only: 1 if both objects were found and the first lies on the stated side of
 * the second by more than a pixel). `combined` is the mean of the attributes that apply. A
 * correct rendering of a caption scores 1 on every attribute.
 *
 * @example
 * ```ts
 * import { parseCaption } from "./world.ts";
 * import { renderScene } from "./render.ts";
 * import { alignment } from "./alignment.ts";
 * const caption = "two red circles on a gray background";
 * const { pixels } = renderScene(parseCaption(caption), 0);
 * console.log(alignment(pixels, 32, 32, caption).combined); // 1
 * ```
 *
 * @module
 */
import {
  BACKGROUNDS,
  type Colour,
  COLOURS,
  HALF_SIZE,
  PALETTE,
  parseCaption,
  type Shape,
  type Size,
  SIZES,
} from "./world.ts";

/** The attributes scored. */
export const ATTRIBUTES = ["background", "count", "colour", "shape", "size", "position"] as const;
/** One attribute. */
export type Attribute = typeof ATTRIBUTES[number];

/** Per-attribute scores (`null`: the caption does not state it) and their mean. */
export type AlignmentScores = Record<Attribute, number | null> & { combined: number };

/** Regions smaller than this many pixels are ignored. */
export const MIN_AREA = 6;

const NAMES = [...COLOURS, ...BACKGROUNDS] as const;
const SHAPE_CLASSES = COLOURS.length; // classes 0..4 are shape colours

/** A detected object. */
export interface DetectedObject {
  /** Colour class. */
  colour: Colour;
  /** Kind read from the outline. */
  shape: Shape;
  /** Size read from the area. */
  size: Size;
  /** Pixels. */
  area: number;
  /** Centroid x. */
  x: number;
  /** Centroid y. */
  y: number;
}

/** What the analysis saw in an image. */
export interface ImageAnalysis {
  /** The background colour name. */
  background: string;
  /** Objects, largest first. */
  objects: DetectedObject[];
}

/** Expected area of a shape of half-extent `h` as the renderer draws it. */
function expectedArea(shape: Shape, h: number): number {
  if (shape === "circle") return Math.PI * h * h;
  if (shape === "square") return (1.8 * h) ** 2;
  return 2 * h * h;
}

/**
 * Read the background and objects of an image ([h, w, 3] row-major RGB in [0, 1]).
 *
 * @example
 * ```ts
 * import { analyseImage } from "./alignment.ts";
 * const a = analyseImage(new Float32Array(32 * 32 * 3), 32, 32);
 * console.log(a.background, a.objects.length); // black 0
 * ```
 */
export function analyseImage(pixels: ArrayLike<number>, h: number, w: number): ImageAnalysis {
  const n = h * w;
  const cls = new Uint8Array(n);
  const palette = NAMES.map((k) => PALETTE[k]);
  for (let i = 0; i < n; i++) {
    const [r, g, b] = [pixels[3 * i], pixels[3 * i + 1], pixels[3 * i + 2]];
    let best = 0;
    let bestD = Infinity;
    for (let k = 0; k < palette.length; k++) {
      const p = palette[k];
      const d = (r - p[0]) ** 2 + (g - p[1]) ** 2 + (b - p[2]) ** 2;
      if (d < bestD) {
        bestD = d;
        best = k;
      }
    }
    cls[i] = best;
  }
  const border = new Array(NAMES.length).fill(0);
  for (let x = 0; x < w; x++) {
    border[cls[x]]++;
    border[cls[(h - 1) * w + x]]++;
  }
  for (let y = 1; y < h - 1; y++) {
    border[cls[y * w]]++;
    border[cls[y * w + w - 1]]++;
  }
  const bgClass = border.indexOf(Math.max(...border));
  const seen = new Uint8Array(n);
  const objects: DetectedObject[] = [];
  const stack: number[] = [];
  for (let start = 0; start < n; start++) {
    const c = cls[start];
    if (seen[start] || c >= SHAPE_CLASSES || c === bgClass) continue;
    const members: number[] = [];
    seen[start] = 1;
    stack.push(start);
    while (stack.length) {
      const i = stack.pop()!;
      members.push(i);
      const [y, x] = [Math.floor(i / w), i % w];
      const next = [
        y > 0 ? i - w : -1,
        y < h - 1 ? i + w : -1,
        x > 0 ? i - 1 : -1,
        x < w - 1 ? i + 1 : -1,
      ];
      for (const j of next) {
        if (j >= 0 && !seen[j] && cls[j] === c) {
          seen[j] = 1;
          stack.push(j);
        }
      }
    }
    // A region with no pixel whose four neighbours share its colour is an anti-aliased edge
    // (a blend of two palette colours can be nearest to a third), not an object.
    const interior = members.filter((i) => {
      const [y, x] = [Math.floor(i / w), i % w];
      return y > 0 && y < h - 1 && x > 0 && x < w - 1 && cls[i - w] === c && cls[i + w] === c &&
        cls[i - 1] === c && cls[i + 1] === c;
    }).length;
    if (members.length < MIN_AREA || interior < 2) continue;
    // Grow the region over neighbouring edge pixels that are at least half-way from the
    // background to its colour: blends of two palette colours often sit nearer a third one.
    const bgRgb = palette[bgClass];
    const own = palette[c];
    const span = (own[0] - bgRgb[0]) ** 2 + (own[1] - bgRgb[1]) ** 2 + (own[2] - bgRgb[2]) ** 2;
    const alpha = (i: number) => {
      let dot = 0;
      for (let k = 0; k < 3; k++) dot += (pixels[3 * i + k] - bgRgb[k]) * (own[k] - bgRgb[k]);
      return Math.min(1, Math.max(0, dot / span));
    };
    const inRegion = new Set(members);
    for (let m = 0; m < members.length; m++) {
      const i = members[m];
      const [y, x] = [Math.floor(i / w), i % w];
      for (const j of [y > 0 ? i - w : -1, y < h - 1 ? i + w : -1, x > 0 ? i - 1 : -1]) {
        if (j >= 0 && !inRegion.has(j) && !seen[j] && alpha(j) >= 0.5) {
          inRegion.add(j);
          members.push(j);
        }
      }
      const j = x < w - 1 ? i + 1 : -1;
      if (j >= 0 && !inRegion.has(j) && !seen[j] && alpha(j) >= 0.5) {
        inRegion.add(j);
        members.push(j);
      }
    }
    let [x0, x1, y0, y1, sx, sy] = [w, -1, h, -1, 0, 0];
    for (const i of members) {
      const [y, x] = [Math.floor(i / w), i % w];
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
      sx += x;
      sy += y;
    }
    const midY = (y0 + y1) / 2;
    let top = 0;
    let bottom = 0;
    for (const i of members) {
      const y = Math.floor(i / w);
      if (y < midY) top++;
      else if (y > midY) bottom++;
    }
    const area = members.length;
    // How much of the object's colour the four corner pixels of its box hold (0: background,
    // 1: the object's colour): a square reaches into its corners, a circle does not.
    // Each corner relative to the product of the two edges meeting there (measured at their
    // middles), so that a square whose edges cover only half a pixel still reads as filled.
    const [mx, my] = [Math.round((x0 + x1) / 2), Math.round((y0 + y1) / 2)];
    let corners = 0;
    for (const [x, y] of [[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) {
      const edges = alpha(my * w + x) * alpha(y * w + mx);
      corners += Math.min(1, alpha(y * w + x) / Math.max(edges, 0.05)) / 4;
    }
    const shape: Shape = top < 0.6 * bottom ? "triangle" : corners >= 0.5 ? "square" : "circle";
    let size: Size = "medium";
    let bestD = Infinity;
    for (const s of SIZES) {
      const d = Math.abs(Math.log(area / expectedArea(shape, HALF_SIZE[s])));
      if (d < bestD) {
        bestD = d;
        size = s;
      }
    }
    objects.push({
      colour: NAMES[c] as Colour,
      shape,
      size,
      area,
      x: sx / area + 0.5,
      y: sy / area + 0.5,
    });
  }
  objects.sort((a, b) => b.area - a.area);
  return { background: NAMES[bgClass], objects };
}

/**
 * Score an image ([h, w, 3] RGB in [0, 1]) against a caption of the shapes world.
 *
 * @example
 * ```ts
 * import { alignment } from "./alignment.ts";
 * const s = alignment(new Float32Array(32 * 32 * 3), 32, 32, "a red circle on a black background");
 * console.log(s.background, s.colour, s.combined); // 1 0 0.25
 * ```
 */
export function alignment(
  pixels: ArrayLike<number>,
  h: number,
  w: number,
  caption: string,
): AlignmentScores {
  const spec = parseCaption(caption);
  const seen = analyseImage(pixels, h, w);
  const wanted = spec.objects.flatMap((g) =>
    Array.from({ length: g.count }, () => ({ colour: g.colour, shape: g.shape, size: g.size }))
  );
  const free = seen.objects.map(() => true);
  const match = wanted.map((o) => {
    let best = -1;
    let bestScore = -1;
    seen.objects.forEach((d, j) => {
      if (!free[j]) return;
      const s = 4 * Number(d.colour === o.colour) + 2 * Number(d.shape === o.shape) +
        Number(o.size !== null && d.size === o.size);
      if (s > bestScore) {
        bestScore = s;
        best = j;
      }
    });
    if (best >= 0) free[best] = false;
    return best >= 0 ? seen.objects[best] : null;
  });
  const frac = (xs: boolean[]) => (xs.length ? xs.filter(Boolean).length / xs.length : null);
  const stated = wanted.map((o, i) => ({ o, d: match[i] })).filter(({ o }) => o.size !== null);
  let position: number | null = null;
  if (spec.relation) {
    const [a, b] = match;
    if (!a || !b) position = 0;
    else {
      const ok = spec.relation === "above"
        ? a.y < b.y - 1
        : spec.relation === "below"
        ? a.y > b.y + 1
        : spec.relation === "left of"
        ? a.x < b.x - 1
        : a.x > b.x + 1;
      position = Number(ok);
    }
  }
  const scores: Record<Attribute, number | null> = {
    background: Number(seen.background === spec.background),
    count: Math.max(0, 1 - Math.abs(seen.objects.length - wanted.length) / wanted.length),
    colour: frac(wanted.map((o, i) => match[i]?.colour === o.colour)),
    shape: frac(wanted.map((o, i) => match[i]?.shape === o.shape)),
    size: frac(stated.map(({ o, d }) => d?.size === o.size)),
    position,
  };
  const applied = ATTRIBUTES.map((a) => scores[a]).filter((v): v is number => v !== null);
  return { ...scores, combined: applied.reduce((s, v) => s + v, 0) / applied.length };
}
