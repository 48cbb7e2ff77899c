// Turning zod issues into `path: message` lines: bracketed indices (`rewards[0].options.quality`),
// one line per unknown key with the keys allowed there (and a "did you mean"), and plain messages
// for missing fields and wrong types.
import type { z } from "zod";

/** One problem at a path, e.g. `{ path: "train.epochs", message: "expected an integer" }`. */
export interface Issue {
  /** Dotted path with bracketed indices; "" for the top level. */
  path: string;
  /** What is wrong and what was expected. */
  message: string;
}

/** Format a path: `["rewards", 0, "options"]` → `rewards[0].options`, appended to `prefix`. */
export function formatPath(segments: readonly PropertyKey[], prefix = ""): string {
  let out = prefix;
  for (const s of segments) {
    if (typeof s === "number") out += `[${s}]`;
    else out += out === "" ? String(s) : `.${String(s)}`;
  }
  return out;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") {
    return JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value);
  }
  if (typeof value === "object") return "an object";
  return String(value);
}

/** Parse-level error map: friendlier messages for missing fields and wrong types. */
export const errorMap: z.core.$ZodErrorMap = (iss) => {
  if (iss.code === "invalid_type") {
    const expected = iss.expected === "int" ? "an integer" : iss.expected;
    if (iss.input === undefined) return `required (expected ${expected})`;
    return `expected ${expected}, got ${describe(iss.input)}`;
  }
  return undefined;
};

// The schema at a path, unwrapping optional/default/pipe wrappers (zod v4 internals).
function schemaAt(
  schema: z.core.$ZodType | undefined,
  path: readonly PropertyKey[],
): z.core.$ZodType | undefined {
  let s = schema;
  for (let i = 0; s && i <= path.length; i++) {
    // Unwrap wrappers first.
    for (let guard = 0; s && guard < 20; guard++) {
      const def = s._zod.def as unknown as Record<string, unknown> & { type: string };
      if (
        ["optional", "default", "prefault", "nullable", "readonly", "catch", "nonoptional"]
          .includes(def.type)
      ) {
        s = def.innerType as z.core.$ZodType;
      } else if (def.type === "pipe") {
        const inner = def.in as z.core.$ZodType;
        s = (inner._zod.def.type === "transform" ? def.out : inner) as z.core.$ZodType;
      } else break;
    }
    if (!s || i === path.length) break;
    const def = s._zod.def as unknown as Record<string, unknown> & { type: string };
    const seg = path[i];
    if (def.type === "object") s = (def.shape as Record<string, z.core.$ZodType>)[String(seg)];
    else if (def.type === "array") s = def.element as z.core.$ZodType;
    else if (def.type === "record") s = def.valueType as z.core.$ZodType;
    else if (def.type === "tuple") s = (def.items as z.core.$ZodType[])[Number(seg)];
    else return undefined;
  }
  return s;
}

function objectKeys(schema: z.core.$ZodType | undefined): string[] | undefined {
  if (!schema) return undefined;
  const def = schema._zod.def as unknown as Record<string, unknown> & { type: string };
  return def.type === "object" ? Object.keys(def.shape as object) : undefined;
}

// Optimal-string-alignment distance (a transposition counts as one edit), case-insensitive.
function distance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  const d: number[][] = Array.from(
    { length: a.length + 1 },
    (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/** The closest of `candidates` to `word` when it is a plausible typo. */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const dd = distance(word, c);
    if (dd < bestD) [best, bestD] = [c, dd];
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

/**
 * The issues of a zod error as `path: message` pairs, `prefix` prepended to each path. `schema`
 * (the one that failed) lets unknown-key messages list the keys allowed there.
 */
export function zodIssues(error: z.ZodError, prefix = "", schema?: z.core.$ZodType): Issue[] {
  const out: Issue[] = [];
  for (const iss of error.issues) {
    if (iss.code === "unrecognized_keys") {
      const allowed = objectKeys(schemaAt(schema, iss.path));
      for (const key of iss.keys) {
        const hint = allowed ? didYouMean(key, allowed) : undefined;
        out.push({
          path: formatPath([...iss.path, key], prefix),
          message: "unknown key" + (hint ? ` (did you mean '${hint}'?)` : "") +
            (allowed ? `; expected one of: ${allowed.join(", ")}` : ""),
        });
      }
    } else {
      out.push({ path: formatPath(iss.path, prefix), message: iss.message });
    }
  }
  return out;
}

/** `path: message` lines, indented. */
export function issueLines(issues: readonly Issue[], indent = "  "): string {
  return issues.map((i) => `${indent}${i.path || "(top level)"}: ${i.message}`).join("\n");
}
