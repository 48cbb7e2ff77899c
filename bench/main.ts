/**
 * Benchmarks: `deno task bench <name> [args]`, where name is a file `bench/<name>.ts` whose
 * default export runs it (io, clip, unet, train, …).
 *
 * @module
 */
const [name, ...rest] = Deno.args;
const dir = new URL(".", import.meta.url);
const entries: string[] = [];
for await (const e of Deno.readDir(dir)) {
  if (e.isFile && e.name.endsWith(".ts") && e.name !== "main.ts" && !e.name.startsWith("_")) {
    entries.push(e.name.slice(0, -3));
  }
}
entries.sort();
if (!name || !entries.includes(name)) {
  console.error(`usage: deno task bench <${entries.join("|")}> [args]`);
  Deno.exit(2);
}
const mod = await import(new URL(`./${name}.ts`, dir).href);
await mod.default(rest);
