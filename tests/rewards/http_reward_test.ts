// The http reward against local servers on 127.0.0.1: success, timeout, 500 then success, wrong
// count, NaN, connection refused; and the example server serving a texforce reward.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { useBackend } from "../../core/backend.ts";
import { decodeImage } from "../../core/image_output.ts";
import { parsePluginOptions } from "../../core/plugin.ts";
import type { Reward } from "../../core/reward.ts";
import { builtinRegistry } from "../../builtin_plugins.ts";
import { brightnessReward, httpReward, httpRewardPlugin } from "../../rewards/mod.ts";
import { serveReward } from "../../examples/reward_server.ts";

type Handler = (req: Request, n: number) => Response | Promise<Response>;

/** Run `fn` against a server on a free port; the server stops afterwards. */
async function withServer(handler: Handler, fn: (url: string) => Promise<void>): Promise<void> {
  let n = 0;
  const controller = new AbortController();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", signal: controller.signal, onListen: () => {} },
    (req) => handler(req, n++),
  );
  try {
    await fn(`http://127.0.0.1:${server.addr.port}/score`);
  } finally {
    controller.abort();
    await server.finished;
  }
}

function images(b: number): tf.Tensor4D {
  // Image i is a flat gray of level i/4, so the server can tell them apart.
  return tf.tidy(() =>
    tf.concat(Array.from({ length: b }, (_, i) => tf.fill([1, 6, 5, 3], i / 4))) as tf.Tensor4D
  );
}

Deno.test("http reward: success (PNGs, prompts, metadata, env token, batches)", async () => {
  await useBackend("cpu");
  Deno.env.set("TEXFORCE_TEST_TOKEN", "s3cret-value");
  const seen: { auth: string | null; body: Record<string, unknown> }[] = [];
  await withServer(async (req) => {
    const body = await req.json();
    seen.push({ auth: req.headers.get("authorization"), body });
    const scores = [];
    for (const png of body.images as string[]) {
      const im = await decodeImage(new Uint8Array(Buffer.from(png, "base64")));
      assert.deepEqual([im.width, im.height], [5, 6]);
      scores.push(im.data[0]);
    }
    return Response.json({ scores });
  }, async (url) => {
    const options = parsePluginOptions(httpRewardPlugin, {
      url,
      batchSize: 2,
      headers: { Authorization: "Bearer {env:TEXFORCE_TEST_TOKEN}" },
      metadata: { run: "test" },
    }, "rewards[0].options");
    // What a run writes into pipeline.json keeps the reference, not the secret.
    assert.ok(!JSON.stringify(options).includes("s3cret"));
    const r = await httpRewardPlugin.create(options, { baseDir: "." }) as Reward;
    const x = images(3);
    const scores = await r.score({ images: x, prompts: ["a", "b", "c"] });
    x.dispose();
    assert.deepEqual(scores, [0, 64, 128]);
  });
  assert.equal(seen.length, 2, "3 images in batches of 2");
  assert.equal(seen[0].auth, "Bearer s3cret-value");
  assert.deepEqual(seen[0].body.prompts, ["a", "b"]);
  assert.deepEqual(seen[1].body.prompts, ["c"]);
  assert.deepEqual(seen[1].body.metadata, { run: "test", batch: 1 });
  assert.equal(builtinRegistry().get("reward", "http"), httpRewardPlugin);
  Deno.env.delete("TEXFORCE_TEST_TOKEN");
  assert.throws(
    () =>
      httpReward({ url: "http://127.0.0.1:1/", headers: { "x-key": "{env:TEXFORCE_TEST_TOKEN}" } }),
    /header 'x-key' needs the environment variable TEXFORCE_TEST_TOKEN, which is not set/,
  );
});

Deno.test("http reward: timeout", async () => {
  await withServer(async () => {
    await new Promise((r) => setTimeout(r, 400));
    return Response.json({ scores: [1] });
  }, async (url) => {
    const r = httpReward({ url, timeoutMs: 100, retries: 0 });
    const x = images(1);
    await assert.rejects(
      r.score({ images: x, prompts: ["a"] }),
      (e: Error) => {
        assert.match(
          e.message,
          new RegExp(`POST ${url} \\(batch 1/1, images 0…0\\): timed out after 100 ms`),
        );
        return true;
      },
    );
    x.dispose();
  });
});

Deno.test("http reward: 500 then success, with backoff", async () => {
  let calls = 0;
  await withServer((_, n) => {
    calls++;
    return n === 0
      ? new Response("model not loaded yet", { status: 500 })
      : Response.json({ scores: [0.5] });
  }, async (url) => {
    const r = httpReward({ url, retries: 2, backoffMs: 20 });
    const x = images(1);
    const t0 = performance.now();
    assert.deepEqual(await r.score({ images: x, prompts: ["a"] }), [0.5]);
    assert.ok(performance.now() - t0 >= 15, "waited before retrying");
    x.dispose();
  });
  assert.equal(calls, 2);
  // Retries run out: the last status and the attempt count are named; 4xx is not retried.
  await withServer(
    () => new Response("boom", { status: 503, statusText: "Service Unavailable" }),
    async (url) => {
      const x = images(1);
      await assert.rejects(
        httpReward({ url, retries: 1, backoffMs: 1 }).score({ images: x, prompts: ["a"] }),
        /batch 1\/1.*status 503 Service Unavailable: "boom" after 2 attempts/,
      );
      x.dispose();
    },
  );
  let forbidden = 0;
  await withServer(() => {
    forbidden++;
    return new Response("no", { status: 403 });
  }, async (url) => {
    const x = images(1);
    await assert.rejects(
      httpReward({ url, retries: 3 }).score({ images: x, prompts: ["a"] }),
      /status 403/,
    );
    x.dispose();
  });
  assert.equal(forbidden, 1);
});

Deno.test("http reward: wrong count and NaN are errors naming the batch", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["wrong count", '{"scores": [1]}', /images 0…1\): expected 2 scores \(one per image\), got 1/],
    // Python's json.dumps writes NaN bare.
    ["NaN", '{"scores": [1, NaN]}', /score 1 is "NaN", not a finite number/],
    ["null", '{"scores": [null, 2]}', /score 0 is null, not a finite number/],
    ["no scores", '{"score": 1}', /no "scores" array/],
  ];
  for (const [what, answer, re] of cases) {
    await t.step(what, async () => {
      await withServer(
        () => new Response(answer, { headers: { "content-type": "application/json" } }),
        async (url) => {
          const x = images(2);
          await assert.rejects(httpReward({ url }).score({ images: x, prompts: ["a", "b"] }), re);
          x.dispose();
        },
      );
    });
  }
});

Deno.test("http reward: connection refused", async () => {
  // A port that was just free and is closed again.
  const listener = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const url = `http://127.0.0.1:${port}/score`;
  const x = images(1);
  await assert.rejects(
    httpReward({ url, retries: 1, backoffMs: 1, headers: { Authorization: "Bearer hidden-token" } })
      .score({ images: x, prompts: ["a"] }),
    (e: Error) => {
      assert.match(e.message, new RegExp(`POST ${url} .*cannot connect: .*after 2 attempts`));
      assert.ok(!e.message.includes("hidden-token"), "no header value in the error");
      return true;
    },
  );
  x.dispose();
});

Deno.test("example reward server serves a texforce reward to the http reward", async () => {
  await useBackend("cpu");
  const controller = new AbortController();
  const server = serveReward(brightnessReward(), { port: 0, signal: controller.signal });
  try {
    const r = httpReward({ url: `http://127.0.0.1:${server.addr.port}/` });
    const x = images(3);
    const got = await r.score({ images: x, prompts: ["a", "b", "c"] });
    const want = await brightnessReward().score({ images: x, prompts: ["a", "b", "c"] });
    x.dispose();
    // PNG keeps 8 bits: i/4 rounds to the nearest level.
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(got[i] - want[i]) <= 0.5 / 255 + 1e-6);
  } finally {
    controller.abort();
    await server.finished;
  }
});
