// Texts encoded by Hugging Face's @huggingface/tokenizers (tokenizers.js, a JavaScript port of
// the tokenizers library that shares no code with moed; installed by scripts/install-deps.sh)
// from a model directory's tokenizer.json and tokenizer_config.json. tests/interop/
// test_tokenizers.py compares the ids with `moed tokenize`.
//
//   node hf_tokenize.mjs MODEL_DIR TEXTS_JSON
// prints a JSON array with, per text, the ids without and with the special tokens
// (add_special_tokens false and true), and the ids with them decoded again with special tokens
// kept and no clean-up of spaces (the decoder alone, as moed decodes).
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { Tokenizer } from "@huggingface/tokenizers";

// What transformers does beyond the tokenizers library: its LlamaTokenizerFast and
// GPTNeoXTokenizerFast (loaded for tokenizer_class LlamaTokenizer / GPTNeoXTokenizer, "Fast" or
// not) replace the file's post-processor in their constructors (update_post_processor) with
// [bos] text [eos] as add_bos_token / add_eos_token say. A key left out takes the constructor's
// default (true / false and <s> / </s> for Llama, false / false and <|endoftext|> for GPT-NeoX);
// a null one is None there. DeepSeek-V3's published tokenizer.json gets its BOS only this way.
function applyTransformersPostProcessor(tokenizerJson, config) {
  const klass = (typeof config.tokenizer_class === "string" ? config.tokenizer_class : "")
    .replace(/Fast$/, "");
  const llama = klass === "LlamaTokenizer";
  if (!llama && klass !== "GPTNeoXTokenizer") return;
  const flag = (key, fallback) => (key in config ? Boolean(config[key]) : fallback);
  const token = (key, fallback) => {
    const value = key in config ? config[key] : fallback;
    return typeof value === "object" && value !== null ? value.content : value;
  };
  const idOf = (text) => {
    const added = tokenizerJson.added_tokens.find((t) => t.content === text);
    return added ? added.id : tokenizerJson.model.vocab[text];
  };
  const single = [];
  const specialTokens = {};
  const special = (text) => {
    single.push({ SpecialToken: { id: text, type_id: 0 } });
    specialTokens[text] = { id: text, ids: [idOf(text)], tokens: [text] };
  };
  if (flag("add_bos_token", llama)) special(token("bos_token", llama ? "<s>" : "<|endoftext|>"));
  single.push({ Sequence: { id: "A", type_id: 0 } });
  if (flag("add_eos_token", false)) special(token("eos_token", llama ? "</s>" : "<|endoftext|>"));
  tokenizerJson.post_processor = { type: "TemplateProcessing", single, special_tokens: specialTokens };
}

const [dir, textsFile] = process.argv.slice(2);
if (!dir || !textsFile) {
  process.stderr.write("usage: hf_tokenize.mjs MODEL_DIR TEXTS_JSON\n");
  process.exit(2);
}
try {
  const json = (name) => JSON.parse(readFileSync(join(dir, name), "utf8"));
  const tokenizerJson = json("tokenizer.json");
  const config = json("tokenizer_config.json");
  applyTransformersPostProcessor(tokenizerJson, config);
  const tokenizer = new Tokenizer(tokenizerJson, config);
  const texts = JSON.parse(readFileSync(textsFile, "utf8"));
  const out = texts.map((text) => {
    const special = tokenizer.encode(text, { add_special_tokens: true }).ids;
    return {
      plain: tokenizer.encode(text, { add_special_tokens: false }).ids,
      special,
      decoded: tokenizer.decode(special, {
        skip_special_tokens: false,
        clean_up_tokenization_spaces: false,
      }),
    };
  });
  process.stdout.write(JSON.stringify(out));
} catch (error) {
  process.stderr.write(`hf_tokenize.mjs ${dir}: ${error.stack ?? error}\n`);
  process.exit(1);
}
