/**
 * Built-in prompt sets, named in pipelines as `prompts: { builtin: <name> }`.
 *
 * - `simple-animals`: the 45 animal names of DDPO's and TexForce's aesthetic experiments.
 * - `hands`: prompts showing hands (TexForce's hand-quality experiments).
 * - `faces`: portrait prompts (TexForce's face-quality experiments).
 * - `tiny`: a few prompts whose every word is in the vocabulary of the tiny test model
 *   (`tests/fixtures/sd-tiny/tiny-sd`), for demos and tests.
 *
 * @module
 */

const SIMPLE_ANIMALS: readonly string[] = [
  "cat",
  "dog",
  "horse",
  "monkey",
  "rabbit",
  "zebra",
  "spider",
  "bird",
  "sheep",
  "deer",
  "cow",
  "goat",
  "lion",
  "tiger",
  "bear",
  "raccoon",
  "fox",
  "wolf",
  "lizard",
  "beetle",
  "ant",
  "butterfly",
  "fish",
  "shark",
  "whale",
  "dolphin",
  "squirrel",
  "mouse",
  "rat",
  "snake",
  "turtle",
  "frog",
  "chicken",
  "duck",
  "goose",
  "bee",
  "pig",
  "turkey",
  "fly",
  "llama",
  "camel",
  "bat",
  "gorilla",
  "hedgehog",
  "kangaroo",
];

const HANDS: readonly string[] = [
  "a photo of a hand",
  "a close-up photo of a person's hands",
  "a hand holding a cup of coffee",
  "a woman waving her hand",
  "a man giving a thumbs up",
  "two hands clapping",
  "a child's hand holding a pencil",
  "hands playing the piano",
  "a hand holding a smartphone",
  "an open palm facing the camera",
  "two people shaking hands",
  "a hand making a peace sign",
];

const FACES: readonly string[] = [
  "a portrait photo of a young woman",
  "a close-up portrait of an old man",
  "a smiling child, studio portrait",
  "a photo of a man with a beard",
  "a portrait of a woman with curly hair",
  "a headshot of a businessman in a suit",
  "a portrait of an elderly woman laughing",
  "a teenage boy looking at the camera",
  "a close-up of a face in soft window light",
  "a portrait of a firefighter",
];

const TINY: readonly string[] = [
  "a red circle",
  "a blue square",
  "a green triangle",
  "a yellow star",
  "a purple circle on a black background",
  "two green squares",
  "a small red circle",
  "a large blue triangle",
];

/**
 * Every built-in prompt set by name.
 *
 * @example
 * ```ts
 * import { PROMPT_SETS } from "@texforce/core";
 * console.log(Object.keys(PROMPT_SETS)); // ["simple-animals", "hands", "faces", "tiny"]
 * ```
 */
export const PROMPT_SETS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  "simple-animals": SIMPLE_ANIMALS,
  "hands": HANDS,
  "faces": FACES,
  "tiny": TINY,
});

/**
 * Names of the built-in prompt sets.
 *
 * @example
 * ```ts
 * import { promptSetNames } from "@texforce/core";
 * console.log(promptSetNames().join(", "));
 * ```
 */
export function promptSetNames(): string[] {
  return Object.keys(PROMPT_SETS);
}

/**
 * The prompts of a built-in set (a fresh copy); an unknown name throws an error listing the
 * names.
 *
 * @example
 * ```ts
 * import { promptSet } from "@texforce/core";
 * const prompts = promptSet("simple-animals"); // ["cat", "dog", …]
 * ```
 */
export function promptSet(name: string): string[] {
  const set = Object.hasOwn(PROMPT_SETS, name) ? PROMPT_SETS[name] : undefined;
  if (!set) {
    throw new Error(
      `unknown built-in prompt set '${name}'; expected one of: ${promptSetNames().join(", ")}`,
    );
  }
  return [...set];
}
