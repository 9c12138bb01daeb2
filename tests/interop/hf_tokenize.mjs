// Texts encoded by Hugging Face's @huggingface/tokenizers (tokenizers.js, a JavaScript port of
// the tokenizers library that shares no code with moed; installed by scripts/install-deps.sh)
// from a model directory's tokenizer.json and tokenizer_config.json. tests/interop/
// test_tokenizers.py compares the ids with `moed tokenize`.
//
//   node hf_tokenize.mjs MODEL_DIR TEXTS_JSON
// prints a JSON array with, per text, the ids without and with the special tokens
// (add_special_tokens false and true).
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { Tokenizer } from "@huggingface/tokenizers";

const [dir, textsFile] = process.argv.slice(2);
if (!dir || !textsFile) {
  process.stderr.write("usage: hf_tokenize.mjs MODEL_DIR TEXTS_JSON\n");
  process.exit(2);
}
try {
  const json = (name) => JSON.parse(readFileSync(join(dir, name), "utf8"));
  const tokenizer = new Tokenizer(json("tokenizer.json"), json("tokenizer_config.json"));
  const texts = JSON.parse(readFileSync(textsFile, "utf8"));
  const out = texts.map((text) => ({
    plain: tokenizer.encode(text, { add_special_tokens: false }).ids,
    special: tokenizer.encode(text, { add_special_tokens: true }).ids,
  }));
  process.stdout.write(JSON.stringify(out));
} catch (error) {
  process.stderr.write(`hf_tokenize.mjs ${dir}: ${error.stack ?? error}\n`);
  process.exit(1);
}
