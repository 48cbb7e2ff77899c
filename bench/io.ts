/**
 * `deno task bench io [--size-mb N] [--file PATH]`: read a ≥ 1 GB safetensors file tensor by
 * tensor (keeping every tensor, as a model load does) and compare with `cat FILE > /dev/null`
 * of the same file in the same run; report peak RSS against the file size.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { SafetensorsFile } from "../core/io/safetensors.ts";
import { formatBytes, peakRss } from "./_peak_rss.ts";

async function timeCat(path: string): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command("sh", { args: ["-c", `cat '${path}' > /dev/null`] }).output();
  if (!out.success) throw new Error("cat failed");
  return performance.now() - t0;
}

// Streams a synthetic file of n × 16 MiB F32 tensors without holding it in memory, so the
// reader's peak RSS is measured alone.
async function writeSynthetic(path: string, n: number): Promise<void> {
  const elems = (16 * 2 ** 20) / 4;
  const header: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) {
    header[`layer.${String(i).padStart(4, "0")}.weight`] = {
      dtype: "F32",
      shape: [elems / 1024, 1024],
      data_offsets: [i * elems * 4, (i + 1) * elems * 4],
    };
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (new TextEncoder().encode(json).byteLength % 8)) % 8);
  const hb = new TextEncoder().encode(json);
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(hb.byteLength), true);
  await f.write(len);
  await f.write(hb);
  const chunk = new Uint8Array(elems * 4);
  for (let i = 0; i < n; i++) {
    chunk.fill(i & 255, 0, 4096);
    let o = 0;
    while (o < chunk.length) o += await f.write(chunk.subarray(o));
  }
  f.close();
  console.log(`wrote ${n} × 16 MiB = ${formatBytes(n * 16 * 2 ** 20)} to ${path}`);
}

async function readAll(path: string, keep: boolean): Promise<{ ms: number; count: number }> {
  const t0 = performance.now();
  const f = await SafetensorsFile.open(path);
  const kept: unknown[] = [];
  let count = 0;
  for (const k of f.keys()) {
    const t = await f.read(k);
    count++;
    if (keep) kept.push(t);
  }
  f.close();
  return { ms: performance.now() - t0, count };
}

/** Run the I/O benchmark. */
export default async function benchIo(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { "size-mb": { type: "string", default: "1100" }, file: { type: "string" } },
  });
  const sizeMb = Number(values["size-mb"]);
  let path = values.file;
  let tmpDir: string | undefined;
  if (!path) {
    tmpDir = await Deno.makeTempDir({ prefix: "texforce-bench-io-" });
    path = join(tmpDir, "synthetic.safetensors");
    await writeSynthetic(path, Math.ceil(sizeMb / 16));
  }
  const size = (await Deno.stat(path)).size;
  try {
    const rssBefore = Deno.memoryUsage().rss;
    // Keep every tensor, as loading a model does: this is the peak-RSS figure (run first, on a
    // clean heap).
    await timeCat(path);
    const kept = await readAll(path, true);
    const peak = peakRss();
    // Alternate cat and our reader so the page cache is equally warm; best of 3 each.
    const cats: number[] = [];
    const streams: number[] = [];
    for (let i = 0; i < 3; i++) {
      cats.push(await timeCat(path));
      streams.push((await readAll(path, false)).ms);
    }
    const cat = Math.min(...cats);
    const stream = Math.min(...streams);
    const mibs = (ms: number) => `${(size / 2 ** 20 / (ms / 1000)).toFixed(0)} MiB/s`;
    const rows = [
      ["file size", formatBytes(size)],
      ["cat FILE > /dev/null (best of 3)", `${cat.toFixed(0)} ms (${mibs(cat)})`],
      ["read every tensor, release each (best of 3)", `${stream.toFixed(0)} ms (${mibs(stream)})`],
      ["  throughput ratio to cat (goal ≥ 0.5)", (cat / stream).toFixed(2)],
      [`read every tensor, keep all ${kept.count}`, `${kept.ms.toFixed(0)} ms (${mibs(kept.ms)})`],
      ["  throughput ratio to cat", (cat / kept.ms).toFixed(2)],
      ["RSS before reading", formatBytes(rssBefore)],
      ["peak RSS", formatBytes(peak)],
      ["  peak RSS / file size (goal ≤ 1.2)", (peak / size).toFixed(2)],
    ];
    for (const [a, b] of rows) console.log(`${a.padEnd(48)} ${b}`);
  } finally {
    if (tmpDir) await Deno.remove(tmpDir, { recursive: true });
  }
}
