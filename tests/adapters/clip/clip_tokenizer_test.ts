import assert from "node:assert/strict";
import { join } from "node:path";
import { ClipTokenizer, ClipTokenizerError } from "../../../adapters/clip/clip_tokenizer.ts";
import { fixture, fixtureJson, golden, TINY_SD } from "../../_helpers.ts";

const TOKENIZER_DIR = join(TINY_SD, "tokenizer");

async function goldenPrompts(): Promise<string[]> {
  const json = JSON.parse(await Deno.readTextFile(fixture("sd-tiny", "golden.json")));
  return json.tokenizer_prompts;
}

/** What the fixture's own tokenizer files say: vocab, special token ids, length. */
async function tokenizerFacts(): Promise<{
  vocab: Record<string, number>;
  bos: number;
  eos: number;
  pad: number;
  maxLength: number;
}> {
  const vocab = await fixtureJson<Record<string, number>>(
    "sd-tiny",
    "tiny-sd",
    "tokenizer",
    "vocab.json",
  );
  const cfg = await fixtureJson("sd-tiny", "tiny-sd", "tokenizer", "tokenizer_config.json");
  const text = (v: unknown): string =>
    typeof v === "string" ? v : (v as { content: string }).content;
  return {
    vocab,
    bos: vocab[text(cfg.bos_token)],
    eos: vocab[text(cfg.eos_token)],
    pad: vocab[text(cfg.pad_token)],
    maxLength: cfg.model_max_length as number,
  };
}

Deno.test("ClipTokenizer", async (t) => {
  const tok = await ClipTokenizer.load(TOKENIZER_DIR);
  const facts = await tokenizerFacts();
  const { bos, eos, pad, maxLength, vocab } = facts;

  await t.step("reads the special tokens and length of the fixture's tokenizer", () => {
    assert.equal(tok.bosTokenId, bos);
    assert.equal(tok.eosTokenId, eos);
    assert.equal(tok.padTokenId, pad);
    assert.equal(tok.maxLength, maxLength);
    assert.equal(tok.vocabSize, Object.keys(vocab).length);
  });

  await t.step("token ids equal transformers' CLIPTokenizer exactly", async () => {
    const prompts = await goldenPrompts();
    const expected = (await golden("sd-tiny")).get("tokenizer.input_ids")!;
    assert.deepEqual(expected.shape, [prompts.length, maxLength]);
    const { inputIds, attentionMask } = tok.encodeBatch(prompts);
    for (let i = 0; i < prompts.length; i++) {
      const want = Array.from(expected.data.subarray(i * maxLength, (i + 1) * maxLength));
      assert.deepEqual(inputIds[i], want, `prompt ${i}: ${JSON.stringify(prompts[i])}`);
      // The mask covers bos … the first eos.
      const firstEos = want.indexOf(eos);
      assert.deepEqual(attentionMask[i], want.map((_, j) => (j <= firstEos ? 1 : 0)));
    }
  });

  await t.step("truncates long prompts to bos + tokens + eos", () => {
    const { inputIds } = tok.encodeBatch(["a ".repeat(200)]);
    assert.equal(inputIds[0].length, maxLength);
    assert.equal(inputIds[0][0], bos);
    assert.equal(inputIds[0][maxLength - 1], eos);
    assert.equal(inputIds[0][maxLength - 2], vocab["a</w>"]);
    const untruncated = tok.encodeBatch(["a ".repeat(200)], { truncation: false, padding: false });
    assert.equal(untruncated.inputIds[0].length, 202);
  });

  await t.step("normalises case and whitespace, keeps special tokens in text", () => {
    assert.deepEqual(tok.encode("A  Photo\tof\n a HAND"), tok.encode("a photo of a hand"));
    assert.deepEqual(tok.encode("a<|endoftext|>b"), [...tok.encode("a"), eos, ...tok.encode("b")]);
    assert.deepEqual(tok.encode(""), []);
    assert.deepEqual(tok.encode("   "), []);
    // NFC: a decomposed é tokenises as the composed one.
    assert.deepEqual(tok.encode("cafe\u0301"), tok.encode("caf\u00e9"));
  });

  await t.step("BPE results are cached and stable", () => {
    const a = tok.encode("an astronaut riding a horse on the moon");
    const b = tok.encode("an astronaut riding a horse on the moon");
    assert.deepEqual(a, b);
  });

  await t.step("decodes ids back to text", () => {
    const { inputIds } = tok.encodeBatch(["an astronaut riding a horse"]);
    assert.equal(tok.decode(inputIds[0]), "an astronaut riding a horse");
    assert.equal(tok.decode(tok.encode("café")), "café");
  });

  await t.step("HTML entities are decoded only when asked (transformers does not)", () => {
    const plain = ClipTokenizer.fromFiles({
      vocab: JSON.parse(Deno.readTextFileSync(join(TOKENIZER_DIR, "vocab.json"))),
      merges: Deno.readTextFileSync(join(TOKENIZER_DIR, "merges.txt")),
    });
    assert.notDeepEqual(plain.encode("a &amp; b"), plain.encode("a & b"));
    plain.htmlUnescape = true;
    assert.deepEqual(plain.encode("a &amp; b"), plain.encode("a & b"));
    assert.deepEqual(plain.encode("it&#39;s"), plain.encode("it's"));
  });

  // SD 2.x's tokenizer/ has pad_token "!" (the same vocabulary otherwise).
  const sd2Files = {
    vocab,
    merges: Deno.readTextFileSync(join(TOKENIZER_DIR, "merges.txt")),
    tokenizerConfig: {
      ...(await fixtureJson("sd-tiny", "tiny-sd", "tokenizer", "tokenizer_config.json")),
      pad_token: "!",
    },
  };

  await t.step("pads with the configured pad token (SD 2.x uses '!')", () => {
    const sd2 = ClipTokenizer.fromFiles(sd2Files);
    assert.equal(sd2.padTokenId, vocab["!"]);
    const { inputIds, attentionMask } = sd2.encodeBatch(["a"]);
    assert.deepEqual(inputIds[0].slice(0, 4), [bos, vocab["a</w>"], eos, vocab["!"]]);
    assert.equal(inputIds[0].at(-1), vocab["!"]);
    assert.deepEqual(attentionMask[0].slice(0, 4), [1, 1, 1, 0]);
    // AddedToken objects (newer tokenizer_config.json) are read too.
    const obj = ClipTokenizer.fromFiles({
      vocab,
      merges: "#version: 0.2\n",
      tokenizerConfig: { pad_token: { content: "!", lstrip: false } },
    });
    assert.equal(obj.padTokenId, vocab["!"]);
  });

  await t.step("SD 2.x: every '!' in a prompt is the pad token, as transformers splits it", () => {
    // transformers' CLIPTokenizer splits each special token (bos, eos, unk, pad, whatever its
    // text) out of the raw text before BPE; plain BPE would give "!</w>" or merges like "!!".
    const sd2 = ClipTokenizer.fromFiles(sd2Files);
    const p = vocab["!"];
    const hello = tok.encode("hello");
    assert.ok(hello.length > 0 && !hello.includes(p));
    assert.deepEqual(sd2.encode("!"), [p]);
    assert.deepEqual(sd2.encode("!!"), [p, p]);
    assert.deepEqual(sd2.encode("hello!"), [...hello, p]);
    assert.deepEqual(sd2.encode("!hello"), [p, ...hello]);
    assert.deepEqual(sd2.encode("a photo of a HAND!!"), [...tok.encode("a photo of a hand"), p, p]);
    // Under SD 1.x, "!" is ordinary text: "!</w>" at the end of a word, never the pad id.
    assert.deepEqual(tok.encode("!"), [vocab["!</w>"]]);
    assert.deepEqual(tok.encode("hello!"), [...hello, vocab["!</w>"]]);
    assert.ok(!tok.encode("!!").includes(tok.padTokenId));
    // The mask still ends at eos: a "!" inside the prompt is a real (attended) token.
    const { attentionMask, inputIds } = sd2.encodeBatch(["hello!"]);
    assert.equal(inputIds[0][hello.length + 1], p);
    assert.equal(attentionMask[0][hello.length + 1], 1);
    assert.equal(inputIds[0][hello.length + 2], eos);
  });

  await t.step("added tokens (added_tokens.json) are split out of the text too", async () => {
    const dir = await Deno.makeTempDir();
    try {
      for (const f of ["vocab.json", "merges.txt", "tokenizer_config.json"]) {
        await Deno.copyFile(join(TOKENIZER_DIR, f), join(dir, f));
      }
      const id = Object.keys(vocab).length;
      await Deno.writeTextFile(join(dir, "added_tokens.json"), JSON.stringify({ "<sks>": id }));
      const added = await ClipTokenizer.load(dir);
      assert.deepEqual(added.encode("a <sks> dog"), [
        ...tok.encode("a"),
        id,
        ...tok.encode("dog"),
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  await t.step("a merges.txt from another vocabulary fails naming the file and line", async () => {
    const dir = await Deno.makeTempDir();
    try {
      for (const f of ["vocab.json", "tokenizer_config.json", "special_tokens_map.json"]) {
        await Deno.copyFile(join(TOKENIZER_DIR, f), join(dir, f));
      }
      const merges = (await Deno.readTextFile(join(TOKENIZER_DIR, "merges.txt"))).split("\n");
      merges.splice(5, 0, "q z</w>");
      await Deno.writeTextFile(join(dir, "merges.txt"), merges.join("\n"));
      const err = await ClipTokenizer.load(dir).then(() => null, (e) => e as Error);
      assert.ok(err instanceof ClipTokenizerError);
      assert.match(err.message, /merges\.txt: line 6 \("q z<\/w>"\)/);
      assert.match(err.message, /"qz<\/w>", which is not in .*vocab\.json/);

      await Deno.writeTextFile(join(dir, "merges.txt"), "#version: 0.2\na b c\n");
      await assert.rejects(() => ClipTokenizer.load(dir), /merges\.txt: line 2 .*two symbols/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  await t.step("missing files and bad special tokens are named", async () => {
    await assert.rejects(
      () => ClipTokenizer.load("/nonexistent/tokenizer"),
      /\/nonexistent\/tokenizer\/vocab\.json: file not found/,
    );
    assert.throws(
      () =>
        ClipTokenizer.fromFiles({
          vocab: { "a</w>": 0 },
          merges: "",
          paths: { vocab: "v.json", config: "c.json" },
        }),
      /c\.json: bos_token "<\|startoftext\|>" is not in v\.json/,
    );
  });
});
