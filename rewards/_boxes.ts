// Boxes of detectors: greedy non-maximum suppression, and crop boxes in the normalised
// [y1, x1, y2, x2] layout that tf.image.cropAndResize reads.

/** An axis-aligned box in pixels of the image it was found in, with its confidence. */
export interface Detection {
  /** Left edge. */
  x: number;
  /** Top edge. */
  y: number;
  /** Width. */
  w: number;
  /** Height. */
  h: number;
  /** Confidence in [0, 1]. */
  score: number;
}

function iou(a: Detection, b: Detection): number {
  const ix = Math.max(0, Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x));
  const iy = Math.max(0, Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y));
  const inter = ix * iy;
  const union = a.w * a.h + b.w * b.h - inter;
  return union > 0 ? inter / union : 0;
}

/**
 * Greedy NMS: the detections at or above `minScore`, best first, dropping each that overlaps a
 * kept one by more than `iouThreshold`; at most `maxKeep`.
 */
export function nonMaxSuppression(
  boxes: Detection[],
  iouThreshold: number,
  minScore: number,
  maxKeep = Infinity,
): Detection[] {
  const sorted = boxes.filter((b) => b.score >= minScore && b.w > 0 && b.h > 0)
    .sort((a, b) => b.score - a.score);
  const kept: Detection[] = [];
  for (const b of sorted) {
    if (kept.length >= maxKeep) break;
    if (kept.every((k) => iou(k, b) <= iouThreshold)) kept.push(b);
  }
  return kept;
}

/**
 * The crop box of a detection for `tf.image.cropAndResize`: grown by `scale` about its centre,
 * made square when `square` (the longer side), normalised by the image size; it may reach past
 * the image (cropAndResize fills outside with 0).
 */
export function cropBox(
  d: Detection,
  imageWidth: number,
  imageHeight: number,
  scale: number,
  square: boolean,
): [number, number, number, number] {
  const cx = d.x + d.w / 2;
  const cy = d.y + d.h / 2;
  let w = d.w * scale;
  let h = d.h * scale;
  if (square) w = h = Math.max(w, h);
  return [
    (cy - h / 2) / imageHeight,
    (cx - w / 2) / imageWidth,
    (cy + h / 2) / imageHeight,
    (cx + w / 2) / imageWidth,
  ];
}

/** Logistic function, safe for large |x|. */
export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}
