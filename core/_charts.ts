// Small inline SVG line charts for the HTML report: a mean line with an optional band
// (± std or ± standard error), honest axes (zero included for one-signed data), labelled ticks.

/** One line of a chart. */
export interface ChartSeries {
  /** Legend name. */
  name: string;
  /** One value per x position (NaN: no point). */
  values: number[];
  /** Half-width of the band drawn around the line (same length as values). */
  band?: number[];
}

/** A chart. */
export interface ChartSpec {
  /** Heading. */
  title: string;
  /** Tick label of each x position. */
  xLabels: string[];
  /** Name of the x axis. */
  xName: string;
  /** Name of the y axis. */
  yName: string;
  /** The lines. */
  series: ChartSeries[];
  /** Text under the chart (what the band is, a caveat). */
  note?: string;
}

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function niceStep(range: number, ticks: number): number {
  const raw = range / Math.max(1, ticks);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
}

function fmt(v: number, step: number): string {
  if (v === 0) return "0";
  const digits = Math.max(0, Math.min(8, -Math.floor(Math.log10(step)) + 1));
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-4) return v.toExponential(1);
  return v.toFixed(digits).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}

/** The y range: the data (with bands), widened to include 0 when all values share a sign. */
export function yRange(
  series: ChartSeries[],
): { lo: number; hi: number; zero: "start" | "end" | "" } {
  const vals: number[] = [];
  for (const s of series) {
    s.values.forEach((v, i) => {
      if (!Number.isFinite(v)) return;
      const b = s.band?.[i] ?? 0;
      vals.push(v - (Number.isFinite(b) ? b : 0), v + (Number.isFinite(b) ? b : 0));
    });
  }
  if (!vals.length) return { lo: 0, hi: 1, zero: "start" };
  let lo = Math.min(...vals);
  let hi = Math.max(...vals);
  let zero: "start" | "end" | "" = "";
  if (lo >= 0) {
    lo = 0;
    zero = "start";
  } else if (hi <= 0) {
    hi = 0;
    zero = "end";
  }
  if (hi === lo) {
    if (hi === 0) hi = 1;
    else if (hi > 0) hi *= 1.1;
    else lo *= 1.1;
  }
  return { lo, hi, zero };
}

/** An SVG line chart with axes, ticks, bands and a legend, inside a <figure>. */
export function lineChart(spec: ChartSpec): string {
  const w = 620;
  const h = 260;
  const left = 64;
  const right = 16;
  const top = 16;
  const bottom = 48;
  const n = spec.xLabels.length;
  if (n === 0 || spec.series.every((s) => s.values.every((v) => !Number.isFinite(v)))) {
    return `<figure class="chart"><figcaption><b>${esc(spec.title)}</b>: no data</figcaption>` +
      `</figure>`;
  }
  const r = yRange(spec.series);
  const step = niceStep(r.hi - r.lo, 5);
  const lo = Math.floor(r.lo / step + 1e-9) * step;
  const hi = Math.ceil(r.hi / step - 1e-9) * step;
  const pw = w - left - right;
  const ph = h - top - bottom;
  const x = (i: number) => left + (n <= 1 ? pw / 2 : (i / (n - 1)) * pw);
  const y = (v: number) => top + ph - ((v - lo) / (hi - lo || 1)) * ph;
  let svg = `<rect x="${left}" y="${top}" width="${pw}" height="${ph}" fill="#fff" ` +
    `stroke="#bbb"/>`;
  for (let v = lo, k = 0; v <= hi + step / 2 && k < 20; v += step, k++) {
    const yy = y(v).toFixed(1);
    svg +=
      `<line x1="${left}" x2="${left + pw}" y1="${yy}" y2="${yy}" stroke="${
        Math.abs(v) < step / 1e6 ? "#888" : "#eee"
      }"/>` +
      `<text x="${left - 6}" y="${yy}" dy="4" text-anchor="end" font-size="11">${
        fmt(Math.abs(v) < step / 1e6 ? 0 : v, step)
      }</text>`;
  }
  const every = Math.max(1, Math.ceil(n / 12));
  spec.xLabels.forEach((label, i) => {
    if (i % every !== 0 && i !== n - 1) return;
    const xx = x(i).toFixed(1);
    svg += `<line x1="${xx}" x2="${xx}" y1="${top + ph}" y2="${top + ph + 4}" stroke="#888"/>` +
      `<text x="${xx}" y="${top + ph + 16}" text-anchor="middle" font-size="11">${
        esc(label)
      }</text>`;
  });
  svg +=
    `<text x="${left + pw / 2}" y="${h - 8}" text-anchor="middle" font-size="12">${
      esc(spec.xName)
    }</text>` +
    `<text transform="translate(14 ${top + ph / 2}) rotate(-90)" text-anchor="middle" ` +
    `font-size="12">${esc(spec.yName)}</text>`;
  const legend: string[] = [];
  spec.series.forEach((s, k) => {
    const c = COLOURS[k % COLOURS.length];
    const pts = s.values.map((v, i) => [i, v] as const).filter(([, v]) => Number.isFinite(v));
    if (s.band) {
      const upper = pts.map(([i, v]) =>
        `${x(i).toFixed(1)},${y(v + (s.band![i] || 0)).toFixed(1)}`
      );
      const lower = pts.map(([i, v]) => `${x(i).toFixed(1)},${y(v - (s.band![i] || 0)).toFixed(1)}`)
        .reverse();
      svg += `<polygon points="${[...upper, ...lower].join(" ")}" fill="${c}" ` +
        `fill-opacity="0.18" stroke="none"/>`;
    }
    svg += `<polyline fill="none" stroke="${c}" stroke-width="2" points="${
      pts.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ")
    }"/>`;
    for (const [i, v] of pts) {
      svg += `<circle cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}" r="2.5" fill="${c}"/>`;
    }
    legend.push(`<span style="color:${c}">━ ${esc(s.name)}</span>`);
  });
  const axisNote = r.zero === "start"
    ? "The y axis starts at 0."
    : r.zero === "end"
    ? "All values are negative: the y axis ends at 0."
    : "The values change sign: the y axis spans them; 0 is the darker line.";
  return `<figure class="chart"><figcaption><b>${esc(spec.title)}</b></figcaption>` +
    `<svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" ` +
    `xmlns="http://www.w3.org/2000/svg">${svg}</svg>` +
    `<div class="legend">${legend.join(" ")}</div>` +
    `<p class="note">${spec.note ? esc(spec.note) + " " : ""}${axisNote}</p></figure>`;
}
