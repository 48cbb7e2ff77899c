/**
 * safetensors reading and writing.
 *
 * Files are opened once and tensors are read lazily by offset, so a multi-gigabyte UNet is
 * never held twice in memory. The header is validated like the reference Rust implementation.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import type { Tensor } from "../tensor_types.ts";
import {
  decodeDtype,
  DTYPE_SIZE,
  encodeDtype,
  type HostArray,
  isFloatDtype,
  type SafetensorsDtype,
} from "./_dtype.ts";
import { writeFileAtomic } from "./atomic_file.ts";

export type { SafetensorsDtype } from "./_dtype.ts";

/** The largest header the reference implementation accepts (100 MB). */
export const MAX_HEADER_SIZE = 100_000_000;

/** One tensor's entry in a safetensors header. */
export interface TensorInfo {
  /** Tensor name. */
  name: string;
  /** On-disk dtype. */
  dtype: SafetensorsDtype;
  /** Shape (row-major, PyTorch layout). */
  shape: number[];
  /** Byte offset in the file (after the header). */
  begin: number;
  /** Byte offset one past the end. */
  end: number;
}

/** A tensor held on the host as float32 or int32 values. */
export interface HostTensor {
  /** `float32` for float dtypes, `int32` for integer and bool dtypes. */
  dtype: "float32" | "int32";
  /** Shape, row-major. */
  shape: number[];
  /** Values. */
  data: HostArray;
}

/** An error in a safetensors file; its message names the file and, where known, the tensor. */
export class SafetensorsError extends Error {
  /** Builds an error whose message starts with the file (and tensor). */
  constructor(file: string, message: string, tensor?: string) {
    super(`${file}${tensor !== undefined ? `: tensor '${tensor}'` : ""}: ${message}`);
    this.name = "SafetensorsError";
  }
}

function topLevelKeys(json: string): string[] {
  // JSON.parse keeps the last of duplicate keys silently; the format forbids duplicates, so scan
  // the top-level object's keys ourselves.
  const keys: string[] = [];
  let depth = 0;
  let i = 0;
  let expectKey = false;
  while (i < json.length) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(json.slice(i, j + 1)));
      expectKey = false;
      i = j + 1;
      continue;
    }
    if (c === "{" || c === "[") {
      depth++;
      if (depth === 1 && c === "{") expectKey = true;
    } else if (c === "}" || c === "]") depth--;
    else if (c === "," && depth === 1) expectKey = true;
    i++;
  }
  return keys;
}

/**
 * Parse and validate a safetensors header.
 * `fileSize` is the whole file's size in bytes; `file` names it in errors.
 */
export function parseHeader(
  headerBytes: Uint8Array,
  fileSize: number,
  file: string,
): { tensors: TensorInfo[]; metadata: Record<string, string>; dataStart: number } {
  const headerLen = headerBytes.byteLength;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(file, "header is not valid UTF-8");
  }
  if (!text.startsWith("{")) {
    throw new SafetensorsError(file, "header is not a JSON object (must start with '{')");
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    throw new SafetensorsError(file, "header is not a JSON object");
  }
  const seen = new Set<string>();
  for (const k of topLevelKeys(text)) {
    if (seen.has(k)) throw new SafetensorsError(file, "duplicate key in header", k);
    seen.add(k);
  }
  const dataStart = 8 + headerLen;
  const dataSize = fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, raw] of Object.entries(obj as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
        throw new SafetensorsError(file, "__metadata__ must be an object of strings");
      }
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== "string") {
          throw new SafetensorsError(file, `__metadata__.${k} must be a string`);
        }
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e === null || typeof e !== "object") {
      throw new SafetensorsError(file, "entry must be an object", name);
    }
    if (typeof e.dtype !== "string" || !(e.dtype in DTYPE_SIZE)) {
      throw new SafetensorsError(
        file,
        `unknown dtype ${JSON.stringify(e.dtype)} (expected one of ${
          Object.keys(DTYPE_SIZE).join(", ")
        })`,
        name,
      );
    }
    if (
      !Array.isArray(e.shape) ||
      !e.shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)
    ) {
      throw new SafetensorsError(file, "shape must be a list of non-negative integers", name);
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) || off.length !== 2 ||
      !off.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)
    ) {
      throw new SafetensorsError(file, "data_offsets must be [begin, end]", name);
    }
    const [begin, end] = off as [number, number];
    if (end < begin) {
      throw new SafetensorsError(file, `data_offsets [${begin}, ${end}] end before begin`, name);
    }
    const dtype = e.dtype as SafetensorsDtype;
    const shape = e.shape as number[];
    const numel = shape.reduce((a, b) => a * b, 1);
    const expected = numel * DTYPE_SIZE[dtype];
    if (end - begin !== expected) {
      throw new SafetensorsError(
        file,
        `holds ${end - begin} bytes but ${dtype} ${JSON.stringify(shape)} needs ${expected}`,
        name,
      );
    }
    tensors.push({ name, dtype, shape, begin, end });
  }
  // Offsets must tile the data section exactly: sorted, contiguous from 0, nothing after.
  const sorted = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const t of sorted) {
    if (t.begin !== pos) {
      throw new SafetensorsError(
        file,
        t.begin < pos
          ? `data_offsets [${t.begin}, ${t.end}] overlap the previous tensor (ends at ${pos})`
          : `data_offsets [${t.begin}, ${t.end}] leave a gap after byte ${pos}`,
        t.name,
      );
    }
    pos = t.end;
  }
  if (pos > dataSize) {
    throw new SafetensorsError(
      file,
      `file is truncated: tensors need ${pos} data bytes, the file has ${Math.max(0, dataSize)}`,
    );
  }
  if (pos < dataSize) {
    throw new SafetensorsError(
      file,
      `${dataSize - pos} trailing bytes after the last tensor`,
    );
  }
  return { tensors, metadata, dataStart };
}

/** Something that holds named tensors and reads them on demand. */
export interface WeightSource {
  /** Where the weights come from (a file or folder), for messages. */
  readonly path: string;
  /** All tensor names. */
  keys(): string[];
  /** Whether a tensor exists. */
  has(name: string): boolean;
  /** Header information of one tensor. */
  info(name: string): TensorInfo;
  /** Read one tensor into host memory. */
  read(name: string): Promise<HostTensor>;
  /** Release open files. */
  close(): void;
}

/**
 * An open safetensors file whose tensors are read lazily by offset.
 *
 * @example
 * ```ts
 * import { SafetensorsFile } from "@texforce/core";
 * const f = await SafetensorsFile.open("model.safetensors");
 * const w = await f.read(f.keys()[0]);
 * console.log(w.shape);
 * f.close();
 * ```
 */
export class SafetensorsFile implements WeightSource {
  /** The file's path. */
  readonly path: string;
  /** The `__metadata__` map of the header. */
  readonly metadata: Record<string, string>;
  #file: Deno.FsFile | null;
  #tensors: Map<string, TensorInfo>;
  #dataStart: number;

  private constructor(
    path: string,
    file: Deno.FsFile,
    tensors: TensorInfo[],
    metadata: Record<string, string>,
    dataStart: number,
  ) {
    this.path = path;
    this.#file = file;
    this.metadata = metadata;
    this.#tensors = new Map(tensors.map((t) => [t.name, t]));
    this.#dataStart = dataStart;
  }

  /** Open a file and validate its header; no tensor data is read yet. */
  static async open(path: string): Promise<SafetensorsFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new SafetensorsError(path, "file not found");
      throw new SafetensorsError(path, `cannot open (${(e as Error).message})`);
    }
    try {
      const size = (await file.stat()).size;
      if (size < 8) {
        throw new SafetensorsError(path, `file is truncated: ${size} bytes, the header needs 8`);
      }
      const lenBytes = new Uint8Array(8);
      await readExactly(file, lenBytes, 0, path);
      const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_SIZE)) {
        throw new SafetensorsError(path, `header size ${n} exceeds the limit ${MAX_HEADER_SIZE}`);
      }
      const headerLen = Number(n);
      if (8 + headerLen > size) {
        throw new SafetensorsError(
          path,
          `file is truncated: header of ${headerLen} bytes but the file has ${size}`,
        );
      }
      const header = new Uint8Array(headerLen);
      await readExactly(file, header, 8, path);
      const { tensors, metadata, dataStart } = parseHeader(header, size, path);
      return new SafetensorsFile(path, file, tensors, metadata, dataStart);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Tensor names, in header order. */
  keys(): string[] {
    return [...this.#tensors.keys()];
  }

  /** Whether the file holds `name`. */
  has(name: string): boolean {
    return this.#tensors.has(name);
  }

  /** Header entry of `name`. */
  info(name: string): TensorInfo {
    const t = this.#tensors.get(name);
    if (!t) throw new SafetensorsError(this.path, "no such tensor", name);
    return t;
  }

  /** Raw bytes of a tensor as stored. */
  async readBytes(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    if (!this.#file) throw new SafetensorsError(this.path, "file is closed", name);
    // An 8-byte aligned buffer so the bytes can be viewed as any typed array without a copy.
    const bytes = new Uint8Array(new ArrayBuffer(t.end - t.begin));
    // Touch each page before read(): faulting fresh pages from user space is about twice as fast
    // as letting the kernel fault them inside the copy (measured on this project's VMs).
    for (let i = 0; i < bytes.byteLength; i += 4096) bytes[i] = 0;
    await readExactly(this.#file, bytes, this.#dataStart + t.begin, this.path, name);
    return bytes;
  }

  /** Read a tensor as float32 (float dtypes) or int32 (integer and bool dtypes). */
  async read(name: string): Promise<HostTensor> {
    const t = this.info(name);
    const bytes = await this.readBytes(name);
    return {
      dtype: isFloatDtype(t.dtype) ? "float32" : "int32",
      shape: [...t.shape],
      data: decodeDtype(bytes, t.dtype, `${this.path}: tensor '${name}'`),
    };
  }

  /** Close the file. */
  close(): void {
    this.#file?.close();
    this.#file = null;
  }
}

async function readExactly(
  file: Deno.FsFile,
  into: Uint8Array,
  position: number,
  path: string,
  tensor?: string,
): Promise<void> {
  await file.seek(position, Deno.SeekMode.Start);
  let got = 0;
  while (got < into.byteLength) {
    const n = await file.read(into.subarray(got));
    if (n === null) {
      throw new SafetensorsError(path, `unexpected end of file at byte ${position + got}`, tensor);
    }
    got += n;
  }
}

/**
 * Decode a whole safetensors buffer held in memory.
 *
 * @example
 * ```ts
 * import { decodeSafetensors, encodeSafetensors } from "@texforce/core";
 * const bytes = encodeSafetensors({ w: { dtype: "F32", shape: [2], data: [1, 2] } });
 * console.log(decodeSafetensors(bytes).tensors.w.data);
 * ```
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  file = "<buffer>",
): { tensors: Record<string, HostTensor>; metadata: Record<string, string> } {
  if (bytes.byteLength < 8) {
    throw new SafetensorsError(file, `file is truncated: ${bytes.byteLength} bytes`);
  }
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_SIZE)) {
    throw new SafetensorsError(file, `header size ${n} exceeds the limit ${MAX_HEADER_SIZE}`);
  }
  if (8 + Number(n) > bytes.byteLength) {
    throw new SafetensorsError(file, `file is truncated: header of ${n} bytes`);
  }
  const { tensors, metadata, dataStart } = parseHeader(
    bytes.subarray(8, 8 + Number(n)),
    bytes.byteLength,
    file,
  );
  const out: Record<string, HostTensor> = {};
  for (const t of tensors) {
    const slice = bytes.slice(dataStart + t.begin, dataStart + t.end);
    out[t.name] = {
      dtype: isFloatDtype(t.dtype) ? "float32" : "int32",
      shape: [...t.shape],
      data: decodeDtype(slice, t.dtype, `${file}: tensor '${t.name}'`),
    };
  }
  return { tensors: out, metadata };
}

/** A tensor to write: values are converted to `dtype` on the way out. */
export interface WritableTensor {
  /** Dtype stored in the file. */
  dtype: SafetensorsDtype;
  /** Shape. */
  shape: number[];
  /** Values (row-major); raw bytes of the target dtype may be given as `bytes` instead. */
  data?: ArrayLike<number>;
  /** Already-encoded little-endian bytes of `dtype`. */
  bytes?: Uint8Array;
}

/**
 * Serialise tensors (sorted by name) and metadata into safetensors bytes. The header is padded
 * with spaces to a multiple of 8 bytes, as the reference writer does.
 *
 * @example
 * ```ts
 * import { encodeSafetensors } from "@texforce/core";
 * const bytes = encodeSafetensors({ w: { dtype: "F16", shape: [1], data: [0.5] } }, { a: "b" });
 * ```
 */
export function encodeSafetensors(
  tensors: Record<string, WritableTensor>,
  metadata?: Record<string, string>,
): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  const chunks: Uint8Array[] = [];
  let pos = 0;
  for (const name of names) {
    if (name === "__metadata__") throw new Error("tensor name '__metadata__' is reserved");
    const t = tensors[name];
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const bytes = t.bytes ?? encodeDtype(t.data ?? [], t.dtype, `tensor '${name}'`);
    if (bytes.byteLength !== numel * DTYPE_SIZE[t.dtype]) {
      throw new Error(
        `tensor '${name}': ${bytes.byteLength} bytes given, ${t.dtype} ` +
          `${JSON.stringify(t.shape)} needs ${numel * DTYPE_SIZE[t.dtype]}`,
      );
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [pos, pos + bytes.byteLength] };
    chunks.push(bytes);
    pos += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  let hb = new TextEncoder().encode(json);
  const pad = (8 - (hb.byteLength % 8)) % 8;
  if (pad) {
    json += " ".repeat(pad);
    hb = new TextEncoder().encode(json);
  }
  const out = new Uint8Array(8 + hb.byteLength + pos);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.byteLength), true);
  out.set(hb, 8);
  let o = 8 + hb.byteLength;
  for (const c of chunks) {
    out.set(c, o);
    o += c.byteLength;
  }
  return out;
}

/**
 * Write tensors to `path` atomically (a temporary file in the same folder, then rename), so a
 * crash never leaves a half-written file under the final name.
 *
 * @example
 * ```ts
 * import { writeSafetensors } from "@texforce/core";
 * await writeSafetensors("out.safetensors", { w: { dtype: "F32", shape: [2], data: [1, 2] } });
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, WritableTensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}

/**
 * Convert a host tensor to a tfjs tensor (same layout).
 *
 * @example
 * ```ts
 * import { toTensor } from "@texforce/core";
 * const t = toTensor({ dtype: "float32", shape: [2], data: new Float32Array([1, 2]) });
 * ```
 */
export function toTensor(host: HostTensor): Tensor {
  return tf.tensor(host.data, host.shape, host.dtype);
}

/**
 * Convert a tfjs tensor to a {@linkcode WritableTensor} in `dtype` (default F32 for floats,
 * I32 for ints).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { fromTensor } from "@texforce/core";
 * const w = await fromTensor(tf.ones([2, 2]), "F16");
 * ```
 */
export async function fromTensor(
  t: Tensor,
  dtype?: SafetensorsDtype,
): Promise<WritableTensor> {
  const data = await t.data();
  return {
    dtype: dtype ?? (t.dtype === "float32" ? "F32" : "I32"),
    shape: [...t.shape],
    data: data as Float32Array | Int32Array,
  };
}
export type { HostArray } from "./_dtype.ts";
