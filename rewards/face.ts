/**
 * `face`: how plausible the main face of an image is to MediaPipe's face models, as shipped
 * (tfjs graph models) in the npm package `@vladmandic/human`.
 *
 * For each image:
 * 1. **BlazeFace** (back-camera model, 256×256 input in [-1, 1]) on the image padded to a square:
 *    896 anchors (16×16 cells × 2 at stride 16, 8×8 cells × 6 at stride 32, each at its cell
 *    centre), each with a logit and box offsets in input pixels (centre x, y relative to the
 *    anchor; width, height); confidence = sigmoid(logit); greedy non-maximum suppression.
 * 2. The **largest** detection (or the one whose centre is nearest the image centre:
 *    `select: central`) is grown 1.4× about its centre, made square, and cut out at 192×192.
 * 3. **FaceMesh** on that crop: its face-flag output is the probability that the crop holds a
 *    face it can fit its 468-point mesh to.
 * 4. Optionally the **anti-spoof** model (128×128 resize of the same crop): its "real" score, the
 *    probability that the face is a live face rather than a photo/screen/print.
 *
 * score = detection confidence × face-mesh confidence × (real, when `antispoof`) × (size, when
 * `sizeTerm`), where size = min(1, s / `sizeTarget`) and s is the detection box's longer side as a
 * fraction of the image's side. No detection at or above `minConfidence` scores 0 (never an
 * exception), so the reward is in [0, 1]. BlazeFace's graph takes one image per call; the crops of
 * a whole batch go through FaceMesh (and the anti-spoof model) in one call.
 *
 * What it measures, compared with the TexForce paper's face reward (pyiqa's TOPIQ-NR-face, a
 * no-reference image-quality model trained on human ratings of face crops): this reward says how
 * confidently two detectors see a frontal-ish, complete face whose landmarks they can place, and
 * (optionally) whether it looks like a real face and fills the frame. It does not rate sharpness,
 * noise, skin texture, lighting or aesthetics the way a face IQA model does, and it saturates near
 * 1 for any clear face; it punishes missing, cut-off, heavily occluded or distorted faces, which is
 * where the paper's "complete face" prompts fail. TOPIQ-NR-face also crashes without a face; this
 * reward returns 0.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { z } from "zod";
import { definePlugin, type Plugin } from "../core/plugin.ts";
import type { Reward, RewardInput } from "../core/reward.ts";
import type { GraphModel, Tensor, Tensor4D } from "../core/tensor_types.ts";
import { checkImages } from "./_images.ts";
import { cropBox, type Detection, nonMaxSuppression, sigmoid } from "./_boxes.ts";
import {
  humanModelDir,
  type LoadedModel,
  loadHumanModel,
  type ModelRecord,
  packageLabel,
} from "./_human_models.ts";
import { resolve } from "node:path";

/**
 * Options of the face reward.
 *
 * @example
 * ```ts
 * import type { FaceOptions } from "@texforce/core/rewards";
 * const o: Partial<FaceOptions> = { select: "central", antispoof: true };
 * ```
 */
export interface FaceOptions {
  /** Which face is scored when there are several: the `largest` box or the most `central`. */
  select: "largest" | "central";
  /** BlazeFace confidence below which a box is no face (default 0.5). */
  minConfidence: number;
  /** Boxes overlapping a better one by more than this IoU are dropped (default 0.3). */
  iouThreshold: number;
  /** Multiply by the anti-spoof model's "real" score (default false). */
  antispoof: boolean;
  /** Multiply by min(1, face side / sizeTarget) (default false). */
  sizeTerm: boolean;
  /** Face side, as a fraction of the image side, that earns the full size term (default 0.3). */
  sizeTarget: number;
  /**
   * A folder holding `blazeface.json`, `facemesh.json`, `antispoof.json` and their `.bin` files
   * (default: the `models/` folder of the installed `@vladmandic/human` package).
   */
  modelDir?: string;
}

const defaults = {
  select: "largest",
  minConfidence: 0.5,
  iouThreshold: 0.3,
  antispoof: false,
  sizeTerm: false,
  sizeTarget: 0.3,
} satisfies Omit<FaceOptions, "modelDir">;

/**
 * What the face reward saw in one image.
 *
 * @example
 * ```ts
 * import type { FaceMeasurement } from "@texforce/core/rewards";
 * const none: FaceMeasurement = { score: 0, faces: 0, detection: 0, mesh: 0 };
 * ```
 */
export interface FaceMeasurement {
  /** The reward. */
  score: number;
  /** Faces found (after non-maximum suppression). */
  faces: number;
  /** BlazeFace confidence of the scored face (0 when none). */
  detection: number;
  /** FaceMesh face confidence on its crop (0 when none). */
  mesh: number;
  /** Anti-spoof "real" score, when enabled. */
  real?: number;
  /** Size term, when enabled. */
  size?: number;
  /** The scored face's detection box [x, y, w, h] as fractions of the image width/height. */
  box?: [number, number, number, number];
}

/**
 * A face reward with per-image details and the records of its models.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { faceReward } from "@texforce/core/rewards";
 * const r = await faceReward();
 * const [m] = await r.measure(tf.zeros([1, 64, 64, 3]));
 * console.log(m.score, r.metadata.models.map((x) => x.name));
 * r.dispose();
 * ```
 */
export interface FaceReward extends Reward {
  /** The models loaded (names, package version, files) and the options in force. */
  readonly metadata: { models: ModelRecord[]; options: Omit<FaceOptions, "modelDir"> };
  /** The score and its parts for each image of a batch [B, H, W, 3] in [0, 1]. */
  measure(images: Tensor4D): Promise<FaceMeasurement[]>;
  /** Release the models. */
  dispose(): void;
}

// Human's detector.scale: the crop FaceMesh was trained on is the detection grown by 1.4.
const CROP_SCALE = 1.4;

// BlazeFace's anchors (in input pixels), the order of its outputs: the stride-16 grid with 2
// anchors per cell, then the stride-32 grid with 6 per cell, row-major.
function blazefaceAnchors(inputSize: number): Float32Array {
  const spec = [{ stride: inputSize / 16, perCell: 2 }, { stride: inputSize / 8, perCell: 6 }];
  const out: number[] = [];
  for (const { stride, perCell } of spec) {
    const cells = Math.ceil(inputSize / stride);
    for (let gy = 0; gy < cells; gy++) {
      for (let gx = 0; gx < cells; gx++) {
        for (let n = 0; n < perCell; n++) out.push(stride * (gx + 0.5), stride * (gy + 0.5));
      }
    }
  }
  return new Float32Array(out);
}

function inputSize(model: GraphModel, name: string, reward: string): number {
  const shape = model.inputs[0]?.shape;
  const size = shape?.[1];
  if (!shape || shape.length !== 4 || !size || size < 1 || shape[2] !== size) {
    throw new Error(
      `${reward}: model '${name}' has input shape [${shape?.join(", ")}], expected [n, s, s, 3]`,
    );
  }
  return size;
}

/**
 * Load the face models (once) and return the reward. Throws with the file's name when a model
 * is missing or corrupt.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { faceReward } from "@texforce/core/rewards";
 * const r = await faceReward({ select: "central" });
 * console.log(await r.score({ images: tf.zeros([2, 512, 512, 3]), prompts: ["a", "b"] })); // [0, 0]
 * r.dispose();
 * ```
 */
export async function faceReward(
  options: Partial<FaceOptions> = {},
  baseDir: string = Deno.cwd(),
): Promise<FaceReward> {
  const { modelDir: dirOption, ...rest } = options;
  const o = { ...defaults, ...rest };
  const dir = dirOption === undefined ? humanModelDir("face") : resolve(baseDir, dirOption);
  const label = packageLabel(dirOption);
  const loaded: LoadedModel[] = [];
  const load = async (name: string): Promise<GraphModel> => {
    const m = await loadHumanModel("face", dir, name, label);
    loaded.push(m);
    return m.model;
  };
  let detector: GraphModel, mesh: GraphModel, spoof: GraphModel | undefined;
  try {
    detector = await load("blazeface");
    mesh = await load("facemesh");
    if (o.antispoof) spoof = await load("antispoof");
  } catch (e) {
    for (const m of loaded) m.model.dispose();
    throw e;
  }
  const detSize = inputSize(detector, "blazeface", "face");
  const meshSize = inputSize(mesh, "facemesh", "face");
  const spoofSize = spoof ? inputSize(spoof, "antispoof", "face") : 0;
  const anchors = blazefaceAnchors(detSize);
  const nAnchors = anchors.length / 2;

  // BlazeFace takes one image at a time (its input is [1, 256, 256, 3]).
  async function detect(image: Tensor4D): Promise<Detection[]> {
    const [, h, w] = image.shape;
    const side = Math.max(h, w);
    const padX = Math.floor((side - w) / 2);
    const padY = Math.floor((side - h) / 2);
    const rows = tf.tidy(() => {
      const padded = tf.pad(image, [[0, 0], [padY, side - h - padY], [padX, side - w - padX], [
        0,
        0,
      ]]);
      const x = tf.sub(
        tf.mul(tf.image.resizeBilinear(padded as Tensor4D, [detSize, detSize]), 2),
        1,
      );
      const outs = detector.execute(x) as Tensor[];
      // Four outputs: logits and regressors of the 512 stride-16 and 384 stride-32 anchors.
      const pick = (n: number, c: number): Tensor => {
        const t = outs.find((t) => t.shape[1] === n && t.shape[2] === c);
        if (!t) throw new Error(`face: blazeface has no [1, ${n}, ${c}] output`);
        return t.reshape([n, c]);
      };
      const small = 2 * (detSize / 16) ** 2;
      const large = nAnchors - small;
      return tf.concat([
        tf.concat([pick(small, 1), pick(small, 16)], 1),
        tf.concat([pick(large, 1), pick(large, 16)], 1),
      ], 0);
    });
    const raw = await rows.data();
    rows.dispose();
    const scale = side / detSize;
    const boxes: Detection[] = [];
    for (let i = 0; i < nAnchors; i++) {
      const r = raw.subarray(i * 17, (i + 1) * 17);
      const score = sigmoid(r[0]);
      if (!(score >= o.minConfidence)) continue;
      const cx = r[1] + anchors[2 * i];
      const cy = r[2] + anchors[2 * i + 1];
      boxes.push({
        x: (cx - r[3] / 2) * scale - padX,
        y: (cy - r[4] / 2) * scale - padY,
        w: r[3] * scale,
        h: r[4] * scale,
        score,
      });
    }
    return nonMaxSuppression(boxes, o.iouThreshold, o.minConfidence);
  }

  function choose(found: Detection[], w: number, h: number): Detection | undefined {
    if (found.length === 0) return undefined;
    const key = o.select === "largest"
      ? (d: Detection) => -(d.w * d.h)
      : (d: Detection) => Math.hypot(d.x + d.w / 2 - w / 2, d.y + d.h / 2 - h / 2);
    return [...found].sort((a, b) => key(a) - key(b))[0];
  }

  async function measure(images: Tensor4D): Promise<FaceMeasurement[]> {
    const [batch, h, w] = checkImages("face", images);
    if (batch === 0) return [];
    if (h === 0 || w === 0) {
      return Array.from({ length: batch }, () => ({ score: 0, faces: 0, detection: 0, mesh: 0 }));
    }
    const chosen: (Detection | undefined)[] = [];
    const counts: number[] = [];
    for (let b = 0; b < batch; b++) {
      const one = tf.slice(images, [b, 0, 0, 0], [1, h, w, 3]) as Tensor4D;
      try {
        const found = await detect(one);
        counts.push(found.length);
        chosen.push(choose(found, w, h));
      } finally {
        one.dispose();
      }
    }
    const withFace = chosen.flatMap((d, b) => (d ? [b] : []));
    let meshScores: ArrayLike<number> = [];
    let realScores: ArrayLike<number> = [];
    if (withFace.length > 0) {
      // One FaceMesh (and anti-spoof) call for every face of the batch.
      const [meshOut, realOut] = tf.tidy(() => {
        const boxes = withFace.map((b) => cropBox(chosen[b]!, w, h, CROP_SCALE, true));
        const crops = tf.image.cropAndResize(images, boxes, withFace, [meshSize, meshSize]);
        const outs = mesh.execute(crops) as Tensor[];
        const flag = outs.find((t) => t.rank === 2 && t.shape[1] === 1);
        if (!flag) throw new Error("face: facemesh has no [n, 1] face-flag output");
        const real = spoof
          ? (spoof.execute(tf.image.resizeBilinear(crops, [spoofSize, spoofSize])) as Tensor)
          : tf.zeros([0]);
        return [flag.reshape([-1]), real.reshape([-1])];
      });
      meshScores = await meshOut.data();
      realScores = await realOut.data();
      meshOut.dispose();
      realOut.dispose();
    }
    return chosen.map((d, b): FaceMeasurement => {
      const m: FaceMeasurement = { score: 0, faces: counts[b], detection: 0, mesh: 0 };
      if (spoof) m.real = 0;
      if (o.sizeTerm) m.size = 0;
      if (!d) return m;
      const k = withFace.indexOf(b);
      m.detection = d.score;
      m.mesh = clamp01(meshScores[k]);
      m.box = [d.x / w, d.y / h, d.w / w, d.h / h];
      let score = m.detection * m.mesh;
      if (spoof) {
        m.real = clamp01(realScores[k]);
        score *= m.real;
      }
      if (o.sizeTerm) {
        m.size = Math.min(1, Math.max(d.w / w, d.h / h) / o.sizeTarget);
        score *= m.size;
      }
      m.score = score;
      return m;
    });
  }

  return {
    name: "face",
    metadata: { models: loaded.map((m) => m.record), options: o },
    measure,
    async score({ images }: RewardInput): Promise<number[]> {
      return (await measure(images)).map((m) => m.score);
    },
    dispose(): void {
      for (const m of loaded) m.model.dispose();
    },
  };
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0;
}

/**
 * The `face` reward plugin.
 *
 * @example
 * ```yaml
 * rewards:
 *   - use: face
 *     options: { select: largest, antispoof: true }
 * ```
 */
export const facePlugin: Plugin<"reward", FaceOptions> = definePlugin({
  kind: "reward",
  name: "face",
  version: "0.1.0",
  description: "BlazeFace confidence × FaceMesh face confidence of the main face (0 if none)",
  options: z.strictObject({
    select: z.enum(["largest", "central"]).default(defaults.select),
    minConfidence: z.number().min(0).max(1).default(defaults.minConfidence),
    iouThreshold: z.number().min(0).max(1).default(defaults.iouThreshold),
    antispoof: z.boolean().default(defaults.antispoof),
    sizeTerm: z.boolean().default(defaults.sizeTerm),
    sizeTarget: z.number().gt(0).max(1).default(defaults.sizeTarget),
    modelDir: z.string().min(1).optional(),
  }),
  create: (options: FaceOptions, context): Promise<Reward> => faceReward(options, context.baseDir),
});
