/**
 * Whether a file or folder exists.
 *
 * @module
 */

/**
 * True when `path` exists (file, folder or link target), false otherwise.
 *
 * @example
 * ```ts
 * import { pathExists } from "@texforce/core";
 * if (await pathExists("sd15/unet")) console.log("has a UNet");
 * ```
 */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
