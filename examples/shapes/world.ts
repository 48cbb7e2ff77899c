/**
 * The shapes world: scenes of a few coloured circles, squares and triangles on a plain
 * background, the caption grammar that describes them, and the train / held-out split.
 *
 * A scene is either one group ("two small red circles on a gray background") or a pair in a
 * spatial relation ("a large yellow triangle above a green square on a black background").
 * Every caption parses back to exactly one scene description ({@linkcode parseCaption}), so the
 * renderer and the alignment reward read the same facts the caption states.
 *
 * Held-out captions are those that mention one of {@linkcode HELDOUT_PAIRS}, colour–shape
 * combinations that never occur in training (each colour and each shape does, with other
 * partners), so evaluating on them measures generalisation.
 *
 * @example
 * ```ts
 * import { parseCaption, sceneCaption } from "./world.ts";
 * const scene = parseCaption("two red circles on a blue background");
 * console.log(sceneCaption(scene));
 * ```
 *
 * @module
 */

/** Colours a shape can have. */
export const COLOURS = ["red", "green", "blue", "yellow", "purple"] as const;
/** A shape colour. */
export type Colour = typeof COLOURS[number];
/** Background colours (disjoint from shape colours, so the background is never ambiguous). */
export const BACKGROUNDS = ["black", "gray", "white"] as const;
/** A background colour. */
export type Background = typeof BACKGROUNDS[number];
/** Shape kinds. */
export const SHAPES = ["circle", "square", "triangle"] as const;
/** A shape kind. */
export type Shape = typeof SHAPES[number];
/** Sizes a caption can state; `medium` is what an unstated size renders as. */
export const SIZES = ["small", "medium", "large"] as const;
/** A size. */
export type Size = typeof SIZES[number];
/** Spatial relations between the two objects of a pair. */
export const RELATIONS = ["above", "below", "left of", "right of"] as const;
/** A relation. */
export type Relation = typeof RELATIONS[number];

/** The RGB value of every colour name, in [0, 1]. */
export const PALETTE: Readonly<Record<Colour | Background, readonly [number, number, number]>> = {
  red: [0.9, 0.12, 0.1],
  green: [0.1, 0.72, 0.2],
  blue: [0.15, 0.3, 0.95],
  yellow: [0.95, 0.85, 0.1],
  purple: [0.62, 0.2, 0.82],
  black: [0.05, 0.05, 0.05],
  gray: [0.5, 0.5, 0.5],
  white: [0.95, 0.95, 0.95],
};

/** Half-extent in pixels of a shape of each size (on the 32 × 32 canvas). */
export const HALF_SIZE: Readonly<Record<Size, number>> = { small: 3.5, medium: 5, large: 7 };

/** One group of identical objects. */
export interface ObjectGroup {
  /** How many (1–3; pairs have 1 each). */
  count: number;
  /** The size; `null` when the caption does not state it (renders `medium`). */
  size: Size | null;
  /** Colour. */
  colour: Colour;
  /** Kind. */
  shape: Shape;
}

/** What a caption states. */
export interface SceneSpec {
  /** Background colour. */
  background: Background;
  /** One group, or two single objects in `relation`. */
  objects: ObjectGroup[];
  /** How the first object of a pair lies relative to the second. */
  relation?: Relation;
}

/** Colour–shape pairs that never occur in training captions. */
export const HELDOUT_PAIRS: readonly (readonly [Colour, Shape])[] = [
  ["red", "triangle"],
  ["green", "square"],
  ["blue", "circle"],
  ["yellow", "triangle"],
  ["purple", "circle"],
];

const NUMBER_WORDS = ["a", "two", "three"] as const;

function phrase(o: ObjectGroup): string {
  const count = NUMBER_WORDS[o.count - 1];
  const size = o.size ? `${o.size} ` : "";
  return `${count} ${size}${o.colour} ${o.shape}${o.count > 1 ? "s" : ""}`;
}

/**
 * The caption of a scene.
 *
 * @example
 * ```ts
 * import { sceneCaption } from "./world.ts";
 * const c = sceneCaption({
 *   background: "gray",
 *   objects: [{ count: 2, size: "small", colour: "red", shape: "circle" }],
 * });
 * console.log(c); // "two small red circles on a gray background"
 * ```
 */
export function sceneCaption(s: SceneSpec): string {
  const objects = s.relation
    ? `${phrase(s.objects[0])} ${s.relation} ${phrase(s.objects[1])}`
    : phrase(s.objects[0]);
  return `${objects} on a ${s.background} background`;
}

const WORD = (xs: readonly string[]) => `(${xs.join("|")})`;
const GROUP = `${WORD(NUMBER_WORDS)} (?:${WORD(["small", "large"])} )?${WORD(COLOURS)} ${
  WORD(SHAPES)
}s?`;
const CAPTION = new RegExp(
  `^${GROUP}(?: ${WORD(RELATIONS)} ${GROUP})? on a ${WORD(BACKGROUNDS)} background$`,
);

/**
 * Parse a caption of the grammar back into its scene description; throws naming the caption
 * when it is not one.
 *
 * @example
 * ```ts
 * import { parseCaption } from "./world.ts";
 * console.log(parseCaption("a small yellow triangle above a green square on a black background"));
 * ```
 */
export function parseCaption(caption: string): SceneSpec {
  const m = CAPTION.exec(caption.trim().toLowerCase().replace(/\s+/g, " "));
  if (!m) {
    throw new Error(
      `shapes world: '${caption}' is not a caption of the grammar ` +
        `("<count> [small|large] <colour> <shape>[s] [<relation> <object>] on a <background> background")`,
    );
  }
  const group = (i: number): ObjectGroup => {
    const count = NUMBER_WORDS.indexOf(m[i] as typeof NUMBER_WORDS[number]) + 1;
    return {
      count,
      size: (m[i + 1] as Size | undefined) ?? null,
      colour: m[i + 2] as Colour,
      shape: m[i + 3] as Shape,
    };
  };
  const first = group(1);
  const background = m[10] as Background;
  if (m[5] === undefined) {
    return { background, objects: [first] };
  }
  const second = group(6);
  if (first.count !== 1 || second.count !== 1) {
    throw new Error(`shapes world: '${caption}': the objects of a relation are single ("a ...")`);
  }
  return { background, objects: [first, second], relation: m[5] as Relation };
}

/** Whether a scene mentions a held-out colour–shape pair. */
export function isHeldOut(s: SceneSpec): boolean {
  return s.objects.some((o) => HELDOUT_PAIRS.some(([c, k]) => o.colour === c && o.shape === k));
}

/**
 * Every caption of the grammar, in a fixed order: single groups (count × size × colour ×
 * shape × background) and then pairs (first object with an optional size, relation, second
 * object of another colour–shape, background).
 *
 * @example
 * ```ts
 * import { allScenes } from "./world.ts";
 * console.log(allScenes().length);
 * ```
 */
export function allScenes(): SceneSpec[] {
  const out: SceneSpec[] = [];
  const sizes: (Size | null)[] = [null, "small", "large"];
  for (const background of BACKGROUNDS) {
    for (const count of [1, 2, 3]) {
      for (const size of sizes) {
        for (const colour of COLOURS) {
          for (const shape of SHAPES) {
            out.push({ background, objects: [{ count, size, colour, shape }] });
          }
        }
      }
    }
  }
  for (const background of BACKGROUNDS) {
    for (const relation of RELATIONS) {
      for (const size of sizes) {
        for (const c1 of COLOURS) {
          for (const s1 of SHAPES) {
            for (const c2 of COLOURS) {
              for (const s2 of SHAPES) {
                if (c1 === c2) continue; // two objects of one colour would make matching ambiguous
                out.push({
                  background,
                  relation,
                  objects: [
                    { count: 1, size, colour: c1, shape: s1 },
                    { count: 1, size: null, colour: c2, shape: s2 },
                  ],
                });
              }
            }
          }
        }
      }
    }
  }
  return out;
}

/** The two caption splits. */
export interface CaptionSplits {
  /** Captions without a held-out pair. */
  train: string[];
  /** Captions with at least one held-out pair. */
  heldout: string[];
}

/**
 * All captions split into train and held-out.
 *
 * @example
 * ```ts
 * import { captionSplits } from "./world.ts";
 * const { train, heldout } = captionSplits();
 * console.log(train.length, heldout.length);
 * ```
 */
export function captionSplits(): CaptionSplits {
  const train: string[] = [];
  const heldout: string[] = [];
  for (const s of allScenes()) (isHeldOut(s) ? heldout : train).push(sceneCaption(s));
  return { train, heldout };
}

/**
 * A deterministic generator (mulberry32) for picking captions and layouts from a seed.
 *
 * @example
 * ```ts
 * import { Mulberry32 } from "./world.ts";
 * const r = new Mulberry32(1);
 * console.log(r.next(), r.int(10));
 * ```
 */
export class Mulberry32 {
  #s: number;
  /** Start from `seed`. */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** The generator's state (a 32-bit unsigned integer), for {@linkcode Mulberry32.fromState}. */
  state(): number {
    return this.#s;
  }
  /** A generator that continues from {@linkcode Mulberry32.state}. */
  static fromState(state: number): Mulberry32 {
    if (!Number.isInteger(state) || state < 0 || state >= 2 ** 32) {
      throw new Error(`invalid Mulberry32 state: ${state}`);
    }
    return new Mulberry32(state);
  }
}

/**
 * `n` captions drawn from `captions` with `seed`, balanced between single groups and pairs
 * (pairs outnumber single groups in the grammar many times over).
 *
 * @example
 * ```ts
 * import { captionSplits, sampleCaptions } from "./world.ts";
 * console.log(sampleCaptions(captionSplits().heldout, 4, 0));
 * ```
 */
export function sampleCaptions(captions: readonly string[], n: number, seed: number): string[] {
  const singles = captions.filter((c) => !RELATIONS.some((r) => c.includes(` ${r} `)));
  const pairs = captions.filter((c) => RELATIONS.some((r) => c.includes(` ${r} `)));
  const rng = new Mulberry32(seed);
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const pool = (i % 2 === 0 && singles.length) || !pairs.length ? singles : pairs;
    out.push(pool[rng.int(pool.length)]);
  }
  return out;
}
