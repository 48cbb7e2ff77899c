/**
 * `deno task mutants`: plant each mutant of `mutants.ts` in a temporary copy of the project, run
 * the tests that cover it (type checking off, so only behaviour can kill it), and print a table
 * killed / survived with the test that killed it. Exits 1 when a mutant survives or no longer
 * applies. Slow (minutes); CI does not run it.
 *
 * ```sh
 * deno task mutants                      # every mutant
 * deno task mutants --only cfg-wrong     # some (comma-separated ids)
 * deno task mutants --list               # ids and what each plants
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Mutant, MUTANTS } from "./mutants.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** Never copied: history, run outputs, bundles. */
const SKIP = new Set([".git", "runs", "out", ".gpu", "node_modules"]);

/** The outcome of one mutant. */
interface Outcome {
  mutant: Mutant;
  status: "killed" | "survived" | "stale" | "broken";
  by: string;
  seconds: number;
}

async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (SKIP.has(e.name)) continue;
    const a = join(from, e.name);
    const b = join(to, e.name);
    if (e.isDirectory) await copyTree(a, b);
    else if (e.isFile) await Deno.copyFile(a, b);
  }
}

/** Run one test file in the copy; null when it passed, else the first failing test's name. */
async function runTest(
  dir: string,
  test: string,
): Promise<{ failed: string | null; ran: boolean }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--unstable-webgpu", "--no-check", "--fail-fast", test],
    cwd: dir,
    env: { NO_COLOR: "1", TEXFORCE_BACKENDS: Deno.env.get("TEXFORCE_BACKENDS") ?? "wasm" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const ran = /running \d+ tests? from/.test(text);
  if (out.success) return { failed: null, ran };
  const failure = text.split("\n").find((l) => / => \.\/tests\/\S+:\d+:\d+$/.test(l));
  const name = failure ? failure.replace(/ => .*$/, "").trim() : "";
  return { failed: name || `${test} (exit ${out.code})`, ran };
}

async function apply(dir: string, m: Mutant): Promise<string | null> {
  const path = join(dir, m.file);
  let text = await Deno.readTextFile(path);
  for (const e of m.edits) {
    const n = text.split(e.find).length - 1;
    if (n !== 1) return `${m.file}: the text to replace occurs ${n} times (expected once)`;
    text = text.replace(e.find, () => e.replace);
  }
  await Deno.writeTextFile(path, text);
  return null;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      only: { type: "string" },
      list: { type: "boolean", default: false },
      "no-baseline": { type: "boolean", default: false },
    },
  });
  if (values.list) {
    for (const m of MUTANTS) console.log(`${m.id.padEnd(28)} ${m.what}`);
    return 0;
  }
  const wanted = values.only?.split(",").map((s) => s.trim());
  const unknown = wanted?.filter((id) => !MUTANTS.some((m) => m.id === id)) ?? [];
  if (unknown.length) {
    console.error(`unknown mutant(s): ${unknown.join(", ")} (see --list)`);
    return 2;
  }
  const mutants = MUTANTS.filter((m) => !wanted || wanted.includes(m.id));
  const dir = await Deno.makeTempDir({ prefix: "texforce_mutants_" });
  try {
    await copyTree(ROOT, dir);
    if (!values["no-baseline"]) {
      const files = [...new Set(mutants.flatMap((m) => m.tests))];
      console.log(`baseline: ${files.length} test files on the unmutated copy…`);
      for (const f of files) {
        const r = await runTest(dir, f);
        if (r.failed) {
          console.error(`baseline failed: ${r.failed}; fix the suite before judging mutants`);
          return 1;
        }
      }
    }
    const outcomes: Outcome[] = [];
    for (const m of mutants) {
      const started = performance.now();
      const original = await Deno.readTextFile(join(dir, m.file));
      const stale = await apply(dir, m);
      let outcome: Outcome;
      if (stale) {
        outcome = { mutant: m, status: "stale", by: stale, seconds: 0 };
      } else {
        outcome = { mutant: m, status: "survived", by: "", seconds: 0 };
        for (const test of m.tests) {
          const r = await runTest(dir, test);
          if (r.failed) {
            outcome = { mutant: m, status: r.ran ? "killed" : "broken", by: r.failed, seconds: 0 };
            break;
          }
        }
      }
      await Deno.writeTextFile(join(dir, m.file), original);
      outcome.seconds = (performance.now() - started) / 1000;
      outcomes.push(outcome);
      console.log(
        `${outcome.status.padEnd(8)} ${m.id} (${outcome.seconds.toFixed(0)} s)` +
          (outcome.by ? `: ${outcome.by}` : ""),
      );
    }
    console.log("\n| mutant | what | result | killed by |\n| --- | --- | --- | --- |");
    for (const o of outcomes) {
      console.log(`| ${o.mutant.id} | ${o.mutant.what} | ${o.status} | ${o.by || "—"} |`);
    }
    const bad = outcomes.filter((o) => o.status !== "killed");
    console.log(`\n${outcomes.length - bad.length} killed, ${bad.length} not killed`);
    return bad.length ? 1 : 0;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) Deno.exit(await main());
