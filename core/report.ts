/**
 * The HTML report of a run, one self-contained file (images embedded, no network): the held-out
 * prompts before and after training side by side at fixed seeds, reward curves with their spread,
 * the held-out curve with its standard error, PPO diagnostics (with a note when they cannot be
 * informative), a per-epoch gallery and a table of epochs.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { writeFileAtomic } from "./io/atomic_file.ts";
import { type ChartSeries, lineChart } from "./_charts.ts";

type Row = Record<string, unknown>;

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

interface Embedded {
  src: string;
  width: number;
  height: number;
}

/** A PNG as a data URL with its size (from the IHDR chunk), or null when missing. */
async function embedPng(path: string): Promise<Embedded | null> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch {
    return null;
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const isPng = bytes.length > 24 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47;
  return {
    src: `data:image/png;base64,${Buffer.from(bytes).toString("base64")}`,
    width: isPng ? dv.getUint32(16) : 256,
    height: isPng ? dv.getUint32(20) : 256,
  };
}

/** An <img> at least `min` px wide, scaled with nearest neighbour (crisp pixels). */
function img(e: Embedded, alt: string, min = 256, max = Infinity): string {
  const width = Math.min(Math.max(min, e.width), Math.max(min, max));
  const height = Math.round((e.height / e.width) * width);
  return `<img src="${e.src}" width="${width}" height="${height}" alt="${esc(alt)}">`;
}

/** The single images of a saved grid (`<grid>/NNNN.png`) and their captions. */
async function singles(outputDir: string, gridFile: string): Promise<
  { image: Embedded | null; caption: string }[]
> {
  const dir = join(outputDir, gridFile.replace(/\.png$/, ""));
  let captions: string[] = [];
  try {
    captions = JSON.parse(await Deno.readTextFile(join(dir, "captions.json")));
  } catch {
    return [];
  }
  return await Promise.all(
    captions.map(async (caption, i) => ({
      image: await embedPng(join(dir, `${String(i).padStart(4, "0")}.png`)),
      caption,
    })),
  );
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
}

function std(xs: number[]): number {
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(1, xs.length));
}

function f4(v: unknown): string {
  const n = Number(v);
  return Number.isFinite(n) ? n.toFixed(4) : "–";
}

/**
 * Read a run's `metrics.jsonl`.
 *
 * @example
 * ```ts
 * import { readMetrics } from "@texforce/core";
 * const rows = await readMetrics("runs/demo");
 * ```
 */
export async function readMetrics(outputDir: string): Promise<Record<string, unknown>[]> {
  let text = "";
  try {
    text = await Deno.readTextFile(join(outputDir, "metrics.jsonl"));
  } catch {
    return [];
  }
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

/**
 * Write `report.html` in the run folder from its metrics and images; returns its path.
 *
 * @example
 * ```ts
 * import { writeReport } from "@texforce/core";
 * const html = await writeReport("runs/demo", "demo");
 * ```
 */
export async function writeReport(outputDir: string, name: string): Promise<string> {
  const rows = await readMetrics(outputDir);
  const epochs = rows.filter((r: Row) => r.type === "epoch");
  const steps = rows.filter((r: Row) => r.type === "train");
  const evals = rows.filter((r: Row) => r.type === "eval");
  let pipeline: Row = {};
  try {
    pipeline = JSON.parse(await Deno.readTextFile(join(outputDir, "pipeline.json")));
  } catch { /* a run folder written by an app without train() */ }
  const epochLabels = epochs.map((r) => String(r.epoch));
  const terms = Object.keys(epochs[0] ?? {}).flatMap((k) => {
    const m = /^reward_(.+)_mean$/.exec(k);
    return m ? [m[1]] : [];
  });
  const weights = new Map<string, number>();
  for (const r of (pipeline.rewards as Row[] | undefined) ?? []) {
    weights.set(String(r.name ?? r.use), Number(r.weight ?? 1));
  }
  const sections: string[] = [];

  // Summary.
  const seconds = epochs.reduce(
    (a, r) =>
      a + Number(r.seconds_sampling ?? 0) + Number(r.seconds_rewards ?? 0) +
      Number(r.seconds_training ?? 0),
    0,
  );
  const first = evals[0];
  const last = evals.length > 1 ? evals[evals.length - 1] : undefined;
  const se = (ev: Row) => {
    const xs = (ev.rewards as number[] | undefined) ?? [];
    return std(xs) / Math.sqrt(Math.max(1, xs.length));
  };
  const summary = [
    `<b>${epochs.length}</b> epochs, <b>${steps.length}</b> optimizer steps, ` +
    `${(seconds / 60).toFixed(1)} min of sampling, scoring and training.`,
    pipeline.model ? `Model <code>${esc(String(pipeline.model))}</code>.` : "",
    terms.length
      ? `Reward: ${
        terms.map((t) => `<code>${esc(t)}</code>${weights.has(t) ? ` × ${weights.get(t)}` : ""}`)
          .join(" + ")
      }.`
      : "",
    first && last
      ? `Held-out reward <b>${f4(first.reward_mean)} ± ${f4(se(first))}</b> before training, ` +
        `<b>${f4(last.reward_mean)} ± ${f4(se(last))}</b> after (${
          esc(String(last.label))
        }; mean ± standard error over ${(first.rewards as number[]).length} images).`
      : "",
  ].filter(Boolean);
  sections.push(`<p>${summary.join(" ")}</p>`);

  // Before / after at fixed seeds.
  if (first) {
    const before = await singles(outputDir, `eval/${first.label}.png`);
    const after = last ? await singles(outputDir, `eval/${last.label}.png`) : [];
    const prompts = (first.prompts as string[] | undefined) ?? [];
    const seeds = (first.seeds as number[] | undefined) ?? [];
    const rb = (first.rewards as number[] | undefined) ?? [];
    const ra = (last?.rewards as number[] | undefined) ?? [];
    const caps = (first.captions as string[] | undefined) ?? [];
    const rowsHtml = caps.map((cap, i) => {
      const prompt = prompts.length ? prompts[i % prompts.length] : cap.split(" | ")[0];
      const seed = seeds.length && prompts.length ? seeds[Math.floor(i / prompts.length)] : "";
      const cell = (x: { image: Embedded | null } | undefined, r: number | undefined) =>
        `<td>${x?.image ? img(x.image, prompt) : "<i>(no image saved)</i>"}<div>reward ${
          f4(r)
        }</div></td>`;
      const d = ra[i] !== undefined && rb[i] !== undefined ? ra[i] - rb[i] : undefined;
      return `<tr><th class="prompt">${esc(prompt)}<div class="seed">seed ${seed}</div></th>${
        cell(before[i], rb[i])
      }${last ? cell(after[i], ra[i]) : ""}${
        d !== undefined ? `<td class="delta">${d >= 0 ? "+" : ""}${d.toFixed(4)}</td>` : ""
      }</tr>`;
    }).join("");
    sections.push(
      `<h2>Held-out prompts at fixed seeds: before and after training</h2>` +
        `<table class="pairs"><tr><th>prompt</th><th>before training</th>${
          last ? `<th>after (${esc(String(last.label))})</th><th>change</th>` : ""
        }</tr>${rowsHtml}</table>`,
    );
  } else {
    sections.push(`<h2>Held-out prompts</h2><p>No evaluation configured (<code>eval</code>).</p>`);
  }

  // Reward curves.
  const band = (k: string) => epochs.map((r) => Number(r[`${k}_std`]));
  const charts: string[] = [];
  charts.push(lineChart({
    title: terms.length > 1
      ? "Total reward per epoch (weighted sum)"
      : `Reward per epoch${terms.length ? ` (${terms[0]})` : ""}`,
    xLabels: epochLabels,
    xName: "epoch",
    yName: "reward",
    series: [{
      name: "mean of the epoch's samples",
      values: epochs.map((r) => Number(r.reward_mean)),
      band: band("reward"),
    }],
    note: "Band: ± one standard deviation over the epoch's training samples.",
  }));
  if (terms.length > 1) {
    for (const t of terms) {
      charts.push(lineChart({
        title: `Reward term ${t}${weights.has(t) ? ` (weight ${weights.get(t)})` : ""}`,
        xLabels: epochLabels,
        xName: "epoch",
        yName: t,
        series: [{
          name: t,
          values: epochs.map((r) => Number(r[`reward_${t}_mean`])),
          band: band(`reward_${t}`),
        }],
        note: "Unweighted score; band: ± one standard deviation.",
      }));
    }
  }
  if (evals.length) {
    charts.push(lineChart({
      title: "Held-out reward at fixed prompts and seeds",
      xLabels: evals.map((r) => (Number(r.epoch) === 0 ? "before" : String(r.epoch))),
      xName: "evaluation: before training, then after epoch 1…N",
      yName: "reward",
      series: [{
        name: "mean over held-out images",
        values: evals.map((r) => Number(r.reward_mean)),
        band: evals.map(se),
      }],
      note: "Band: ± one standard error of the mean.",
    }));
  }
  sections.push(`<h2>Rewards</h2><div class="charts">${charts.join("")}</div>`);

  // PPO diagnostics.
  const perEpoch = new Map<number, number>();
  for (const r of steps) perEpoch.set(Number(r.epoch), (perEpoch.get(Number(r.epoch)) ?? 0) + 1);
  const oneStep = steps.length > 0 && [...perEpoch.values()].every((n) => n === 1);
  const flat = steps.length > 0 &&
    steps.every((r) => Number(r.approx_kl) === 0 && Number(r.clipfrac) === 0);
  let ppoNote = "";
  if (oneStep) {
    ppoNote = "Each epoch took a single optimizer step, computed on samples drawn by the " +
      "current policy: the PPO ratio is exactly 1 there, so approx KL and the clip fraction are " +
      "0 by construction and the loss is −mean(advantage) ≈ 0. These charts cannot be " +
      "informative for this run; use train.innerEpochs > 1 or a train.batchSize smaller than " +
      "the epoch's samples to see the policy move between steps.";
  } else if (flat) {
    ppoNote = "Approx KL and the clip fraction stayed 0: the policy did not move measurably " +
      "between optimizer steps within an epoch (the ratio stayed 1).";
  }
  const stepLabels = steps.map((r) => String(r.step));
  const ppo = [
    ["loss", "PPO loss"],
    ["approx_kl", "approx KL"],
    ["clipfrac", "clip fraction"],
    ["grad_norm", "gradient norm (before clipping)"],
  ].map(([k, title]) =>
    lineChart({
      title,
      xLabels: stepLabels,
      xName: "optimizer step",
      yName: k,
      series: [{ name: k, values: steps.map((r) => Number(r[k])) } satisfies ChartSeries],
    })
  );
  sections.push(
    `<h2>PPO diagnostics</h2>${ppoNote ? `<p class="warn">${esc(ppoNote)}</p>` : ""}` +
      `<div class="charts">${ppo.join("")}</div>`,
  );

  // Per-epoch gallery.
  const gallery: string[] = [];
  for (const r of epochs) {
    const file = `images/epoch-${String(r.epoch).padStart(4, "0")}.png`;
    const items = await singles(outputDir, file);
    if (!items.length) continue;
    gallery.push(
      `<div class="epoch"><h3>epoch ${r.epoch}: mean reward ${f4(r.reward_mean)}</h3>` +
        `<div class="strip">${
          items.map((x) =>
            `<figure>${x.image ? img(x.image, x.caption, 256, 256) : ""}<figcaption>${
              esc(x.caption)
            }</figcaption></figure>`
          ).join("")
        }</div></div>`,
    );
  }
  sections.push(
    `<h2>Training samples per epoch</h2>${
      gallery.length
        ? `<p>The first sampling batch of each epoch (prompt | reward).</p>${gallery.join("")}`
        : "<p>No images saved (<code>output.saveImages</code>).</p>"
    }`,
  );

  // Table.
  const termHead = terms.length > 1 ? terms.map((t) => `<th>${esc(t)}</th>`).join("") : "";
  const table = epochs.map((r) =>
    `<tr><td>${r.epoch}</td><td>${f4(r.reward_mean)}</td><td>${f4(r.reward_std)}</td>${
      terms.length > 1 ? terms.map((t) => `<td>${f4(r[`reward_${t}_mean`])}</td>`).join("") : ""
    }<td>${Number(r.seconds_sampling).toFixed(1)}</td><td>${
      Number(r.seconds_rewards).toFixed(1)
    }</td><td>${Number(r.seconds_training).toFixed(1)}</td></tr>`
  ).join("");
  sections.push(
    `<h2>Epochs</h2><table class="num"><tr><th>epoch</th><th>reward mean</th><th>std</th>` +
      `${termHead}<th>sampling s</th><th>rewards s</th><th>training s</th></tr>${table}</table>`,
  );

  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>texforce: ${esc(name)}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1320px;
  padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
img{image-rendering:pixelated;image-rendering:crisp-edges;border:1px solid #ccc;display:block}
table.pairs{border-collapse:collapse}table.pairs td,table.pairs th{padding:6px 10px;
  vertical-align:top;text-align:left;border-bottom:1px solid #eee}
th.prompt{max-width:260px;font-weight:600}.seed{font-weight:normal;color:#666}
td.delta{font-variant-numeric:tabular-nums;vertical-align:middle}
.charts{display:flex;flex-wrap:wrap;gap:1.5em}figure.chart{margin:0}
.legend{font-size:13px}.note{font-size:13px;color:#555;max-width:620px;margin:.2em 0}
.warn{background:#fff7e0;border-left:4px solid #e0a800;padding:.5em 1em;max-width:1100px}
.strip{display:flex;flex-wrap:wrap;gap:12px}.strip figure{margin:0;width:256px}
.strip figcaption{font-size:13px;overflow-wrap:anywhere}
table.num{border-collapse:collapse}table.num td,table.num th{border:1px solid #ddd;
  padding:2px 8px;text-align:right;font-variant-numeric:tabular-nums}
</style></head><body><h1>texforce run: ${esc(name)}</h1>
${sections.join("\n")}
</body></html>`;
  const path = join(outputDir, "report.html");
  await writeFileAtomic(path, new TextEncoder().encode(html));
  return path;
}
