import assert from "node:assert/strict";
import { join } from "node:path";
import { ClipTokenizer, ClipTokenizerError } from "../adapters/clip_tokenizer.ts";
import { fixture, golden, TINY_SD } from "./_helpers.ts";

const TOKENIZER_DIR = join(TINY_SD, "tokenizer");

async function goldenPrompts(): Promise<string[]> {
  const json = JSON.parse(await Deno.readTextFile(fixture("sd-tiny", "golden.json")));
  return json.tokenizer_prompts;
}

Deno.test("ClipTokenizer", async (t) => {
  const tok = await ClipTokenizer.load(TOKENIZER_DIR);

  await t.step("reads the special tokens and length of an SD 1.x tokenizer", () => {
    assert.equal(tok.bosTokenId, 711);
    assert.equal(tok.eosTokenId, 712);
    assert.equal(tok.padTokenId, 712);
    assert.equal(tok.maxLength, 77);
    assert.equal(tok.vocabSize, 713);
  });

  await t.step("token ids equal transformers' CLIPTokenizer exactly", async () => {
    const prompts = await goldenPrompts();
    const expected = (await golden("sd-tiny")).get("tokenizer.input_ids")!;
    assert.deepEqual(expected.shape, [prompts.length, 77]);
    const { inputIds, attentionMask } = tok.encodeBatch(prompts);
    for (let i = 0; i < prompts.length; i++) {
      const want = Array.from(expected.data.subarray(i * 77, (i + 1) * 77));
      assert.deepEqual(inputIds[i], want, `prompt ${i}: ${JSON.stringify(prompts[i])}`);
      // The mask covers bos … the first eos.
      const eos = want.indexOf(712);
      assert.deepEqual(attentionMask[i], want.map((_, j) => (j <= eos ? 1 : 0)));
    }
  });

  await t.step("truncates long prompts to bos + 75 tokens + eos", () => {
    const { inputIds } = tok.encodeBatch(["a ".repeat(200)]);
    assert.equal(inputIds[0].length, 77);
    assert.equal(inputIds[0][0], 711);
    assert.equal(inputIds[0][76], 712);
    assert.equal(inputIds[0][75], 320);
    const untruncated = tok.encodeBatch(["a ".repeat(200)], { truncation: false, padding: false });
    assert.equal(untruncated.inputIds[0].length, 202);
  });

  await t.step("normalises case and whitespace, keeps special tokens in text", () => {
    assert.deepEqual(tok.encode("A  Photo\tof\n a HAND"), tok.encode("a photo of a hand"));
    assert.deepEqual(tok.encode("a<|endoftext|>b"), [...tok.encode("a"), 712, ...tok.encode("b")]);
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

  await t.step("pads with the configured pad token (SD 2.x uses '!')", () => {
    const sd2 = ClipTokenizer.fromFiles({
      vocab: JSON.parse(Deno.readTextFileSync(join(TOKENIZER_DIR, "vocab.json"))),
      merges: Deno.readTextFileSync(join(TOKENIZER_DIR, "merges.txt")),
      tokenizerConfig: { pad_token: "!", model_max_length: 77 },
    });
    assert.equal(sd2.padTokenId, 0);
    const { inputIds, attentionMask } = sd2.encodeBatch(["a"]);
    assert.deepEqual(inputIds[0].slice(0, 4), [711, 320, 712, 0]);
    assert.equal(inputIds[0].at(-1), 0);
    assert.deepEqual(attentionMask[0].slice(0, 4), [1, 1, 1, 0]);
    // AddedToken objects (newer tokenizer_config.json) are read too.
    const obj = ClipTokenizer.fromFiles({
      vocab: JSON.parse(Deno.readTextFileSync(join(TOKENIZER_DIR, "vocab.json"))),
      merges: "#version: 0.2\n",
      tokenizerConfig: { pad_token: { content: "!", lstrip: false } },
    });
    assert.equal(obj.padTokenId, 0);
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
