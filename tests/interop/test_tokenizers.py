#!/usr/bin/python3
"""`moed tokenize` against Hugging Face's @huggingface/tokenizers (tokenizers.js, a JavaScript
port of the tokenizers library that shares no code with moed) on every tokenizer.json moed's
tests use: the SentencePiece-style BPE of the Mixtral test models, the byte-level BPEs of the
other families (each with its own split regex), and the trained default model's tokenizer. Each
text is encoded with and without the special tokens (BOS, the post-processor's template), and
the ids must be equal. The texts cover spaces and newlines, digits, contractions, accents in
both Unicode forms, CJK, emoji, special tokens written in the text, and upper case.
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
    "Hello world", " leading space", "trailing space ", "two  spaces   three",
    "line\nbreak\n\ntwo", "tab\there", "numbers 12345 and 3.14159", "a 1000000 x",
    "I'm sure they'll say we don't", "I'M SURE THEY'LL", "café naïve résumé",
    "e\u0301 and \u00e9", "你好，世界", "emoji 👍🏽 ok", "ß ẞ ǅ", "a", "    ",
    "In the beginning God created the heaven and the earth.", "<s> inside text </s>",
    "<|im_start|>user\nhi<|im_end|>", "UPPER lower MiXeD", "x\r\ny", "end.\n",
]
TOKENIZERS = ["tiny-f32", "tiny-bytelevel", "tiny-qwen2_moe", "tiny-qwen3_moe", "tiny-olmoe",
              "tiny-deepseek_v2", "tiny-deepseek_v3"]


def ids(text):
    return [int(i) for i in text.strip().split(",") if i]


class SameIds(unittest.TestCase):
    def check(self, model_dir):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as texts:
            json.dump(TEXTS, texts)
            texts.flush()
            result = subprocess.run(["node", os.path.join(HERE, "hf_tokenize.mjs"), model_dir,
                                     texts.name], capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        theirs = json.loads(result.stdout)
        for text, expected in zip(TEXTS, theirs):
            for flags, key in (([], "special"), (["--no-special"], "plain")):
                run = subprocess.run([MOED, "tokenize", "--model", model_dir, "--text", text,
                                      *flags], capture_output=True, text=True, timeout=60)
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assertEqual(ids(run.stdout), expected[key],
                                 "%s, %r, %s" % (os.path.basename(model_dir), text, key))

    def test_test_models(self):
        for name in TOKENIZERS:
            with self.subTest(model=name):
                self.check(os.path.join(MODELS, name))

    def test_default_model(self):
        self.check(os.path.join(ROOT, "models", "default"))


if __name__ == "__main__":
    if shutil.which("node") is None or not os.path.isdir(os.path.join(HERE, "node_modules")):
        sys.exit("test_tokenizers.py: needs node and tests/interop/node_modules "
                 "(run scripts/install-deps.sh)")
    unittest.main(verbosity=2)
