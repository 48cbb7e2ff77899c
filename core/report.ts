/**
 * The HTML report of a run: the reward curve per epoch (and per reward term), training
 * diagnostics, and a before/after gallery of the evaluation prompts at fixed seeds.
 *
 * @module
 */
import { join } from "node:path";
import { writeFileAtomic } from "./io/safetensors.ts";

type Row = Record<string, unknown>;

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** An inline SVG line chart of several series over x = 1..n. */
function chart(title: string, series: Record<string, number[]>): string {
  const w = 640;
  const h = 240;
  const pad = 40;
  const all = Object.values(series).flat().filter(Number.isFinite);
  if (all.length === 0) return "";
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  if (hi === lo) {
    hi += 1e-9 + Math.abs(hi) * 0.01;
    lo -= 1e-9 + Math.abs(lo) * 0.01;
  }
  const n = Math.max(...Object.values(series).map((s) => s.length));
  const x = (i: number) => pad + (n <= 1 ? 0 : (i / (n - 1)) * (w - 2 * pad));
  const y = (v: number) => h - pad - ((v - lo) / (hi - lo)) * (h - 2 * pad);
  const colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
  const lines = Object.entries(series).map(([name, s], k) => {
    const pts = s.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const c = colours[k % colours.length];
    return `<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts}"/>` +
      `<text x="${w - pad}" y="${14 + 14 * k}" fill="${c}" text-anchor="end" font-size="12">${
        esc(name)
      }</text>`;
  });
  return `<h3>${
    esc(title)
  }</h3><svg width="${w}" height="${h}" xmlns="http://www.w3.org/2000/svg">` +
    `<rect width="${w}" height="${h}" fill="#fff" stroke="#ccc"/>` +
    `<text x="4" y="${pad}" font-size="11">${hi.toPrecision(4)}</text>` +
    `<text x="4" y="${h - pad}" font-size="11">${lo.toPrecision(4)}</text>` +
    `<text x="${w / 2}" y="${
      h - 8
    }" font-size="11" text-anchor="middle">epoch / step (1…${n})</text>` +
    lines.join("") + `</svg>`;
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
 * Write `report.html` in the run folder from its metrics and eval images; returns its path.
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
  const rewardSeries: Record<string, number[]> = {
    total: epochs.map((r) => Number(r.reward_mean)),
  };
  for (const k of Object.keys(epochs[0] ?? {})) {
    const m = /^reward_(.+)_mean$/.exec(k);
    if (m) rewardSeries[m[1]] = epochs.map((r) => Number(r[k]));
  }
  const trainSeries = {
    loss: steps.map((r) => Number(r.loss)),
    approx_kl: steps.map((r) => Number(r.approx_kl)),
    clipfrac: steps.map((r) => Number(r.clipfrac)),
  };
  const gallery: string[] = [];
  const first = evals[0];
  const last = evals.length > 1 ? evals[evals.length - 1] : undefined;
  for (const ev of [first, last]) {
    if (!ev) continue;
    const label = String(ev.label);
    const file = `eval/${label}.png`;
    let exists = true;
    try {
      await Deno.stat(join(outputDir, file));
    } catch {
      exists = false;
    }
    const caps = (ev.captions as string[] | undefined) ?? [];
    gallery.push(
      `<div class="col"><h3>${ev === first ? "before" : "after"} (${esc(label)}): mean reward ${
        Number(ev.reward_mean).toFixed(4)
      }</h3>${
        exists ? `<img src="${esc(file)}" alt="${esc(label)}">` : "<p>(no images saved)</p>"
      }` +
        `<ol>${caps.map((c) => `<li>${esc(c)}</li>`).join("")}</ol></div>`,
    );
  }
  const table = epochs.map((r) =>
    `<tr><td>${r.epoch}</td><td>${Number(r.reward_mean).toFixed(4)}</td><td>${
      Number(r.reward_std).toFixed(4)
    }</td><td>${Number(r.seconds_sampling).toFixed(1)}</td><td>${
      Number(r.seconds_rewards).toFixed(1)
    }</td><td>${Number(r.seconds_training).toFixed(1)}</td></tr>`
  ).join("");
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>texforce: ${
    esc(name)
  }</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
.row{display:flex;gap:2em;flex-wrap:wrap}.col{flex:1;min-width:300px}
img{max-width:100%;image-rendering:pixelated;border:1px solid #ccc}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}</style>
</head><body><h1>texforce run: ${esc(name)}</h1>
<p>${epochs.length} epochs, ${steps.length} optimizer steps.</p>
${chart("Reward per epoch (mean)", rewardSeries)}
${
    chart("Held-out reward at fixed seeds (before training, then per evaluation)", {
      eval: evals.map((r) => Number(r.reward_mean)),
    })
  }
${chart("PPO diagnostics per optimizer step", trainSeries)}
<h2>Held-out prompts at fixed seeds</h2><div class="row">${
    gallery.join("") || "<p>No evaluation configured.</p>"
  }</div>
<h2>Epochs</h2><table><tr><th>epoch</th><th>reward mean</th><th>std</th><th>sampling s</th><th>rewards s</th><th>training s</th></tr>${table}</table>
</body></html>`;
  const path = join(outputDir, "report.html");
  await writeFileAtomic(path, new TextEncoder().encode(html));
  return path;
}
