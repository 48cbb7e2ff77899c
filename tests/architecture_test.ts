// The layers import in one direction: core ← adapters ← samplers, rewards ← the root
// composition (mod.ts, builtin_plugins.ts, plugin.ts) ← cli (cli/, cli.ts); no two folders import
// each other, and no module imports itself through others. Read from the module graph `deno info --json` reports for every entry file
// of deno.json and for every source file no entry reaches (plugins loaded by name).
import assert from "node:assert/strict";
import { dirname, join, relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const LAYER_FOLDERS = ["core", "adapters", "samplers", "rewards", "cli"];
const ROOT_COMPOSITION = ["mod.ts", "builtin_plugins.ts", "plugin.ts"];

/** Rank of each layer: a module may import only its own layer or lower ones. */
const RANK: Record<string, number> = {
  core: 0,
  adapters: 1,
  samplers: 2,
  rewards: 2,
  root: 3,
  cli: 4,
};

/**
 * Folder pairs allowed to import each other, each with its reason. Only type-only imports (erased
 * at run time) may be allowed here.
 */
const ALLOWED_TYPE_EDGES: Record<string, string> = {
  "core/io -> core": "core/io's signatures name tensors with core's public tensor types " +
    "(tensor_types.ts: Tensor, GraphModel, IOHandler), which deno doc needs exported",
  "adapters/webgpu -> adapters/nn": "group_norm_silu.ts takes nn's GroupNormWeights type; " +
    "both folders are edited on the gpu branch, so the type stays where it is until it merges",
};

interface Edge {
  from: string;
  to: string;
  /** True when only `import type` / type positions use it (no run-time import). */
  typeOnly: boolean;
  dynamic: boolean;
}

interface InfoJson {
  modules: {
    local?: string;
    dependencies?: {
      specifier: string;
      code?: { specifier: string };
      type?: { specifier: string };
      isDynamic?: boolean;
    }[];
  }[];
}

async function denoInfo(entry: string): Promise<InfoJson> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--config", join(ROOT, "deno.json"), entry],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

async function sourceFiles(): Promise<string[]> {
  const files: string[] = [...ROOT_COMPOSITION, "cli.ts"];
  const walk = async (dir: string): Promise<void> => {
    for await (const e of Deno.readDir(join(ROOT, dir))) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(path);
      else if (e.name.endsWith(".ts")) files.push(path);
    }
  };
  for (const d of LAYER_FOLDERS) await walk(d);
  const present: string[] = [];
  for (const f of files) {
    try {
      await Deno.stat(join(ROOT, f));
      present.push(f);
    } catch { /* plugin.ts before it exists */ }
  }
  return present;
}

async function moduleGraph(): Promise<{ files: Set<string>; edges: Edge[] }> {
  const config = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json")));
  const entries: string[] = [
    ...Object.values(config.exports as Record<string, string>),
    "builtin_plugins.ts",
    "cli.ts",
  ].map((e) => e.replace(/^\.\//, ""));
  const files = new Set<string>();
  const edges = new Map<string, Edge>();
  const rootUrl = pathToFileURL(ROOT).href + "/";
  const add = (info: InfoJson) => {
    for (const m of info.modules) {
      if (!m.local?.startsWith(ROOT + "/")) continue;
      const from = relative(ROOT, m.local);
      files.add(from);
      for (const d of m.dependencies ?? []) {
        const code = d.code?.specifier;
        const target = code ?? d.type?.specifier;
        if (!target?.startsWith(rootUrl)) continue;
        const to = target.slice(rootUrl.length);
        const key = `${from} -> ${to}`;
        const prev = edges.get(key);
        edges.set(key, {
          from,
          to,
          typeOnly: (prev?.typeOnly ?? true) && code === undefined,
          dynamic: Boolean(d.isDynamic),
        });
      }
    }
  };
  for (const e of entries) add(await denoInfo(e));
  // Files no entry reaches statically (loaded by a computed specifier): their own graphs.
  for (const f of await sourceFiles()) {
    if (!files.has(f)) add(await denoInfo(f));
  }
  return { files, edges: [...edges.values()] };
}

function layerOf(file: string): string | undefined {
  if (ROOT_COMPOSITION.includes(file)) return "root";
  if (file === "cli.ts") return "cli";
  const top = file.split("/")[0];
  return top in RANK ? top : undefined;
}

/** The folder a file belongs to for the cycle check (cli.ts belongs to cli/). */
function folderOf(file: string): string {
  if (file === "cli.ts") return "cli";
  return dirname(file);
}

/** Strongly connected components with more than one folder (Tarjan). */
function folderCycles(edges: Edge[]): string[][] {
  const next = new Map<string, Set<string>>();
  for (const e of edges) {
    const a = folderOf(e.from), b = folderOf(e.to);
    if (a === b) continue;
    if (!next.has(a)) next.set(a, new Set());
    if (!next.has(b)) next.set(b, new Set());
    next.get(a)!.add(b);
  }
  const index = new Map<string, number>(), low = new Map<string, number>();
  const stack: string[] = [], on = new Set<string>(), out: string[][] = [];
  let counter = 0;
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    on.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1) out.push(comp.sort());
    }
  };
  for (const v of next.keys()) if (!index.has(v)) visit(v);
  return out;
}

Deno.test("the module graph follows the layers", async (t) => {
  const { files, edges } = await moduleGraph();

  await t.step("the graph covers every source file of every layer", async () => {
    const missing = (await sourceFiles()).filter((f) => !files.has(f));
    assert.deepEqual(missing, []);
    assert(edges.length > 100, `only ${edges.length} imports found`);
  });

  await t.step("no import points up a layer or across to a sibling layer", () => {
    const bad = edges.filter((e) => {
      const a = layerOf(e.from), b = layerOf(e.to);
      if (a === undefined || b === undefined) return false;
      return RANK[b] > RANK[a] || (RANK[b] === RANK[a] && a !== b);
    }).map((e) =>
      `${e.from} (${layerOf(e.from)}) imports ${e.to} (${layerOf(e.to)})${
        e.dynamic ? " dynamically" : ""
      }`
    );
    assert.deepEqual(bad, []);
  });

  await t.step("core imports only core, node: and npm packages", () => {
    const bad = edges.filter((e) => e.from.startsWith("core/") && !e.to.startsWith("core/"))
      .map((e) => `${e.from} imports ${e.to}`);
    assert.deepEqual(bad, []);
  });

  await t.step("no two folders import each other", () => {
    const kept = edges.filter((e) =>
      !(e.typeOnly && ALLOWED_TYPE_EDGES[`${folderOf(e.from)} -> ${folderOf(e.to)}`])
    );
    const described = folderCycles(kept).map((comp) => {
      const inside = kept.filter((e) =>
        comp.includes(folderOf(e.from)) && comp.includes(folderOf(e.to)) &&
        folderOf(e.from) !== folderOf(e.to)
      ).map((e) => `  ${e.from} -> ${e.to}${e.typeOnly ? " (type)" : ""}`);
      return `cycle between ${comp.join(", ")}:\n${inside.join("\n")}`;
    });
    assert.deepEqual(described, []);
  });

  await t.step("no module imports itself through others", () => {
    const next = new Map<string, string[]>();
    for (const e of edges) {
      if (e.typeOnly && ALLOWED_TYPE_EDGES[`${folderOf(e.from)} -> ${folderOf(e.to)}`]) continue;
      next.set(e.from, [...(next.get(e.from) ?? []), e.to]);
    }
    const cycles: string[] = [];
    const state = new Map<string, 1 | 2>();
    const path: string[] = [];
    const visit = (f: string) => {
      state.set(f, 1);
      path.push(f);
      for (const g of next.get(f) ?? []) {
        if (state.get(g) === 1) cycles.push([...path.slice(path.indexOf(g)), g].join(" -> "));
        else if (!state.has(g)) visit(g);
      }
      path.pop();
      state.set(f, 2);
    };
    for (const f of next.keys()) if (!state.has(f)) visit(f);
    assert.deepEqual(cycles, []);
  });

  await t.step("the plugin entry loads only core's contract and zod", async () => {
    const info = await denoInfo("plugin.ts");
    const byUrl = new Map(
      info.modules.map((m) => [m.local ? pathToFileURL(m.local).href : "", m]),
    );
    const rootUrl = pathToFileURL(ROOT).href + "/";
    const seen = new Set<string>();
    const npm = new Set<string>();
    const queue = [pathToFileURL(join(ROOT, "plugin.ts")).href];
    while (queue.length) {
      const url = queue.pop()!;
      if (seen.has(url)) continue;
      seen.add(url);
      for (const d of byUrl.get(url)?.dependencies ?? []) {
        const code = d.code?.specifier; // run-time imports only; types are erased
        if (!code) continue;
        if (code.startsWith("npm:")) {
          npm.add(code.replace(/^npm:\/?(@?[^@/]+(?:\/[^@/]+)?).*$/, "$1"));
        } else if (code.startsWith(rootUrl)) queue.push(code);
      }
    }
    const files = [...seen].map((u) => u.slice(rootUrl.length)).sort();
    assert.deepEqual(files.filter((f) => f !== "plugin.ts" && !f.startsWith("core/")), []);
    assert.deepEqual([...npm].filter((n) => n !== "zod"), [], "no tfjs or model package");
  });

  await t.step("every allowed exception is still needed and type-only", () => {
    for (const key of Object.keys(ALLOWED_TYPE_EDGES)) {
      const used = edges.filter((e) => `${folderOf(e.from)} -> ${folderOf(e.to)}` === key);
      assert(used.length > 0, `${key} is allowed but no longer imported: drop the exception`);
      assert(used.every((e) => e.typeOnly), `${key}: only type imports may be allowed`);
    }
  });
});
