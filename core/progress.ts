/**
 * Progress output: a one-line bar redrawn in place on a terminal, plain log lines otherwise
 * (files, CI).
 *
 * @module
 */

/** Where progress goes. */
export interface ProgressSink {
  /** Update the bar (terminal) or occasionally print a line (not a terminal). */
  update(done: number, total: number, label: string): void;
  /** Print a log line (clears the bar first on a terminal). */
  log(line: string): void;
  /** Finish the bar. */
  close(): void;
}

/**
 * A progress sink over stderr; `log` receives plain lines when given (embedding apps).
 *
 * @example
 * ```ts
 * import { createProgress } from "@texforce/core";
 * const p = createProgress();
 * p.update(1, 10, "sampling");
 * p.close();
 * ```
 */
export function createProgress(
  log?: (line: string) => void,
  terminal: boolean = !log && Deno.stderr.isTerminal(),
): ProgressSink {
  const enc = new TextEncoder();
  const write = (s: string) => Deno.stderr.writeSync(enc.encode(s));
  let drawn = false;
  let lastPlain = 0;
  const t0 = performance.now();
  const plain = log ?? ((line: string) => console.error(line));
  return {
    update(done, total, label) {
      if (terminal) {
        const width = 30;
        const fill = Math.round((done / Math.max(1, total)) * width);
        const secs = ((performance.now() - t0) / 1000).toFixed(0);
        write(
          `\r\x1b[K[${"#".repeat(fill)}${
            "-".repeat(width - fill)
          }] ${done}/${total} ${label} ${secs}s`,
        );
        drawn = true;
      } else if (performance.now() - lastPlain > 10_000 || done === total) {
        lastPlain = performance.now();
        plain(`progress ${done}/${total} ${label}`);
      }
    },
    log(line) {
      if (terminal) {
        if (drawn) write("\r\x1b[K");
        write(line + "\n");
        drawn = false;
      } else {
        plain(line);
      }
    },
    close() {
      if (terminal && drawn) write("\n");
      drawn = false;
    },
  };
}
