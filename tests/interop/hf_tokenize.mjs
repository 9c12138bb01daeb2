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
// [bos] text [eos] as add_bos_token / add_eos_token say (defaults true / false for Llama, false /
// false for GPT-NeoX). DeepSeek-V3's published tokenizer.json gets its BOS only this way.
function applyTransformersPostProcessor(tokenizerJson, config) {
  const klass = (config.tokenizer_class ?? "").replace(/Fast$/, "");
  if (klass !== "LlamaTokenizer" && klass !== "GPTNeoXTokenizer") return;
  const addBos = config.add_bos_token ?? klass === "LlamaTokenizer";
  const addEos = config.add_eos_token ?? false;
  const content = (token) => (typeof token === "object" && token !== null ? token.content : token);
  const idOf = (token) => {
    const added = tokenizerJson.added_tokens.find((t) => t.content === token);
    return added ? added.id : tokenizerJson.model.vocab[token];
  };
  const single = [];
  const specialTokens = {};
  const special = (token) => {
    single.push({ SpecialToken: { id: token, type_id: 0 } });
    specialTokens[token] = { id: token, ids: [idOf(token)], tokens: [token] };
  };
  if (addBos) special(content(config.bos_token));
  single.push({ Sequence: { id: "A", type_id: 0 } });
  if (addEos) special(content(config.eos_token));
  tokenizerJson.post_processor = {
    type: "TemplateProcessing",
    single,
    pair: [...single, { Sequence: { id: "B", type_id: 1 } }],
    special_tokens: specialTokens,
  };
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
