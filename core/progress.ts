/**
 * Progress of a run: one model (phase, epoch i/N, step, images/s, ETA) that the trainer fills in
 * ({@linkcode ProgressClock}) and that an app draws: {@linkcode progressPrinter} draws it as a
 * live bar on a terminal and as a plain line every few seconds otherwise (CI logs, files).
 *
 * The library itself prints nothing: the trainer only calls the `onProgress` and `log` callbacks
 * an app gives it.
 *
 * @module
 */
import type { RunPlan } from "./run_plan.ts";

/**
 * What a run is doing now.
 *
 * @example
 * ```ts
 * import type { TrainPhase } from "@texforce/core";
 * const p: TrainPhase = "sampling";
 * ```
 */
export type TrainPhase = "eval" | "sampling" | "rewards" | "training" | "checkpoint" | "done";

/**
 * One progress event (the same numbering everywhere: epoch `epoch` of `epochs`, 1-based).
 *
 * @example
 * ```ts
 * import type { TrainProgress } from "@texforce/core";
 * const show = (e: TrainProgress) => console.log(e.message); // "epoch 2/8 sampling 1/2 · …"
 * ```
 */
export interface TrainProgress {
  /** The epoch in progress, 1-based; 0 for the evaluation before training. */
  epoch: number;
  /** Epochs of the run. */
  epochs: number;
  /** Optimizer steps taken so far. */
  step: number;
  /** What the run is doing. */
  phase: TrainPhase;
  /** Units of this phase done in this epoch (batches, PPO passes, eval seeds). */
  done: number;
  /** Units of this phase in this epoch. */
  total: number;
  /** Share of the whole run done, 0…1 (by estimated time). */
  fraction: number;
  /** Images sampled per second of wall time so far (training and eval), once measurable. */
  imagesPerSecond?: number;
  /** Estimated seconds left, once a batch has been timed. */
  etaSeconds?: number;
  /** Seconds since the run started. */
  elapsedSeconds: number;
  /** The same as one human-readable line. */
  message: string;
}

/**
 * Kinds of timed work units: a sampling batch (with its scoring), a PPO pass, an eval batch.
 *
 * @example
 * ```ts
 * import type { WorkUnit } from "@texforce/core";
 * const u: WorkUnit = "pass";
 * ```
 */
export type WorkUnit = "batch" | "pass" | "eval";
type Unit = WorkUnit;

/**
 * Turns finished work units (sampling batches, PPO passes, eval batches) into the share done,
 * the image rate and an ETA for a {@linkcode RunPlan}.
 *
 * The ETA adds the remaining units at their measured mean durations (a PPO pass not yet timed is
 * estimated from a sampling batch: forward+backward ≈ 3 forward calls), scaled by the measured
 * overhead (image writing, checkpoints) of the run so far.
 *
 * @example
 * ```ts
 * import { ProgressClock, parsePipeline, planRun } from "@texforce/core";
 * const p = parsePipeline({ model: "m", rewards: [{ use: "brightness" }], prompts: ["a"] });
 * const clock = new ProgressClock(planRun(p));
 * clock.finished("batch", 2.5, 2);
 * console.log(clock.snapshot().etaSeconds);
 * ```
 */
export class ProgressClock {
  readonly #plan: RunPlan;
  readonly #t0: number;
  readonly #count: Record<Unit, number> = { batch: 0, pass: 0, eval: 0 };
  readonly #seconds: Record<Unit, number> = { batch: 0, pass: 0, eval: 0 };
  readonly #remaining: Record<Unit, number>;
  #images = 0;

  /** A clock for the work of `plan` (from the epoch the run starts at). */
  constructor(
    plan: RunPlan,
    remainingEpochs: number = plan.epochs,
    now: number = performance.now(),
  ) {
    this.#plan = plan;
    this.#t0 = now;
    this.#remaining = {
      batch: remainingEpochs * plan.batchesPerEpoch,
      pass: remainingEpochs * plan.trainingPassesPerEpoch,
      eval: plan.evalRuns * plan.evalBatchesPerRun,
    };
  }

  /** Record a finished unit of `seconds`, which sampled `images` images. */
  finished(unit: WorkUnit, seconds: number, images = 0): void {
    this.#count[unit]++;
    this.#seconds[unit] += seconds;
    this.#remaining[unit] = Math.max(0, this.#remaining[unit] - 1);
    this.#images += images;
  }

  #mean(unit: Unit): number | undefined {
    const p = this.#plan;
    const evalShare = p.evalImagesPerRun / Math.max(1, p.evalBatchesPerRun) /
      Math.max(1, p.batchSize);
    const batch = this.#count.batch
      ? this.#seconds.batch / this.#count.batch
      : this.#count.eval
      ? this.#seconds.eval / this.#count.eval / evalShare
      : undefined;
    if (unit === "batch") return batch;
    if (unit === "eval") {
      if (this.#count.eval) return this.#seconds.eval / this.#count.eval;
      return batch === undefined ? undefined : batch * evalShare;
    }
    if (this.#count.pass) return this.#seconds.pass / this.#count.pass;
    if (batch === undefined) return undefined;
    const mb = Math.min(p.imagesPerEpoch, Math.ceil(p.imagesPerEpoch / p.minibatches));
    return (3 * batch / Math.max(1, p.steps)) * (mb / Math.max(1, p.batchSize));
  }

  /** Share done, image rate and ETA now. */
  snapshot(now: number = performance.now()): {
    fraction: number;
    imagesPerSecond?: number;
    etaSeconds?: number;
    elapsedSeconds: number;
  } {
    const elapsed = (now - this.#t0) / 1000;
    const units: Unit[] = ["batch", "pass", "eval"];
    const accounted = units.reduce((a, u) => a + this.#seconds[u], 0);
    let left = 0;
    let known = true;
    for (const u of units) {
      if (this.#remaining[u] === 0) continue;
      const m = this.#mean(u);
      if (m === undefined) known = false;
      else left += m * this.#remaining[u];
    }
    const overhead = accounted > 0 ? Math.max(1, elapsed / accounted) : 1;
    const eta = known && accounted > 0 ? left * overhead : undefined;
    const fraction = eta === undefined ? 0 : Math.min(1, elapsed / Math.max(1e-9, elapsed + eta));
    return {
      fraction,
      imagesPerSecond: this.#images > 0 && elapsed > 0 ? this.#images / elapsed : undefined,
      etaSeconds: eta,
      elapsedSeconds: elapsed,
    };
  }
}

/**
 * Seconds as `42s`, `3m05s` or `1h02m`.
 *
 * @example
 * ```ts
 * import { formatDuration } from "@texforce/core";
 * console.log(formatDuration(185)); // "3m05s"
 * ```
 */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

function where(e: TrainProgress): string {
  const what = e.total > 0 ? `${e.phase} ${e.done}/${e.total}` : e.phase;
  return e.epoch === 0 ? `before training: ${what}` : `epoch ${e.epoch}/${e.epochs} ${what}`;
}

function rateAndEta(e: TrainProgress): string {
  const parts = [`step ${e.step}`];
  if (e.imagesPerSecond !== undefined) {
    parts.push(`${e.imagesPerSecond.toPrecision(e.imagesPerSecond < 10 ? 2 : 3)} images/s`);
  }
  parts.push(
    e.etaSeconds === undefined
      ? "ETA after the first batch"
      : `ETA ${formatDuration(e.etaSeconds)}`,
  );
  parts.push(`elapsed ${formatDuration(e.elapsedSeconds)}`);
  return parts.join(" · ");
}

/**
 * A progress event as one plain line (what a log file or CI shows).
 *
 * @example
 * ```ts
 * import { formatProgressLine } from "@texforce/core";
 * console.log(formatProgressLine({
 *   epoch: 2, epochs: 8, step: 1, phase: "sampling", done: 1, total: 2, fraction: 0.2,
 *   imagesPerSecond: 3.2, etaSeconds: 40, elapsedSeconds: 10, message: "",
 * })); // "epoch 2/8 sampling 1/2 · step 1 · 3.2 images/s · ETA 40s · elapsed 10s"
 * ```
 */
export function formatProgressLine(e: TrainProgress): string {
  return `${where(e)} · ${rateAndEta(e)}`;
}

/**
 * Options of {@linkcode progressPrinter}.
 *
 * @example
 * ```ts
 * import type { ProgressPrinterOptions } from "@texforce/core";
 * const o: ProgressPrinterOptions = { terminal: false, intervalSeconds: 10, verbose: true };
 * ```
 */
export interface ProgressPrinterOptions {
  /** Draw a live bar (default: when stderr is a terminal). */
  terminal?: boolean;
  /** Where text goes (default: stderr). */
  write?: (text: string) => void;
  /** Seconds between plain progress lines when not a terminal (default 5). */
  intervalSeconds?: number;
  /** Also print `detail` log lines (per-step PPO diagnostics). */
  verbose?: boolean;
  /** Terminal width for the bar (default: the terminal's, else 100). */
  columns?: number;
}

/**
 * Draws progress events and log lines; see {@linkcode progressPrinter}.
 *
 * @example
 * ```ts
 * import { type ProgressPrinter, progressPrinter } from "@texforce/core";
 * const p: ProgressPrinter = progressPrinter({ terminal: false });
 * p.log("hello");
 * p.close();
 * ```
 */
export interface ProgressPrinter {
  /** Pass as `onProgress`. */
  onProgress(e: TrainProgress): void;
  /** Pass as `log`: prints a line (above the bar on a terminal). */
  log(line: string, level?: "info" | "detail"): void;
  /** Finish the bar. */
  close(): void;
}

/**
 * Progress for a command-line app: a bar redrawn in place on a terminal, a plain line every
 * `intervalSeconds` (and at the start of each epoch) otherwise.
 *
 * @example
 * ```ts
 * import { builtinRegistry, loadPipeline, progressPrinter, train } from "@texforce/core";
 * const progress = progressPrinter();
 * await train(await loadPipeline("examples/tiny_brightness.yaml"), {
 *   registry: builtinRegistry(),
 *   onProgress: progress.onProgress,
 *   log: progress.log,
 * });
 * progress.close();
 * ```
 */
export function progressPrinter(options: ProgressPrinterOptions = {}): ProgressPrinter {
  const enc = new TextEncoder();
  const write = options.write ?? ((s: string) => Deno.stderr.writeSync(enc.encode(s)));
  const terminal = options.terminal ?? Deno.stderr.isTerminal();
  const interval = (options.intervalSeconds ?? 5) * 1000;
  let columns = options.columns ?? 100;
  if (options.columns === undefined && terminal) {
    try {
      columns = Deno.consoleSize().columns;
    } catch { /* not a console */ }
  }
  let bar = "";
  let lastDraw = -Infinity;
  let lastLine = -Infinity;
  let lastEpoch = -1;
  const drawBar = (e: TrainProgress) => {
    // The richest line that fits: drop elapsed time, then step and rate, on narrow terminals.
    const eta = e.etaSeconds === undefined ? "ETA …" : `ETA ${formatDuration(e.etaSeconds)}`;
    const rate = e.imagesPerSecond === undefined
      ? []
      : [`${e.imagesPerSecond.toPrecision(e.imagesPerSecond < 10 ? 2 : 3)} images/s`];
    const head = ` ${Math.floor(e.fraction * 100)}% ${where(e)}`;
    const candidates = [
      [head, `step ${e.step}`, ...rate, eta, `elapsed ${formatDuration(e.elapsedSeconds)}`],
      [head, `step ${e.step}`, ...rate, eta],
      [head, eta],
    ].map((parts) => parts.join(" · "));
    const info = candidates.find((c) => c.length + 13 <= columns) ?? candidates[2];
    const width = Math.max(10, Math.min(30, columns - info.length - 3));
    const fill = Math.round(e.fraction * width);
    const text = `[${"█".repeat(fill)}${"░".repeat(width - fill)}]${info}`;
    bar = text.length > columns - 1 ? text.slice(0, Math.max(1, columns - 2)) + "…" : text;
    write(`\r\x1b[K${bar}`);
  };
  return {
    onProgress(e) {
      const now = performance.now();
      if (terminal) {
        if (now - lastDraw < 100 && e.phase !== "done") return;
        lastDraw = now;
        if (e.phase === "done") {
          if (bar) write("\r\x1b[K");
          bar = "";
          return;
        }
        drawBar(e);
        return;
      }
      if (e.phase === "done") return;
      if (now - lastLine >= interval || e.epoch !== lastEpoch) {
        lastLine = now;
        lastEpoch = e.epoch;
        write(formatProgressLine(e) + "\n");
      }
    },
    log(line, level = "info") {
      if (level === "detail" && !options.verbose) return;
      if (terminal && bar) {
        write(`\r\x1b[K${line}\n${bar}`);
      } else {
        write(line + "\n");
      }
    },
    close() {
      if (terminal && bar) write("\r\x1b[K");
      bar = "";
    },
  };
}
