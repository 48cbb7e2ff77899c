// Conversions between safetensors' on-disk dtypes and the float32/int32 arrays tfjs uses.

/** Every dtype of the safetensors format this package reads and writes. */
export type SafetensorsDtype =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "F8_E4M3"
  | "F8_E5M2"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U64"
  | "U32"
  | "U16"
  | "U8"
  | "BOOL";

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

/** Whether a dtype holds floating-point values (read as float32). */
export function isFloatDtype(d: SafetensorsDtype): boolean {
  return d[0] === "F" || d === "BF16";
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half → float. */
export function halfToFloat(h: number): number {
  const s = (h & 0x8000) << 16;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) {
    if (m === 0) {
      u32[0] = s;
      return f32[0];
    }
    // subnormal
    const v = m * 5.960464477539063e-8;
    return s ? -v : v;
  }
  if (e === 31) {
    u32[0] = s | 0x7f800000 | (m << 13);
    return f32[0];
  }
  u32[0] = s | ((e + 112) << 23) | (m << 13);
  return f32[0];
}

/** float → IEEE half, round to nearest even (as numpy/torch do). */
export function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  e = half >>> 10;
  return sign | half;
}

/** bfloat16 bits → float. */
export function bf16ToFloat(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}

/** float → bfloat16 bits, round to nearest even. */
export function floatToBf16(v: number): number {
  f32[0] = v;
  const x = u32[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return (x >>> 16) | 0x40;
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

function fp8ToFloat(
  b: number,
  expBits: number,
  manBits: number,
  bias: number,
  e4m3: boolean,
): number {
  const s = b & 0x80 ? -1 : 1;
  const e = (b >> manBits) & ((1 << expBits) - 1);
  const m = b & ((1 << manBits) - 1);
  if (e4m3) {
    if (e === 0xf && m === 0x7) return NaN;
  } else if (e === 0x1f) {
    return m ? NaN : s * Infinity;
  }
  if (e === 0) return s * m * 2 ** (1 - bias - manBits);
  return s * (1 + m / (1 << manBits)) * 2 ** (e - bias);
}

function floatToFp8(v: number, e4m3: boolean): number {
  // Exhaustive nearest search over the 256 codes: fp8 writing is rare, clarity beats speed.
  if (Number.isNaN(v)) return e4m3 ? 0x7f : 0x7e;
  let best = 0;
  let bestErr = Infinity;
  for (let c = 0; c < 256; c++) {
    const f = e4m3 ? fp8ToFloat(c, 4, 3, 7, true) : fp8ToFloat(c, 5, 2, 15, false);
    if (Number.isNaN(f)) continue;
    const err = Math.abs(f - v);
    if (err < bestErr || (err === bestErr && (c & 1) === 0 && (best & 1) === 1)) {
      bestErr = err;
      best = c;
    }
  }
  return best;
}

/** The host array a dtype is read into. */
export type HostArray = Float32Array | Int32Array;

/**
 * Decode `bytes` (little endian, `dtype`) into a float32 or int32 array.
 * `where` names the tensor for errors.
 */
export function decodeDtype(
  bytes: Uint8Array,
  dtype: SafetensorsDtype,
  where: string,
): HostArray {
  const n = bytes.byteLength / DTYPE_SIZE[dtype];
  const aligned = (bytes.byteOffset % 8) === 0;
  const buf = aligned ? bytes : bytes.slice();
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  switch (dtype) {
    case "F32":
      return new Float32Array(buf.buffer, buf.byteOffset, n);
    case "I32":
      return new Int32Array(buf.buffer, buf.byteOffset, n);
    case "F64": {
      const src = new Float64Array(buf.buffer, buf.byteOffset, n);
      return Float32Array.from(src);
    }
    case "F16": {
      const src = new Uint16Array(buf.buffer, buf.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(src[i]);
      return out;
    }
    case "BF16": {
      const src = new Uint16Array(buf.buffer, buf.byteOffset, n);
      const out = new Float32Array(n);
      const o32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) o32[i] = src[i] << 16;
      return out;
    }
    case "F8_E4M3":
    case "F8_E5M2": {
      const e4 = dtype === "F8_E4M3";
      const table = new Float32Array(256);
      for (let c = 0; c < 256; c++) {
        table[c] = e4 ? fp8ToFloat(c, 4, 3, 7, true) : fp8ToFloat(c, 5, 2, 15, false);
      }
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[buf[i]];
      return out;
    }
    case "I64":
    case "U64": {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const v = dtype === "I64" ? dv.getBigInt64(i * 8, true) : dv.getBigUint64(i * 8, true);
        if (v > 2147483647n || v < -2147483648n) {
          throw new RangeError(
            `${where}: ${dtype} value ${v} at index ${i} does not fit int32 (tfjs has no int64)`,
          );
        }
        out[i] = Number(v);
      }
      return out;
    }
    case "U32": {
      const src = new Uint32Array(buf.buffer, buf.byteOffset, n);
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        if (src[i] > 2147483647) {
          throw new RangeError(`${where}: U32 value ${src[i]} at index ${i} does not fit int32`);
        }
        out[i] = src[i];
      }
      return out;
    }
    case "I16":
      return Int32Array.from(new Int16Array(buf.buffer, buf.byteOffset, n));
    case "U16":
      return Int32Array.from(new Uint16Array(buf.buffer, buf.byteOffset, n));
    case "I8":
      return Int32Array.from(new Int8Array(buf.buffer, buf.byteOffset, n));
    case "U8":
      return Int32Array.from(buf.subarray(0, n));
    case "BOOL": {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = buf[i] ? 1 : 0;
      return out;
    }
  }
}

/** Encode values into `dtype` bytes (little endian). */
export function encodeDtype(
  values: ArrayLike<number>,
  dtype: SafetensorsDtype,
  where: string,
): Uint8Array {
  const n = values.length;
  const out = new Uint8Array(n * DTYPE_SIZE[dtype]);
  const dv = new DataView(out.buffer);
  const intRange = (lo: number, hi: number) => {
    for (let i = 0; i < n; i++) {
      const v = values[i];
      if (!Number.isInteger(v) || v < lo || v > hi) {
        throw new RangeError(`${where}: value ${v} at index ${i} is not a valid ${dtype}`);
      }
    }
  };
  switch (dtype) {
    case "F32":
      new Float32Array(out.buffer).set(values);
      break;
    case "F64":
      new Float64Array(out.buffer).set(values);
      break;
    case "F16": {
      const o = new Uint16Array(out.buffer);
      for (let i = 0; i < n; i++) o[i] = floatToHalf(values[i]);
      break;
    }
    case "BF16": {
      const o = new Uint16Array(out.buffer);
      for (let i = 0; i < n; i++) o[i] = floatToBf16(values[i]);
      break;
    }
    case "F8_E4M3":
    case "F8_E5M2":
      for (let i = 0; i < n; i++) out[i] = floatToFp8(values[i], dtype === "F8_E4M3");
      break;
    case "I64":
      intRange(-(2 ** 53), 2 ** 53);
      for (let i = 0; i < n; i++) dv.setBigInt64(i * 8, BigInt(values[i]), true);
      break;
    case "U64":
      intRange(0, 2 ** 53);
      for (let i = 0; i < n; i++) dv.setBigUint64(i * 8, BigInt(values[i]), true);
      break;
    case "I32":
      intRange(-2147483648, 2147483647);
      new Int32Array(out.buffer).set(values);
      break;
    case "U32":
      intRange(0, 4294967295);
      new Uint32Array(out.buffer).set(values);
      break;
    case "I16":
      intRange(-32768, 32767);
      new Int16Array(out.buffer).set(values);
      break;
    case "U16":
      intRange(0, 65535);
      new Uint16Array(out.buffer).set(values);
      break;
    case "I8":
      intRange(-128, 127);
      new Int8Array(out.buffer).set(values);
      break;
    case "U8":
      intRange(0, 255);
      out.set(values);
      break;
    case "BOOL":
      for (let i = 0; i < n; i++) out[i] = values[i] ? 1 : 0;
      break;
  }
  return out;
}
