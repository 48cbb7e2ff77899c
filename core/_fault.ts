// Fault injection for the crash-safety tests: `TEXFORCE_FAULT=point@n=action[,…]` arms the n-th
// time the run reaches `point` (1-based): `pause` prints `texforce-fault: <point>@<n>` on stderr
// and waits 3 s there, so a test can send SIGKILL/SIGTERM/SIGHUP at exactly that point (the
// process needs no permission to signal itself); `enospc` fails the write as a full disk does.
// Unset (always, outside tests) it does nothing.
//
// Points: sampling, scoring, training, metrics-written, checkpoint-write, export-write.

/** What an armed fault does. */
type FaultAction = "pause" | "enospc";

interface Fault {
  point: string;
  at: number;
  action: FaultAction;
}

const hits = new Map<string, number>();
let parsed: Fault[] | undefined;

function faults(): Fault[] {
  if (parsed) return parsed;
  let spec = "";
  try {
    spec = Deno.env.get("TEXFORCE_FAULT") ?? "";
  } catch { /* no --allow-env: no faults */ }
  parsed = [];
  for (const part of spec.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^([a-z-]+)@(\d+)=(pause|enospc)$/.exec(part);
    if (!m) throw new Error(`TEXFORCE_FAULT: bad entry '${part}' (expected point@n=action)`);
    parsed.push({ point: m[1], at: Number(m[2]), action: m[3] as FaultAction });
  }
  return parsed;
}

/** The error a full disk gives a write, as Deno reports it. */
export function enospcError(path: string): Error {
  const e = new Error(`No space left on device (os error 28), writing '${path}'`);
  (e as Error & { code: string }).code = "ENOSPC";
  return e;
}

/**
 * Mark that the run reached `point`; an armed fault fires here. `path` names the file being
 * written, for an injected ENOSPC.
 */
export async function faultPoint(point: string, path = point): Promise<void> {
  const list = faults();
  if (list.length === 0) return;
  const n = (hits.get(point) ?? 0) + 1;
  hits.set(point, n);
  const f = list.find((x) => x.point === point && x.at === n);
  if (!f) return;
  if (f.action === "enospc") throw enospcError(path);
  console.error(`texforce-fault: ${point}@${n}`);
  await new Promise((r) => setTimeout(r, 3000));
}
