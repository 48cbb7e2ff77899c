// WordPiece (BertTokenizer) against known bert-base-uncased behaviour. The real vocab.txt cannot be
// downloaded here, so the ids come from vocabularies that hold bert-base-uncased's tokens at their
// real line numbers (every other line a filler): the expected ids are those of the real
// tokenizer, from transformers' documentation and tests and other ports checked against it, and
// the cases of google-research/bert's tokenization_test.py with its own small vocabularies.
import assert from "node:assert/strict";
import {
  bertBasicTokenize,
  BertTokenizer,
  isBertPunctuation,
} from "../../../adapters/image_reward/bert_tokenizer.ts";

// bert-base-uncased: token → id (line number of vocab.txt).
const BERT_IDS: Record<string, number> = {
  "[PAD]": 0,
  "[UNK]": 100,
  "[CLS]": 101,
  "[SEP]": 102,
  "[MASK]": 103,
  "#": 1001,
  "'": 1005,
  "+": 1009,
  ",": 1010,
  ".": 1012,
  "c": 1039,
  "t": 1056,
  "の": 1671,
  "日": 1864,
  "本": 1876,
  "語": 1950,
  "the": 1996,
  "and": 1998,
  "is": 2003,
  "my": 2026,
  "over": 2058,
  "can": 2064,
  "world": 2088,
  "don": 2123,
  "won": 2180,
  "brown": 2829,
  "lower": 2896,
  "upper": 3356,
  "45": 3429,
  "numbers": 3616,
  "mixed": 3816,
  "dog": 3899,
  "fox": 4419,
  "quick": 4248,
  "67": 6163,
  "hello": 7592,
  "cafe": 7668,
  "cute": 10140,
  "123": 13138,
  "resume": 13746,
  "lazy": 13971,
  "jumps": 14523,
  "naive": 15743,
  "##case": 18382,
  "##ス": 30233,
  "##テ": 30239,
  "##ト": 30240,
};

function sparseVocab(ids: Record<string, number>, size: number): string {
  const lines = Array.from({ length: size }, (_, i) => `[unused${i}]`);
  for (const [t, i] of Object.entries(ids)) lines[i] = t;
  return lines.join("\n") + "\n";
}

const bert = BertTokenizer.fromFiles({
  vocab: sparseVocab(BERT_IDS, 30522),
  tokenizerConfig: { do_lower_case: true },
});

Deno.test("bert-base-uncased ids of known sentences", async (t) => {
  const cases: [string, number[]][] = [
    // transformers' docs: tokenizer("Hello, my dog is cute").
    ["Hello, my dog is cute", [101, 7592, 1010, 2026, 3899, 2003, 10140, 102]],
    ["Hello world", [101, 7592, 2088, 102]],
    [
      "The quick brown fox jumps over the lazy dog.",
      [101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102],
    ],
    // Digits stay whole numbers; '.' is punctuation.
    ["Numbers 123 and 45.67", [101, 3616, 13138, 1998, 3429, 1012, 6163, 102]],
    // Accents stripped after lower-casing.
    ["café naïve résumé", [101, 7668, 15743, 13746, 102]],
    // CJK ideographs split one by one; kana stay a word and go through WordPiece.
    ["日本語のテスト", [101, 1864, 1876, 1950, 1671, 30239, 30233, 30240, 102]],
    ["UPPERCASE lower MiXeD", [101, 3356, 18382, 2896, 3816, 102]],
    ["don't can't won't", [101, 2123, 1005, 1056, 2064, 1005, 1056, 2180, 1005, 1056, 102]],
    ["C++ and C#", [101, 1039, 1009, 1009, 1998, 1039, 1001, 102]],
    ["", [101, 102]],
    [" ", [101, 102]],
  ];
  for (const [text, ids] of cases) {
    await t.step(JSON.stringify(text), () => {
      assert.deepEqual(bert.encodeBatch([text], { padding: false }).inputIds[0], ids);
    });
  }
});

Deno.test("unknown words, truncation and padding", () => {
  // "zebra" has no piece in this vocabulary: the whole word becomes [UNK].
  assert.deepEqual(bert.encode("hello zebra dog"), [7592, 100, 3899]);
  const enc = bert.encodeBatch(["Hello, my dog is cute"], { maxLength: 6 });
  assert.deepEqual(enc.inputIds[0], [101, 7592, 1010, 2026, 3899, 102]);
  const padded = bert.encodeBatch(["Hello world"], { maxLength: 7 });
  assert.deepEqual(padded.inputIds[0], [101, 7592, 2088, 102, 0, 0, 0]);
  assert.deepEqual(padded.attentionMask[0], [1, 1, 1, 1, 0, 0, 0]);
  // Special tokens written in the text stay whole.
  assert.deepEqual(bert.encode("hello [MASK] world"), [7592, 103, 2088]);
});

// google-research/bert tokenization_test.py.
Deno.test("google-research/bert tokenization_test cases", async (t) => {
  await t.step("full tokenizer", () => {
    const vocab = [
      "[UNK]",
      "[CLS]",
      "[SEP]",
      "want",
      "##want",
      "##ed",
      "wa",
      "un",
      "runn",
      "##ing",
      ",",
    ];
    const tok = BertTokenizer.fromFiles({
      vocab: vocab.join("\n"),
      tokenizerConfig: { pad_token: "[UNK]" },
    });
    assert.deepEqual(tok.tokenize("UNwant\u00E9d,running"), [
      "un",
      "##want",
      "##ed",
      ",",
      "runn",
      "##ing",
    ]);
    assert.deepEqual(tok.encode("UNwant\u00E9d,running"), [7, 4, 5, 10, 8, 9]);
    assert.deepEqual(tok.tokenize("unwanted running"), ["un", "##want", "##ed", "runn", "##ing"]);
    assert.deepEqual(tok.tokenize("unwantedX running"), ["[UNK]", "runn", "##ing"]);
    assert.deepEqual(tok.tokenize(""), []);
  });
  await t.step("chinese", () => {
    assert.deepEqual(bertBasicTokenize("ah\u535A\u63A8zz"), ["ah", "\u535A", "\u63A8", "zz"]);
  });
  await t.step("basic tokenizer, lower", () => {
    assert.deepEqual(bertBasicTokenize(" \tHeLLo!how  \n Are yoU?  "), [
      "hello",
      "!",
      "how",
      "are",
      "you",
      "?",
    ]);
    assert.deepEqual(bertBasicTokenize("H\u00E9llo"), ["hello"]);
  });
  await t.step("basic tokenizer, no lower", () => {
    assert.deepEqual(bertBasicTokenize(" \tHeLLo!how  \n Are yoU?  ", { lowerCase: false }), [
      "HeLLo",
      "!",
      "how",
      "Are",
      "yoU",
      "?",
    ]);
  });
  await t.step("control characters dropped", () => {
    assert.deepEqual(bertBasicTokenize("a\u0005b\u200dc\ufffd d"), ["abc", "d"]);
  });
  await t.step("punctuation", () => {
    for (const c of ["-", "$", "`", "."]) assert.ok(isBertPunctuation(c), c);
    for (const c of ["A", " "]) assert.ok(!isBertPunctuation(c), c);
  });
  await t.step("words over 100 characters are [UNK]", () => {
    const tok = BertTokenizer.fromFiles({ vocab: "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n##a\n" });
    assert.deepEqual(tok.tokenize("a".repeat(100)).length, 100);
    assert.deepEqual(tok.tokenize("a".repeat(101)), ["[UNK]"]);
  });
});
