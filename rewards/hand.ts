/**
 * `hand`: how confidently a hand detector sees a hand in an image, optionally checked by a hand
 * landmark model, both as shipped (tfjs graph models) in the npm package `@vladmandic/human`.
 *
 * For each image:
 * 1. **HandTrack** (an SSD detector after victordibia/handtracking, per Human's source; int32
 *    RGB input in 0…255; the graph resizes to 320×320 itself, so the image is resized to 320×320)
 *    gives, for each of its 12,804 anchor boxes, a sigmoid confidence for seven classes: `hand`,
 *    `fist`, `pinch`, `point`, `face`, `tip`, `pinchtip`, and a decoded box [y1, x1, y2, x2] in
 *    [0, 1] (read at the post-processor's inputs, before the graph's own NMS).
 * 2. A box's hand confidence is the highest of its counted classes (option `classes`; default the
 *    four whole-hand poses `hand`, `fist`, `pinch`, `point`: a fist or a pointing hand is a hand;
 *    `face` is never a hand; `tip` and `pinchtip` mark fingertips, not hands, and count only if
 *    listed). The image's detection score is the highest over all boxes, like the paper's YOLO
 *    reward takes the highest hand confidence over its 7×7 grid.
 * 3. Optionally (`landmarks`, default on) **HandLandmark-lite** (MediaPipe, 224×224 in [0, 1]) on
 *    that box grown 1.4× (as Human crops it): its hand-presence probability. A hand the detector
 *    likes but whose 21 joints the landmark model cannot place (a malformed hand, a blob) scores
 *    lower. Its hand-flag output is already a probability (measured 0.001 … 0.99 on photos, 0.014
 *    on a black crop); Human passes it through a further sigmoid, which this reward does not.
 *
 * score = detection × (presence, when `landmarks`); 0 when the detection is below
 * `minConfidence` (no hand; never an exception). In [0, 1]. Both graphs take one image per call
 * (their inputs are [1, …]), so a batch is scored image by image.
 *
 * Compared with the paper (a Keras YOLO hand detector; reward = max confidence over the 7×7
 * grid): the detection term is the same idea with a different detector (its own false positives
 * and training data; it sees faces as a separate class so they are not counted). The presence
 * term has no counterpart there; it is what makes the reward prefer well-formed hands over
 * hand-coloured shapes. Neither rates finger count or anatomy directly.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { resolve } from "node:path";
import { z } from "zod";
import { definePlugin, type Plugin } from "../core/plugin.ts";
import type { Reward, RewardInput } from "../core/reward.ts";
import type { GraphModel, Tensor, Tensor4D } from "../core/tensor_types.ts";
import { checkImages } from "./_images.ts";
import { cropBox, type Detection } from "./_boxes.ts";
import {
  humanModelDir,
  type LoadedModel,
  loadHumanModel,
  type ModelRecord,
  packageLabel,
} from "./_human_models.ts";

/** HandTrack's classes, in the order of its score columns. */
export const HAND_CLASSES = ["hand", "fist", "pinch", "point", "face", "tip", "pinchtip"] as const;
/** One of HandTrack's classes. */
export type HandClass = typeof HAND_CLASSES[number];

/**
 * Options of the hand reward.
 *
 * @example
 * ```ts
 * import type { HandOptions } from "@texforce/core/rewards";
 * const o: Partial<HandOptions> = { landmarks: false, classes: ["hand", "fist"] };
 * ```
 */
export interface HandOptions {
  /** HandTrack classes that count as a hand (default hand, fist, pinch, point). */
  classes: Exclude<HandClass, "face">[];
  /**
   * Detection confidence below which the image has no hand and scores 0 (default 0.2; the best
   * boxes on blank, grey and noise images measured 0.03 … 0.06).
   */
  minConfidence: number;
  /** Multiply by HandLandmark-lite's hand presence on the crop (default true). */
  landmarks: boolean;
  /**
   * A folder holding `handtrack.json`, `handlandmark-lite.json` and their `.bin` files (default:
   * the `models/` folder of the installed `@vladmandic/human` package).
   */
  modelDir?: string;
}

const defaults = {
  classes: ["hand", "fist", "pinch", "point"],
  minConfidence: 0.2,
  landmarks: true,
} satisfies Omit<HandOptions, "modelDir">;

/**
 * What the hand reward saw in one image.
 *
 * @example
 * ```ts
 * import type { HandMeasurement } from "@texforce/core/rewards";
 * const none: HandMeasurement = { score: 0, detection: 0 };
 * ```
 */
export interface HandMeasurement {
  /** The reward. */
  score: number;
  /** Highest counted-class confidence over HandTrack's boxes (reported even below the cut). */
  detection: number;
  /** The class of that box. */
  label?: HandClass;
  /** HandLandmark-lite presence on its crop, when enabled and a hand was found. */
  presence?: number;
  /** That box [x, y, w, h] as fractions of the image width/height. */
  box?: [number, number, number, number];
}

/**
 * A hand reward with per-image details and the records of its models.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { handReward } from "@texforce/core/rewards";
 * const r = await handReward();
 * const [m] = await r.measure(tf.zeros([1, 64, 64, 3]));
 * console.log(m.score, r.metadata.models.map((x) => x.name));
 * r.dispose();
 * ```
 */
export interface HandReward extends Reward {
  /** The models loaded (names, package version, files) and the options in force. */
  readonly metadata: { models: ModelRecord[]; options: Omit<HandOptions, "modelDir"> };
  /** The score and its parts for each image of a batch [B, H, W, 3] in [0, 1]. */
  measure(images: Tensor4D): Promise<HandMeasurement[]>;
  /** Release the models. */
  dispose(): void;
}

// The post-processor's inputs: class scores after the sigmoid, background column removed
// ([1, n, 7]), and decoded boxes ([1, n, 1, 4]); the graph's own NMS would follow.
const SCORES_NODE = "StatefulPartitionedCall/Postprocessor/Slice";
const BOXES_NODE = "StatefulPartitionedCall/Postprocessor/ExpandDims_1";
// HandTrack's exported input size (its graph resizes any input to it).
const DETECTOR_SIZE = 320;
// Human's detectorExpandFact: the landmark model's crop is the detection grown by 1.4.
const CROP_SCALE = 1.4;

/**
 * Load the hand models (once) and return the reward. Throws with the file's name when a model
 * is missing or corrupt.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { handReward } from "@texforce/core/rewards";
 * const r = await handReward({ landmarks: true });
 * console.log(await r.score({ images: tf.zeros([1, 512, 512, 3]), prompts: ["a hand"] })); // [0]
 * r.dispose();
 * ```
 */
export async function handReward(
  options: Partial<HandOptions> = {},
  baseDir: string = Deno.cwd(),
): Promise<HandReward> {
  const { modelDir: dirOption, ...rest } = options;
  const o = { ...defaults, ...rest };
  for (const c of o.classes) {
    if (!HAND_CLASSES.includes(c) || (c as HandClass) === "face") {
      throw new Error(
        `hand: unknown class '${c}' in classes (expected some of ${
          HAND_CLASSES.filter((x) => x !== "face").join(", ")
        })`,
      );
    }
  }
  if (o.classes.length === 0) throw new Error("hand: classes is empty (count at least 'hand')");
  const counted = o.classes.map((c) => HAND_CLASSES.indexOf(c));
  const dir = dirOption === undefined ? humanModelDir("hand") : resolve(baseDir, dirOption);
  const label = packageLabel(dirOption);
  const loaded: LoadedModel[] = [];
  const load = async (name: string): Promise<GraphModel> => {
    const m = await loadHumanModel("hand", dir, name, label);
    loaded.push(m);
    return m.model;
  };
  let detector: GraphModel, landmark: GraphModel | undefined;
  try {
    detector = await load("handtrack");
    if (o.landmarks) landmark = await load("handlandmark-lite");
  } catch (e) {
    for (const m of loaded) m.model.dispose();
    throw e;
  }
  const lmShape = landmark?.inputs[0]?.shape;
  const lmSize = lmShape?.[1] ?? 0;
  if (landmark && (!lmShape || lmShape.length !== 4 || lmSize < 1)) {
    for (const m of loaded) m.model.dispose();
    throw new Error(`hand: handlandmark-lite has input shape [${lmShape?.join(", ")}]`);
  }

  // HandTrack and the landmark model take one image at a time (batch 1 in their graphs).
  async function detect(image: Tensor4D): Promise<{ d?: Detection; label?: HandClass }> {
    const x = tf.tidy(() =>
      tf.cast(
        tf.round(
          tf.mul(
            tf.clipByValue(tf.image.resizeBilinear(image, [DETECTOR_SIZE, DETECTOR_SIZE]), 0, 1),
            255,
          ),
        ),
        "int32",
      )
    );
    let outs: Tensor[];
    try {
      outs = await detector.executeAsync(x, [SCORES_NODE, BOXES_NODE]) as Tensor[];
    } finally {
      x.dispose();
    }
    const [scoresT, boxesT] = outs;
    const scores = await scoresT.data();
    const boxes = await boxesT.data();
    tf.dispose(outs);
    const nClasses = HAND_CLASSES.length;
    const n = scores.length / nClasses;
    let best = -1;
    let bestBox = 0;
    let bestClass = 0;
    for (let i = 0; i < n; i++) {
      for (const c of counted) {
        const s = scores[i * nClasses + c];
        if (s > best) {
          best = s;
          bestBox = i;
          bestClass = c;
        }
      }
    }
    if (!(best >= 0)) return {};
    const [y1, x1, y2, x2] = boxes.subarray(bestBox * 4, bestBox * 4 + 4);
    return {
      d: { x: x1, y: y1, w: Math.max(0, x2 - x1), h: Math.max(0, y2 - y1), score: best },
      label: HAND_CLASSES[bestClass],
    };
  }

  async function presence(images: Tensor4D, b: number, d: Detection): Promise<number> {
    const flag = tf.tidy(() => {
      const crop = tf.image.cropAndResize(images, [cropBox(d, 1, 1, CROP_SCALE, false)], [b], [
        lmSize,
        lmSize,
      ]);
      const score = landmark!.execute(crop, "Identity_1") as Tensor;
      return score.reshape([-1]);
    });
    const v = (await flag.data())[0];
    flag.dispose();
    return Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0;
  }

  async function measure(images: Tensor4D): Promise<HandMeasurement[]> {
    const [batch, h, w] = checkImages("hand", images);
    const out: HandMeasurement[] = [];
    if (h === 0 || w === 0) {
      return Array.from({ length: batch }, () => ({ score: 0, detection: 0 }));
    }
    for (let b = 0; b < batch; b++) {
      const one = tf.slice(images, [b, 0, 0, 0], [1, h, w, 3]) as Tensor4D;
      let found: { d?: Detection; label?: HandClass };
      try {
        found = await detect(one);
      } finally {
        one.dispose();
      }
      const d = found.d;
      const m: HandMeasurement = { score: 0, detection: d ? d.score : 0 };
      if (d) {
        m.label = found.label;
        m.box = [d.x, d.y, d.w, d.h];
      }
      if (d && d.score >= o.minConfidence) {
        let score = d.score;
        if (landmark) {
          m.presence = await presence(images, b, d);
          score *= m.presence;
        }
        m.score = score;
      }
      out.push(m);
    }
    return out;
  }

  return {
    name: "hand",
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

/**
 * The `hand` reward plugin.
 *
 * @example
 * ```yaml
 * rewards:
 *   - use: hand
 *     options: { landmarks: true, classes: [hand, fist, pinch, point] }
 * ```
 */
export const handPlugin: Plugin<"reward", HandOptions> = definePlugin({
  kind: "reward",
  name: "hand",
  version: "0.1.0",
  description: "HandTrack's highest hand confidence × HandLandmark presence (0 if none)",
  options: z.strictObject({
    classes: z.array(z.enum(["hand", "fist", "pinch", "point", "tip", "pinchtip"])).min(1)
      .default(defaults.classes),
    minConfidence: z.number().min(0).max(1).default(defaults.minConfidence),
    landmarks: z.boolean().default(defaults.landmarks),
    modelDir: z.string().min(1).optional(),
  }),
  create: (options: HandOptions, context): Promise<Reward> => handReward(options, context.baseDir),
});
