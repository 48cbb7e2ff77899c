// `bench cpu`'s CLIP-L comparison with PyTorch, timed in turns: texforce (one process per thread
// count) and PyTorch (one process per thread configuration) stay loaded side by side and take
// turns, a few calls each per round, so both sides' medians come from the same stretches of the
// run. Timed one after the other, minutes apart, the ratio measured this VM's drift as much as
// the code: the same build gave 1.23 and 2.55 in two runs an hour apart, the VM's two cores
// running at times as two and at times barely faster than one (PyTorch's own two-core speed-up
// 1.2–1.6×, texforce's 1.1–2.0×, its 2048² matmul 114–202 GFLOP/s on two threads, with no steal
// time reported).
import { useBackend } from "../core/backend.ts";
import { clipLoraWorkload } from "./_cpu_workloads.ts";
import { peakRss } from "./_peak_rss.ts";
import { median, type Samples, timeCalls } from "./_call_timer.ts";

const TURN = "@@turn ";

/** What a texforce turn reports: wall and process CPU ms per call, and the peak RSS. */
interface TexforceTurn extends Samples {
  peakRss: number;
}

/** A texforce CLIP row from the turns (the shape of `bench cpu`'s rows). */
export interface TurnRow {
  what: string;
  batch: number;
  ms: number;
  cpuMs: number;
  peakRss: number;
}

/** The turns' result for one thread count. */
export interface ClipTurns {
  rows: TurnRow[];
  /** PyTorch's figures in its faster configuration (as `_torch_clip_anchor.py` prints them). */
  torch: Record<string, number>;
}

// A pause before each turn: OpenBLAS's and OpenMP's workers spin for a while after their last
// job (about 0.1 s), which would slow whichever process takes the next turn.
const SETTLE_MS = 500;
const settle = () => new Promise((resolve) => setTimeout(resolve, SETTLE_MS));

/** A process answering one stdin line with one `@@turn` stdout line. */
class TurnProcess {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;

  constructor(readonly name: string, command: string, args: string[], env: Record<string, string>) {
    this.#child = new Deno.Command(command, {
      args,
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = lines(this.#child.stdout)[Symbol.asyncIterator]();
  }

  /** The next `@@turn` line's payload. */
  async next(): Promise<string> {
    for (;;) {
      const r = await this.#lines.next();
      if (r.done) throw new Error(`bench cpu: ${this.name} ended before answering`);
      if (r.value.startsWith(TURN)) return r.value.slice(TURN.length);
    }
  }

  async ask(command: string): Promise<string> {
    await this.#writer.write(new TextEncoder().encode(command + "\n"));
    return await this.next();
  }

  async close(): Promise<void> {
    await this.#writer.write(new TextEncoder().encode("quit\n")).catch(() => {});
    await this.#writer.close().catch(() => {});
    await this.#child.status;
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncIterable<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    for (let i = rest.indexOf("\n"); i >= 0; i = rest.indexOf("\n")) {
      yield rest.slice(0, i);
      rest = rest.slice(i + 1);
    }
  }
  if (rest) yield rest;
}

/**
 * The texforce side of the turns (`bench cpu --clip-serve --threads N`): load the CLIP-L LoRA
 * workload on the wasm backend, warm it up, then answer `fwd N` / `fb N` on stdin with the
 * calls' times, until `quit`.
 *
 * @example
 * ```ts
 * import { serveClipTurns } from "./_clip_turns.ts";
 * // in a child process: await serveClipTurns(2);
 * console.log(typeof serveClipTurns);
 * ```
 */
export async function serveClipTurns(threads: number): Promise<void> {
  const info = await useBackend("wasm", { wasmThreads: threads });
  console.error(`wasm, ${info.device}: CLIP-L in turns with PyTorch`);
  const clip = await clipLoraWorkload();
  // V8 compiles the hot paths over the first calls.
  for (let i = 0; i < 2; i++) {
    await clip.forward();
    await clip.forwardBackward();
  }
  console.log(TURN + "ready");
  for await (const line of lines(Deno.stdin.readable)) {
    const [command, count] = line.trim().split(/\s+/);
    if (!command || command === "quit") break;
    const fn = command === "fwd" ? clip.forward : clip.forwardBackward;
    const turn: TexforceTurn = { ms: [], cpu: [], peakRss: 0 };
    await timeCalls(fn, turn, Number(count), 0, Number(count));
    turn.peakRss = peakRss();
    console.log(TURN + JSON.stringify(turn));
  }
  clip.dispose();
}

/**
 * Time texforce's and PyTorch's CLIP-L forward and forward + backward on `threads` cores in
 * `rounds` turns of `calls` calls each. PyTorch runs in the configurations `torchClipConfigs`
 * names, all in the turns; its figures are the faster one's (by forward + backward), with its
 * matmul and conv rates measured after the turns.
 *
 * @example
 * ```ts
 * import { clipInTurns } from "./_clip_turns.ts";
 * const r = await clipInTurns("/usr/bin/python3", 2, 3, 2);
 * console.log(r.rows[1].ms / r.torch.clip_text_fwd_bwd_ms);
 * ```
 */
export async function clipInTurns(
  py: string,
  threads: number,
  rounds: number,
  calls: number,
): Promise<ClipTurns> {
  const texforce = new TurnProcess(`texforce (${threads} threads)`, Deno.execPath(), [
    "run",
    "-A",
    new URL("./cpu.ts", import.meta.url).href,
    "--clip-serve",
    "--threads",
    String(threads),
  ], {});
  const script = new URL("./_torch_clip_anchor.py", import.meta.url).pathname;
  const n = String(threads);
  const torches = torchClipConfigs(threads).map((t) =>
    new TurnProcess(`PyTorch (torch threads ${t}, OpenBLAS ${n})`, py, [
      script,
      String(t),
      "--serve",
    ], {
      OPENBLAS_NUM_THREADS: n,
      OMP_NUM_THREADS: String(t),
      MKL_NUM_THREADS: n,
    })
  );
  const all = [texforce, ...torches];
  try {
    for (const p of all) await p.next(); // ready (loaded and warm)
    const ours = {
      fwd: { ms: [], cpu: [], peakRss: 0 },
      fb: { ms: [], cpu: [], peakRss: 0 },
    } as Record<
      string,
      TexforceTurn
    >;
    const theirs = torches.map(() => ({ fwd: [] as number[], fb: [] as number[] }));
    for (let round = 0; round < rounds; round++) {
      const line: string[] = [];
      for (const kind of ["fwd", "fb"] as const) {
        await settle();
        const t = JSON.parse(await texforce.ask(`${kind} ${calls}`)) as TexforceTurn;
        ours[kind].ms.push(...t.ms);
        ours[kind].cpu.push(...t.cpu);
        ours[kind].peakRss = Math.max(ours[kind].peakRss, t.peakRss);
        const mine = median(t.ms);
        const refs: number[] = [];
        for (const [i, p] of torches.entries()) {
          await settle();
          const ms = JSON.parse(await p.ask(`${kind} ${calls}`)) as number[];
          theirs[i][kind].push(...ms);
          refs.push(median(ms));
        }
        line.push(`${kind} ${mine.toFixed(0)} vs ${refs.map((r) => r.toFixed(0)).join("/")} ms`);
      }
      console.error(`  CLIP-L turn ${round + 1}/${rounds}, ${threads} threads: ${line.join(", ")}`);
    }
    // PyTorch's faster configuration, by its forward + backward median.
    const fbOf = theirs.map((t) => median(t.fb));
    const best = fbOf.indexOf(Math.min(...fbOf));
    const extras = JSON.parse(await torches[best].ask("extras")) as Record<string, number>;
    const torch = {
      ...extras,
      clip_text_fwd_ms: Number(median(theirs[best].fwd).toFixed(1)),
      clip_text_fwd_bwd_ms: Number(median(theirs[best].fb).toFixed(1)),
      blas_threads: threads,
    };
    const row = (what: string, t: TexforceTurn): TurnRow => ({
      what,
      batch: 2,
      ms: median(t.ms),
      cpuMs: median(t.cpu),
      peakRss: t.peakRss,
    });
    return {
      rows: [row("CLIP-L forward", ours.fwd), row("CLIP-L LoRA forward+backward", ours.fb)],
      torch,
    };
  } finally {
    await Promise.all(all.map((p) => p.close()));
  }
}

/**
 * PyTorch's thread configurations on `threads` cores: torch's intra-op threads and OpenBLAS's
 * both at `threads`, and (for more than one) torch at one thread with OpenBLAS at `threads`,
 * which on this project's 2-core machine is markedly faster (the two pools oversubscribe the
 * cores). Values are torch's intra-op thread counts; OpenBLAS always gets `threads`.
 *
 * @example
 * ```ts
 * import { torchClipConfigs } from "./_clip_turns.ts";
 * console.log(torchClipConfigs(2)); // [2, 1]
 * ```
 */
export function torchClipConfigs(threads: number): number[] {
  return threads > 1 ? [threads, 1] : [1];
}
