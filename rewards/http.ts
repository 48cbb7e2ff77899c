/**
 * `http`: a reward computed by a service elsewhere (a Python process with PyTorch, a bigger
 * machine). Each batch is one `POST` of JSON
 *
 * ```json
 * { "images": ["<base64 PNG>", …], "prompts": ["…", …], "metadata": { "batch": 0, …options } }
 * ```
 *
 * answered by `{"scores": [number, …]}` (one finite number per image, in order). Batches are
 * cut to `batchSize`; each request has a `timeoutMs`; network errors, timeouts, 429 and 5xx are
 * retried `retries` times with exponential backoff (`backoffMs`, doubling). Header values may
 * name environment variables as `{env:NAME}`: they are read when the reward is created and are
 * never written to logs, errors or run files (the pipeline keeps the `{env:NAME}` form; the
 * pipeline loader's own `${NAME}` would put the secret into `pipeline.json`).
 *
 * `examples/reward_server.ts` serves any texforce reward plugin over this protocol; the
 * examples README has a short Python server for a PyTorch reward.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { z } from "zod";
import { definePlugin, type Plugin } from "../core/plugin.ts";
import type { Reward, RewardInput } from "../core/reward.ts";
import { encodePng, tensorToImages } from "../core/image_output.ts";
import { checkImages } from "./_images.ts";

/**
 * Options of the http reward.
 *
 * @example
 * ```ts
 * import type { HttpRewardOptions } from "@texforce/core/rewards";
 * const o: HttpRewardOptions = {
 *   url: "http://gpu-box:8000/score",
 *   batchSize: 8,
 *   timeoutMs: 60_000,
 *   retries: 2,
 *   backoffMs: 500,
 *   headers: { Authorization: "Bearer {env:REWARD_TOKEN}" },
 *   metadata: { model: "ImageReward-v1.0" },
 * };
 * ```
 */
export interface HttpRewardOptions {
  /** Where to POST (http or https). */
  url: string;
  /** Images per request (default 8). */
  batchSize: number;
  /** Milliseconds per attempt, including reading the answer (default 60 000). */
  timeoutMs: number;
  /** Extra attempts after a network error, timeout, 429 or 5xx (default 2). */
  retries: number;
  /** Wait before the first retry in ms; doubles each time (default 500). */
  backoffMs: number;
  /** Request headers; `{env:NAME}` in a value is replaced by the environment variable NAME. */
  headers: Record<string, string>;
  /** Sent with every batch (with `batch`, the batch index). */
  metadata: Record<string, unknown>;
  /** Name in metrics and logs (default `http`). */
  name?: string;
}

const defaults = {
  batchSize: 8,
  timeoutMs: 60_000,
  retries: 2,
  backoffMs: 500,
  headers: {},
  metadata: {},
} satisfies Partial<HttpRewardOptions>;

/** Replace `{env:NAME}` by the environment; errors name the header and variable, never a value. */
function resolveHeaders(headers: Record<string, string>, name: string): Headers {
  const out = new Headers({ "content-type": "application/json" });
  for (const [key, template] of Object.entries(headers)) {
    const value = template.replace(/\{env:([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, v: string) => {
      const env = Deno.env.get(v);
      if (env === undefined) {
        throw new Error(
          `${name}: header '${key}' needs the environment variable ${v}, which is not set`,
        );
      }
      return env;
    });
    out.set(key, value);
  }
  return out;
}

/** Parse the answer; Python's json writes NaN/Infinity bare, so those are caught by name. */
function parseScores(text: string, expected: number): number[] {
  let body: unknown;
  try {
    body = JSON.parse(text.replace(/\b(-?Infinity|NaN)\b/g, '"$1"'));
  } catch {
    throw new Error(`the answer is not JSON: ${JSON.stringify(text.slice(0, 200))}`);
  }
  const scores = (body as { scores?: unknown })?.scores;
  if (!Array.isArray(scores)) {
    throw new Error(
      `the answer has no "scores" array (expected {"scores": [...]}, got ` +
        `${JSON.stringify(text.slice(0, 200))})`,
    );
  }
  if (scores.length !== expected) {
    throw new Error(`expected ${expected} scores (one per image), got ${scores.length}`);
  }
  return scores.map((s, i) => {
    if (typeof s !== "number" || !Number.isFinite(s)) {
      throw new Error(`score ${i} is ${JSON.stringify(s)}, not a finite number`);
    }
    return s;
  });
}

class Retryable extends Error {}

/**
 * A reward that asks an HTTP service for the scores.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { httpReward } from "@texforce/core/rewards";
 * const r = httpReward({ url: "http://127.0.0.1:8000/score" });
 * console.log(await r.score({ images: tf.ones([1, 64, 64, 3]), prompts: ["a white square"] }));
 * ```
 */
export function httpReward(
  options: Pick<HttpRewardOptions, "url"> & Partial<HttpRewardOptions>,
): Reward {
  const o: HttpRewardOptions = { ...defaults, ...options };
  const name = o.name ?? "http";
  let url: URL;
  try {
    url = new URL(o.url);
  } catch {
    throw new Error(`${name}: url ${JSON.stringify(o.url)} is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`${name}: url ${o.url} must be http: or https:`);
  }
  const headers = resolveHeaders(o.headers, name);
  const attempt = async (body: string, expected: number): Promise<number[]> => {
    let res: Response;
    try {
      res = await fetch(url, {
        method: "POST",
        headers,
        body,
        signal: AbortSignal.timeout(o.timeoutMs),
      });
    } catch (e) {
      const err = e as Error;
      if (err.name === "TimeoutError") throw new Retryable(`timed out after ${o.timeoutMs} ms`);
      throw new Retryable(`cannot connect: ${err.message.split("\n")[0]}`);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      const err = e as Error;
      if (err.name === "TimeoutError") {
        throw new Retryable(`timed out after ${o.timeoutMs} ms reading the answer`);
      }
      throw new Retryable(`the answer broke off: ${err.message}`);
    }
    if (!res.ok) {
      const msg = `status ${res.status} ${res.statusText}: ${JSON.stringify(text.slice(0, 200))}`;
      if (res.status === 429 || res.status >= 500) throw new Retryable(msg);
      throw new Error(msg);
    }
    return parseScores(text, expected);
  };
  return {
    name,
    async score({ images, prompts }: RewardInput): Promise<number[]> {
      const [b] = checkImages(name, images);
      if (prompts.length !== b) {
        throw new Error(`${name}: ${b} images but ${prompts.length} prompts`);
      }
      const pictures = await tensorToImages(images);
      const scores: number[] = [];
      const batches = Math.ceil(b / o.batchSize);
      for (let k = 0; k < batches; k++) {
        const lo = k * o.batchSize;
        const hi = Math.min(b, lo + o.batchSize);
        const png: string[] = [];
        for (let i = lo; i < hi; i++) {
          png.push(Buffer.from(await encodePng(pictures[i])).toString("base64"));
        }
        const body = JSON.stringify({
          images: png,
          prompts: prompts.slice(lo, hi),
          metadata: { ...o.metadata, batch: k },
        });
        const where = `${name}: POST ${url.href} (batch ${k + 1}/${batches}, images ${lo}…${
          hi - 1
        })`;
        let wait = o.backoffMs;
        for (let tryNo = 0;; tryNo++) {
          try {
            scores.push(...await attempt(body, hi - lo));
            break;
          } catch (e) {
            const retry = e instanceof Retryable && tryNo < o.retries;
            if (!retry) {
              const tries = tryNo > 0 ? ` after ${tryNo + 1} attempts` : "";
              throw new Error(`${where}: ${(e as Error).message}${tries}`, { cause: e });
            }
            await new Promise((r) => setTimeout(r, wait));
            wait *= 2;
          }
        }
      }
      return scores;
    },
  };
}

/**
 * The `http` reward plugin.
 *
 * @example
 * ```yaml
 * rewards:
 *   - use: http
 *     options:
 *       url: http://gpu-box:8000/score
 *       headers: { Authorization: "Bearer {env:REWARD_TOKEN}" }
 *       batchSize: 4
 * ```
 */
export const httpRewardPlugin: Plugin<"reward", HttpRewardOptions> = definePlugin({
  kind: "reward",
  name: "http",
  version: "0.1.0",
  description: "scores from an HTTP service: POST PNG batches, read {scores: [...]}",
  options: z.strictObject({
    url: z.string().min(1),
    batchSize: z.number().int().min(1).default(defaults.batchSize),
    timeoutMs: z.number().int().min(1).default(defaults.timeoutMs),
    retries: z.number().int().min(0).default(defaults.retries),
    backoffMs: z.number().min(0).default(defaults.backoffMs),
    headers: z.record(z.string(), z.string()).default(defaults.headers),
    metadata: z.record(z.string(), z.unknown()).default(defaults.metadata),
    name: z.string().min(1).optional(),
  }),
  create: (options: HttpRewardOptions): Reward => httpReward(options),
});
