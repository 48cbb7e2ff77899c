// The HTML report as a reader sees it: a short real run on the tiny model (two reward terms,
// held-out prompts), then report.html opened in headless Chromium (Debian's `chromium`): every
// image must decode and be shown at least 256 px wide, and a screenshot is taken
// (TEXFORCE_SCREENSHOT=<file.png> keeps it). Skipped, with the reason printed, without chromium.
import assert from "node:assert/strict";
import { join } from "node:path";
import { builtinRegistry } from "../../builtin_plugins.ts";
import { parsePipeline } from "../../core/pipeline_schema.ts";
import { train } from "../../core/train.ts";
import { TINY_SD } from "../_helpers.ts";

async function chromiumVersion(): Promise<string | null> {
  try {
    const out = await new Deno.Command("chromium", { args: ["--version"], stdout: "piped" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

const CHROMIUM = await chromiumVersion();
if (!CHROMIUM) {
  console.log(
    "report_browser_test: skipped: no `chromium` on PATH (apt-get install -y chromium; " +
      ".ci/run installs it)",
  );
}

async function chromium(profile: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command("chromium", {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--hide-scrollbars",
      `--user-data-dir=${profile}`,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.ok(out.success, `chromium failed: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

// Marks the document with how many images decoded and how many are shown ≥ 256 px wide.
const PROBE = `<script>addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  const big = imgs.filter((i) => i.getBoundingClientRect().width >= 256).length;
  document.documentElement.setAttribute("data-probe", ok + "/" + big + "/" + imgs.length);
});</script>`;

Deno.test({
  name: "report: a reader's view in headless Chromium",
  ignore: !CHROMIUM,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "texforce_report_" });
    try {
      const run = join(dir, "run");
      const pipeline = parsePipeline({
        name: "report_check",
        model: TINY_SD,
        backend: "wasm",
        encoder: { use: "clip-lora", options: { rank: 4, alpha: 4 } },
        sampler: { steps: 2, batchSize: 2 },
        rewards: [{ use: "brightness" }, { use: "jpeg-compressibility", weight: 0.001 }],
        prompts: ["a red circle", "a blue square"],
        optimizer: { lr: 5e-2 },
        train: { epochs: 2, batchesPerEpoch: 1, batchSize: 2, timestepFraction: 1 },
        eval: {
          prompts: [
            "a red circle on a white background, drawn with a thick brush",
            "a blue square",
          ],
          seeds: [0],
        },
        output: { dir: run },
      }, { baseDir: dir });
      await train(pipeline, { registry: builtinRegistry() });
      const html = await Deno.readTextFile(join(run, "report.html"));

      // Self-contained: images are data URLs; nothing is fetched.
      assert.ok(!/(src|href)="(?!data:)/.test(html), "only data: URLs");
      assert.ok(!/https?:\/\//.test(html.replace(/xmlns="http:\/\/www\.w3\.org\/2000\/svg"/g, "")));
      // Full captions, held-out axis labelled from "before", one chart per reward term.
      assert.match(html, /a red circle on a white background, drawn with a thick brush/);
      assert.match(html, />before<\/text>/);
      assert.match(html, /Reward term brightness/);
      assert.match(html, /Reward term jpeg-compressibility/);
      assert.match(html, /standard error/);
      assert.match(html, /The y axis starts at 0/);
      assert.match(html, /PPO ratio is exactly 1/, "the one-step-per-epoch note");
      assert.match(html, /image-rendering:pixelated/);

      const profile = join(dir, "profile");
      const probe = join(dir, "probe.html");
      await Deno.writeTextFile(probe, html.replace("</body>", `${PROBE}</body>`));
      const dom = await chromium(
        profile,
        "--virtual-time-budget=5000",
        "--dump-dom",
        `file://${probe}`,
      );
      const m = /data-probe="(\d+)\/(\d+)\/(\d+)"/.exec(dom);
      assert.ok(m, `the probe did not run:\n${dom.slice(0, 400)}`);
      const [ok, big, all] = [Number(m[1]), Number(m[2]), Number(m[3])];
      // 2 held-out images before + after, 2 epochs × 2 training samples.
      assert.equal(all, 8, "images in the report");
      assert.equal(ok, all, "every image decoded");
      assert.equal(big, all, "every image shown at least 256 px wide");

      const shot = Deno.env.get("TEXFORCE_SCREENSHOT") || join(dir, "report.png");
      await chromium(
        profile,
        "--window-size=1400,4400",
        `--screenshot=${shot}`,
        `file://${join(run, "report.html")}`,
      );
      const png = await Deno.readFile(shot);
      assert.deepEqual([...png.slice(1, 4)], [0x50, 0x4e, 0x47]);
      assert.ok(png.length > 20_000, `a blank screenshot? ${png.length} bytes`);
      console.log(`report_browser_test: ${CHROMIUM}; ${ok}/${all} images decoded; ${shot}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
