/**
 * The LoRA interoperability check: export a LoRA in every format and key layout, dump texforce's
 * own text-encoder hidden states, and let `check_lora_exports.py` load each export with each
 * loader call in every Python stack given; print the table format × loader × stack.
 *
 * ```sh
 * # one Python per stack; diffusers may come from a source checkout on PYTHONPATH (after @)
 * TEXFORCE_INTEROP_PYTHONS="/venvs/tf4/bin/python@/src/diffusers-0.33.1/src;/venvs/tf5/bin/python" \
 *   deno task interop
 * ```
 *
 * Without the variable it tries `python3`; a Python without torch, transformers or peft is
 * reported as skipped with the reason. The expectations (which call reads which export on which
 * stack, and the upstream bugs) are `loaderVerdict` of `adapters/lora/lora_loaders.ts`, the same
 * table `texforce inspect` and the docs print.
 *
 * @module
 */
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { writeSafetensors } from "../../core/io/safetensors.ts";
import { useBackend } from "../../core/backend.ts";
import { ClipLoraEncoder } from "../../adapters/encoder/clip_lora_encoder.ts";
import { writeMergedTextEncoder } from "../../adapters/lora/lora_formats.ts";
import {
  type InteropStackInfo,
  type LoaderCall,
  loaderVerdict,
  type LoraExportFormat,
} from "../../adapters/lora/lora_loaders.ts";
import { EXPORT_LAYOUTS, type ExportLayout } from "../../core/pipeline_schema.ts";

const HERE = dirname(fileURLToPath(import.meta.url));
const SCRIPT = join(HERE, "check_lora_exports.py");

/** One Python environment to check against. */
export interface PythonStack {
  /** The interpreter. */
  python: string;
  /** Extra `PYTHONPATH` entries (e.g. a diffusers source checkout's `src`). */
  pythonPath: string[];
}

/** One export in the manifest the Python script reads. */
export interface InteropExport {
  /** `format-layout`. */
  name: string;
  /** Export format. */
  format: LoraExportFormat;
  /** Key layout (kohya: always its own `lora_te_text_model_` keys). */
  layout: ExportLayout | "kohya";
  /** Path relative to the exports folder (folder for peft/merged, file otherwise). */
  path: string;
}

/** One measured cell, as the Python script reports it. */
export interface InteropResult {
  /** Export name. */
  name: string;
  /** Export format. */
  format: LoraExportFormat;
  /** Key layout. */
  layout: ExportLayout | "kohya";
  /** Loader call. */
  call: LoaderCall;
  /** Why the call was not tried (e.g. diffusers not importable). */
  skipped?: string;
  /** Exception raised by the call. */
  error?: string;
  /** Where it was raised (file:line). */
  error_at?: string;
  /** Key warnings printed while loading. */
  warnings?: string[];
  /** Expected messages (diffusers: the UNet got no LoRA from a text-encoder file). */
  notes?: string[];
  /** Max abs error of the hidden states against texforce's LoRA output. */
  max_error?: number;
  /** Max abs change against texforce's base output. */
  lora_delta?: number;
}

/** What the Python script prints for one stack. */
export interface StackReport {
  /** Library versions. */
  stack: InteropStackInfo & { python: string; torch: string };
  /** Pass bound of max_error. */
  tolerance: number;
  /** The stack's base encoder against texforce's. */
  base_error: number;
  /** Key warnings while loading the base encoder (none expected). */
  base_warnings: string[];
  /** Max abs change the LoRA makes in texforce's encoder. */
  reference_delta: number;
  /** Every cell. */
  results: InteropResult[];
}

/** One judged cell of the table. */
export interface InteropCell extends InteropResult {
  /** Stack label. */
  stack: string;
  /** Loaded without error and key warnings, within tolerance, LoRA delta non-zero. */
  loads: boolean;
  /** Whether the documented table says this call reads this export on this stack. */
  expected: boolean;
  /** The documented reason when it does not (an upstream bug, a wrong call, a layout). */
  reason?: string;
  /** loads === expected. */
  ok: boolean;
}

/**
 * The stacks named by `TEXFORCE_INTEROP_PYTHONS` (`python[@path:path]`, `;`-separated), or
 * `python3`.
 *
 * @example
 * ```ts
 * import { pythonStacks } from "./run_lora_interop.ts";
 * console.log(pythonStacks("/v/tf4/bin/python@/src/diffusers/src;python3"));
 * ```
 */
export function pythonStacks(spec = Deno.env.get("TEXFORCE_INTEROP_PYTHONS")): PythonStack[] {
  const entries = (spec ?? "python3").split(";").map((s) => s.trim()).filter(Boolean);
  return entries.map((e) => {
    const at = e.indexOf("@");
    return at < 0
      ? { python: e, pythonPath: [] }
      : { python: e.slice(0, at), pythonPath: e.slice(at + 1).split(":").filter(Boolean) };
  });
}

/**
 * A copy of the model folder `model` under `dir` whose text encoder has the `text_model.` keys
 * of every real SD 1.x/2.x checkpoint (the other components are linked): the base the Python
 * loaders get, whatever the layout of the fixture. Returns its path.
 *
 * @example
 * ```ts
 * import { sdLayoutModel } from "./run_lora_interop.ts";
 * const model = await sdLayoutModel("/tmp/x", "tests/fixtures/sd-tiny/tiny-sd");
 * ```
 */
export async function sdLayoutModel(dir: string, model: string): Promise<string> {
  const out = join(dir, "model");
  await Deno.mkdir(out, { recursive: true });
  for await (const e of Deno.readDir(model)) {
    if (e.name === "text_encoder") continue;
    await Deno.symlink(resolve(model, e.name), join(out, e.name));
  }
  // No LoRA deltas: the same weights, re-keyed.
  await writeMergedTextEncoder(join(out, "text_encoder"), join(model, "text_encoder"), new Map(), {
    textModelPrefix: true,
  });
  return out;
}

/**
 * Export `lora` (on `model`) in every format and layout under `dir`, with `manifest.json` and
 * `reference.safetensors` (ids, base and LoRA hidden states of texforce's encoder on `prompts`).
 *
 * @example
 * ```ts
 * import { writeInteropExports } from "./run_lora_interop.ts";
 * await writeInteropExports("/tmp/x", "tests/fixtures/sd-tiny/tiny-sd", "lora_peft", ["a cat"]);
 * ```
 */
export async function writeInteropExports(
  dir: string,
  model: string,
  lora: string,
  prompts: string[],
): Promise<InteropExport[]> {
  await useBackend("wasm");
  const enc = await ClipLoraEncoder.load(model, { adapters: [{ path: lora, trainable: true }] });
  try {
    const exports: InteropExport[] = [];
    for (const format of ["merged", "peft", "diffusers"] as const) {
      for (const layout of EXPORT_LAYOUTS) {
        const name = `${format}-${layout}`;
        const files = await enc.exportWeights(join(dir, name), format, { layout });
        const path = format === "diffusers" ? files[0] : join(dir, name);
        exports.push({ name, format, layout, path: relative(dir, path) });
      }
    }
    const [kohya] = await enc.exportWeights(join(dir, "kohya"), "kohya");
    exports.push({ name: "kohya", format: "kohya", layout: "kohya", path: relative(dir, kohya) });
    await Deno.writeTextFile(
      join(dir, "manifest.json"),
      JSON.stringify({ model, lora, exports }, null, 2) + "\n",
    );

    const ids = enc.tokenize(prompts);
    const withLora = enc.encodeIds(ids);
    enc.lora.get("default").enabled = false;
    const base = enc.encodeIds(ids);
    const [idData, loraData, baseData] = await Promise.all([
      ids.data(),
      withLora.data(),
      base.data(),
    ]);
    await writeSafetensors(join(dir, "reference.safetensors"), {
      input_ids: { dtype: "I32", shape: ids.shape, data: idData },
      "lora.last_hidden_state": { dtype: "F32", shape: withLora.shape, data: loraData },
      "base.last_hidden_state": { dtype: "F32", shape: base.shape, data: baseData },
    });
    ids.dispose();
    withLora.dispose();
    base.dispose();
    return exports;
  } finally {
    enc.dispose();
  }
}

/**
 * Run the Python check in one stack: its report, or the printed reason it was skipped.
 *
 * @example
 * ```ts
 * import { checkStack, pythonStacks } from "./run_lora_interop.ts";
 * const r = await checkStack(pythonStacks()[0], "/tmp/x", "tests/fixtures/sd-tiny/tiny-sd");
 * ```
 */
export async function checkStack(
  stack: PythonStack,
  dir: string,
  model: string,
): Promise<StackReport | { skipped: string }> {
  const env: Record<string, string> = {
    HF_HUB_OFFLINE: "1",
    TRANSFORMERS_OFFLINE: "1",
    HF_HUB_DISABLE_TELEMETRY: "1",
    TOKENIZERS_PARALLELISM: "false",
    OMP_NUM_THREADS: "1",
  };
  const pp = [...stack.pythonPath, Deno.env.get("PYTHONPATH") ?? ""].filter(Boolean);
  if (pp.length) env.PYTHONPATH = pp.join(":");
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(stack.python, {
      args: [
        SCRIPT,
        "--exports",
        dir,
        "--model",
        model,
        "--reference",
        join(dir, "reference.safetensors"),
      ],
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (e) {
    return { skipped: `${stack.python}: cannot run (${(e as Error).message})` };
  }
  const dec = new TextDecoder();
  const stderr = dec.decode(out.stderr);
  if (out.code === 3) {
    return { skipped: stderr.trim().split("\n").at(-1)!.replace(/^SKIP: /, "") };
  }
  if (out.code !== 0) {
    throw new Error(
      `${stack.python} ${SCRIPT}: exit code ${out.code}\n${
        stderr.split("\n").slice(-20).join("\n")
      }`,
    );
  }
  return JSON.parse(dec.decode(out.stdout)) as StackReport;
}

/** Stack label: `transformers 4.57.6 / diffusers 0.33.1`. */
export function stackLabel(s: InteropStackInfo): string {
  return `transformers ${s.transformers} / diffusers ${s.diffusers ?? "-"}`;
}

/**
 * Judge a stack's results against the documented loader table.
 *
 * @example
 * ```ts
 * import { judge } from "./run_lora_interop.ts";
 * declare const report: import("./run_lora_interop.ts").StackReport;
 * console.log(judge(report).filter((c) => !c.ok));
 * ```
 */
export function judge(report: StackReport): InteropCell[] {
  const label = stackLabel(report.stack);
  if (!(report.base_error <= report.tolerance) || report.base_warnings.length) {
    // Without the same base encoder, no cell means anything.
    throw new Error(
      `${label}: the stack's own base text encoder differs from texforce's by ` +
        `${report.base_error.toExponential(2)} (tolerance ${report.tolerance.toExponential(1)})` +
        (report.base_warnings.length ? `; it warned: ${report.base_warnings[0]}` : ""),
    );
  }
  const cells: InteropCell[] = [];
  for (const r of report.results) {
    if (r.skipped) continue;
    const loads = r.error === undefined && (r.warnings?.length ?? 0) === 0 &&
      (r.max_error ?? Infinity) <= report.tolerance &&
      (r.lora_delta ?? 0) > 0.01 * report.reference_delta;
    const verdict = loaderVerdict(
      r.format,
      r.layout === "kohya" ? null : r.layout,
      r.call,
      report.stack,
    );
    cells.push({
      ...r,
      stack: label,
      loads,
      expected: verdict.reads,
      reason: verdict.reason,
      ok: loads === verdict.reads,
    });
  }
  return cells;
}

function num(x: number | undefined): string {
  return x === undefined ? "-" : x.toExponential(1);
}

/**
 * The table as Markdown: format, layout, loader call, stack, loaded cleanly, max error, LoRA
 * delta, verdict.
 *
 * @example
 * ```ts
 * import { formatTable } from "./run_lora_interop.ts";
 * console.log(formatTable([]));
 * ```
 */
export function formatTable(cells: InteropCell[]): string {
  const rows = [[
    "format",
    "layout",
    "loader",
    "stack",
    "loaded cleanly",
    "max err",
    "LoRA delta",
    "verdict",
  ]];
  for (const c of cells) {
    const clean = c.error
      ? `raised ${c.error.slice(0, 60)}${c.error_at ? ` (${c.error_at})` : ""}`
      : c.warnings?.length
      ? `warned: ${c.warnings[0].replaceAll("\n", " ").slice(0, 70)}`
      : "yes";
    const verdict = c.ok
      ? (c.expected ? "pass" : `does not load, as documented: ${c.reason}`)
      : (c.expected ? "FAIL: documented as loading" : `UNEXPECTED LOAD (doc says: ${c.reason})`);
    rows.push([
      c.format,
      c.layout,
      c.call,
      c.stack,
      clean.replaceAll("|", "/"),
      num(c.max_error),
      num(c.lora_delta),
      verdict,
    ]);
  }
  return rows.map((r, i) =>
    `| ${r.join(" | ")} |` + (i === 0 ? `\n|${r.map(() => "---").join("|")}|` : "")
  ).join("\n");
}

/**
 * Everything: exports, every stack, the judged cells and the skipped stacks.
 *
 * @example
 * ```ts
 * import { runInterop } from "./run_lora_interop.ts";
 * const { cells, skipped } = await runInterop();
 * ```
 */
export async function runInterop(
  options: { model?: string; lora?: string; stacks?: PythonStack[]; keep?: string } = {},
): Promise<{ cells: InteropCell[]; reports: StackReport[]; skipped: string[] }> {
  const fixtures = join(HERE, "..", "fixtures", "sd-tiny");
  const model = options.model ?? join(fixtures, "tiny-sd");
  const lora = options.lora ?? join(fixtures, "lora_peft");
  const prompts: string[] = JSON.parse(await Deno.readTextFile(join(fixtures, "golden.json")))
    .tokenizer_prompts;
  const dir = options.keep ?? await Deno.makeTempDir({ prefix: "texforce_interop_" });
  try {
    await Deno.mkdir(dir, { recursive: true });
    await writeInteropExports(dir, model, lora, prompts);
    const sdModel = await sdLayoutModel(dir, model);
    const cells: InteropCell[] = [];
    const reports: StackReport[] = [];
    const skipped: string[] = [];
    for (const stack of options.stacks ?? pythonStacks()) {
      const r = await checkStack(stack, dir, sdModel);
      if ("skipped" in r) {
        skipped.push(r.skipped);
        continue;
      }
      reports.push(r);
      cells.push(...judge(r));
      for (const x of r.results) {
        if (x.skipped) skipped.push(`${stackLabel(r.stack)}: ${x.call} on ${x.name}: ${x.skipped}`);
      }
    }
    return { cells, reports, skipped };
  } finally {
    if (!options.keep) await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const keep = Deno.args[0];
  const { cells, reports, skipped } = await runInterop({ keep });
  for (const r of reports) {
    console.log(
      `${stackLabel(r.stack)} (torch ${r.stack.torch}, peft ${r.stack.peft}): base encoder ` +
        `vs texforce ${r.base_error.toExponential(1)}, LoRA moves the output by ` +
        `${r.reference_delta.toFixed(3)}, tolerance ${r.tolerance.toExponential(1)}`,
    );
  }
  for (const s of skipped) console.log(`skipped: ${s}`);
  if (cells.length) console.log("\n" + formatTable(cells));
  const bad = cells.filter((c) => !c.ok);
  if (bad.length) {
    console.error(`\n${bad.length} cell(s) disagree with the documented loader table`);
    Deno.exit(1);
  }
}
