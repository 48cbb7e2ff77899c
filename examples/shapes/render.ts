/**
 * The deterministic renderer of the shapes world: a scene description and a seed give one
 * 32 × 32 RGB image (4 × 4 supersampled edges), the same bytes on every machine.
 *
 * @example
 * ```ts
 * import { parseCaption } from "./world.ts";
 * import { renderScene } from "./render.ts";
 * const { pixels } = renderScene(parseCaption("two red circles on a blue background"), 0);
 * console.log(pixels.length); // 32 * 32 * 3
 * ```
 *
 * @module
 */
import { HALF_SIZE, Mulberry32, PALETTE, type SceneSpec, type Shape } from "./world.ts";

/** The canvas side in pixels. */
export const CANVAS = 32;

/** One object as drawn. */
export interface PlacedObject {
  /** Centre x (pixels, left to right). */
  x: number;
  /** Centre y (pixels, top to bottom). */
  y: number;
  /** Half-extent in pixels. */
  half: number;
  /** Kind. */
  shape: Shape;
  /** RGB. */
  rgb: readonly [number, number, number];
}

/** A rendered scene. */
export interface Rendered {
  /** [32, 32, 3] row-major RGB in [0, 1]. */
  pixels: Float32Array;
  /** The objects, in caption order. */
  objects: PlacedObject[];
}

/** Whether the point (px, py) lies inside the object (shapes chosen to read apart by fill). */
export function inside(o: PlacedObject, px: number, py: number): boolean {
  const dx = px - o.x;
  const dy = py - o.y;
  switch (o.shape) {
    case "circle":
      return dx * dx + dy * dy <= o.half * o.half;
    case "square": {
      const h = o.half * 0.9;
      return Math.abs(dx) <= h && Math.abs(dy) <= h;
    }
    case "triangle": {
      // Apex up; the base spans the full width at the bottom.
      const t = (dy + o.half) / (2 * o.half);
      return t >= 0 && t <= 1 && Math.abs(dx) <= o.half * t;
    }
  }
}

const overlaps = (a: PlacedObject, b: PlacedObject, gap: number) =>
  Math.abs(a.x - b.x) < a.half + b.half + gap && Math.abs(a.y - b.y) < a.half + b.half + gap;

/** Place the scene's objects from `seed` (rejection sampling, then a fixed fallback grid). */
export function layout(spec: SceneSpec, seed: number): PlacedObject[] {
  const rng = new Mulberry32(seed * 7919 + 17);
  const objs = spec.objects.flatMap((g) =>
    Array.from({ length: g.count }, () => ({
      half: HALF_SIZE[g.size ?? "medium"],
      shape: g.shape,
      rgb: PALETTE[g.colour],
    }))
  );
  const margin = 1;
  const coord = (half: number) => half + margin + rng.next() * (CANVAS - 2 * (half + margin));
  if (spec.relation) {
    const [a, b] = objs;
    for (let attempt = 0; attempt < 200; attempt++) {
      const pa = { ...a, x: coord(a.half), y: coord(a.half) };
      const pb = { ...b, x: coord(b.half), y: coord(b.half) };
      const [dx, dy] = [pa.x - pb.x, pa.y - pb.y];
      const apart = spec.relation === "above" || spec.relation === "below"
        ? Math.abs(dy) >= a.half + b.half + 2 && Math.abs(dx) <= Math.abs(dy) / 2
        : Math.abs(dx) >= a.half + b.half + 2 && Math.abs(dy) <= Math.abs(dx) / 2;
      const right = spec.relation === "above"
        ? dy < 0
        : spec.relation === "below"
        ? dy > 0
        : spec.relation === "left of"
        ? dx < 0
        : dx > 0;
      if (apart && right) return [pa, pb];
    }
    const c = CANVAS / 2;
    const off = (a.half + b.half) / 2 + 1.5;
    const [ax, ay, bx, by] = spec.relation === "above"
      ? [c, c - off, c, c + off]
      : spec.relation === "below"
      ? [c, c + off, c, c - off]
      : spec.relation === "left of"
      ? [c - off, c, c + off, c]
      : [c + off, c, c - off, c];
    return [{ ...a, x: ax, y: ay }, { ...b, x: bx, y: by }];
  }
  for (let attempt = 0; attempt < 500; attempt++) {
    const placed: PlacedObject[] = [];
    for (const o of objs) {
      const p = { ...o, x: coord(o.half), y: coord(o.half) };
      if (placed.some((q) => overlaps(p, q, 1.5))) break;
      placed.push(p);
    }
    if (placed.length === objs.length) return placed;
  }
  // Fallback: a fixed row (three large objects always fit across 32 pixels in two rows).
  return objs.map((o, i) => ({
    ...o,
    x: i < 2 ? 8 + 16 * i : 16,
    y: objs.length > 2 ? (i < 2 ? 8 : 24) : 16,
  }));
}

/**
 * Render a scene with `seed` choosing the layout.
 *
 * @example
 * ```ts
 * import { parseCaption } from "./world.ts";
 * import { renderScene } from "./render.ts";
 * const r = renderScene(parseCaption("a large green square on a white background"), 3);
 * console.log(r.objects[0].x, r.objects[0].y);
 * ```
 */
export function renderScene(spec: SceneSpec, seed: number): Rendered {
  const objects = layout(spec, seed);
  const bg = PALETTE[spec.background];
  const pixels = new Float32Array(CANVAS * CANVAS * 3);
  const ss = 4;
  for (let y = 0; y < CANVAS; y++) {
    for (let x = 0; x < CANVAS; x++) {
      let r = 0, g = 0, b = 0;
      for (let sy = 0; sy < ss; sy++) {
        for (let sx = 0; sx < ss; sx++) {
          const px = x + (sx + 0.5) / ss;
          const py = y + (sy + 0.5) / ss;
          let c = bg;
          // Later objects are drawn over earlier ones (they never overlap in a layout).
          for (const o of objects) if (inside(o, px, py)) c = o.rgb;
          r += c[0];
          g += c[1];
          b += c[2];
        }
      }
      const i = (y * CANVAS + x) * 3;
      const n = ss * ss;
      pixels[i] = r / n;
      pixels[i + 1] = g / n;
      pixels[i + 2] = b / n;
    }
  }
  return { pixels, objects };
}
