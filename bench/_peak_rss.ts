// Peak resident memory of this process (Linux VmHWM), in bytes; falls back to current RSS.

/** Peak RSS in bytes. */
export function peakRss(): number {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const m = status.match(/VmHWM:\s+(\d+) kB/);
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return Deno.memoryUsage().rss;
}

/** Bytes as GiB/MiB text. */
export function formatBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}
