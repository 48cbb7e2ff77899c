/**
 * Serve any texforce reward plugin over the `http` reward's protocol: `POST` JSON
 * `{"images": [base64 PNG…], "prompts": […], "metadata": {…}}` → `{"scores": […]}`.
 *
 * ```sh
 * deno run -A examples/reward_server.ts --use aesthetic \
 *   --options '{"clipModel": "models/clip-vit-large-patch14", "head": "models/aesthetic.safetensors"}' \
 *   --port 8000
 * ```
 *
 * `--use` takes a built-in reward name or a module specifier (`./my_reward.ts`, `jsr:…`);
 * relative paths in `--options` resolve against the working directory. Images in one request that
 * share a size are scored as one batch.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { Buffer } from "node:buffer";
import { parseArgs } from "node:util";
import { builtinRegistry } from "../builtin_plugins.ts";
import { useBackend } from "../core/backend.ts";
import { decodeImage } from "../core/image_output.ts";
import { ModelCache } from "../core/model_cache.ts";
import { parsePluginOptions } from "../core/plugin.ts";
import type { Reward } from "../core/reward.ts";

/** Options of {@linkcode serveReward}. */
export interface ServeRewardOptions {
  /** Port (0: any free port; default 8000). */
  port?: number;
  /** Interface (default 127.0.0.1). */
  hostname?: string;
  /** Stops the server. */
  signal?: AbortSignal;
}

async function scoreRequest(reward: Reward, body: unknown): Promise<number[]> {
  const b = body as { images?: unknown; prompts?: unknown };
  if (!Array.isArray(b?.images) || !Array.isArray(b?.prompts)) {
    throw new Error('expected {"images": [base64 PNG, …], "prompts": [string, …]}');
  }
  const prompts = b.prompts.map(String);
  if (b.images.length !== prompts.length) {
    throw new Error(`${b.images.length} images but ${prompts.length} prompts`);
  }
  const decoded = await Promise.all(
    b.images.map((s) => decodeImage(new Uint8Array(Buffer.from(String(s), "base64")))),
  );
  const scores = new Array<number>(decoded.length);
  // One batch per image size.
  const groups = new Map<string, number[]>();
  decoded.forEach((im, i) => {
    const key = `${im.width}x${im.height}`;
    groups.set(key, [...(groups.get(key) ?? []), i]);
  });
  for (const idx of groups.values()) {
    const { width, height } = decoded[idx[0]];
    const data = new Float32Array(idx.length * width * height * 3);
    idx.forEach((i, k) => {
      const px = decoded[i].data;
      for (let j = 0; j < px.length; j++) data[k * px.length + j] = px[j] / 255;
    });
    const images = tf.tensor4d(data, [idx.length, height, width, 3]);
    try {
      const out = await reward.score({ images, prompts: idx.map((i) => prompts[i]) });
      idx.forEach((i, k) => (scores[i] = out[k]));
    } finally {
      images.dispose();
    }
  }
  return scores;
}

/**
 * Serve `reward` until `signal` aborts; returns the listening server.
 *
 * @example
 * ```ts
 * import { brightnessReward } from "@texforce/core/rewards";
 * import { serveReward } from "./reward_server.ts";
 * const controller = new AbortController();
 * const server = serveReward(brightnessReward(), { port: 0, signal: controller.signal });
 * console.log(`listening on ${server.addr.port}`);
 * controller.abort();
 * await server.finished;
 * ```
 */
export function serveReward(
  reward: Reward,
  options: ServeRewardOptions = {},
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({
    port: options.port ?? 8000,
    hostname: options.hostname ?? "127.0.0.1",
    signal: options.signal,
    onListen: () => {},
  }, async (req) => {
    if (req.method !== "POST") return new Response("POST a batch\n", { status: 405 });
    let body: unknown;
    try {
      body = await req.json();
    } catch {
      return Response.json({ error: "the body is not JSON" }, { status: 400 });
    }
    try {
      return Response.json({ scores: await scoreRequest(reward, body) });
    } catch (e) {
      return Response.json({ error: (e as Error).message }, { status: 500 });
    }
  });
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      use: { type: "string" },
      options: { type: "string", default: "{}" },
      port: { type: "string", default: "8000" },
      hostname: { type: "string", default: "127.0.0.1" },
      backend: { type: "string", default: "auto" },
    },
  });
  if (!values.use) {
    console.error(
      "usage: reward_server.ts --use <reward> [--options JSON] [--port N] [--hostname H]",
    );
    Deno.exit(2);
  }
  await useBackend(values.backend as Parameters<typeof useBackend>[0]);
  const registry = builtinRegistry();
  const plugin = await registry.resolve("reward", values.use, Deno.cwd(), "--use");
  const options = parsePluginOptions(plugin, JSON.parse(values.options!), "--options");
  const reward = await plugin.create(options, {
    baseDir: Deno.cwd(),
    models: new ModelCache(),
  }) as Reward;
  const server = serveReward(reward, {
    port: Number(values.port),
    hostname: values.hostname,
  });
  console.error(
    `serving reward '${reward.name}' on http://${values.hostname}:${server.addr.port}/`,
  );
  await server.finished;
}
