/**
 * Writing files so that a crash leaves the old contents or the new, never a torn file: through a
 * temporary file, fsync and a rename, then an fsync of the folder. Checkpoints, safetensors,
 * metrics rewrites, reports and exports all write this way.
 *
 * @module
 */
import { dirname } from "node:path";

/**
 * Write bytes to `path` through a temporary file and a rename, fsyncing the data first.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "@texforce/core";
 * await writeFileAtomic("state.json", new TextEncoder().encode("{}"));
 * ```
 */
export async function writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      let off = 0;
      while (off < data.byteLength) off += await f.write(data.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    // A failed write (a full disk) leaves neither a partial file nor the temporary one.
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await syncFolder(dirname(path));
}

/**
 * fsync a folder, so a rename inside it survives a power cut (best effort).
 *
 * @example
 * ```ts
 * import { syncFolder } from "@texforce/core";
 * await syncFolder("runs/demo");
 * ```
 */
export async function syncFolder(dir: string): Promise<void> {
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch { /* not supported on this platform or file system */ }
}
