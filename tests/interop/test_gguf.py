#!/usr/bin/python3
"""moed's GGUF files and reader against Hugging Face's @huggingface/gguf (tests/interop), a
JavaScript implementation of the format that shares no code with moed:
- it reads every test GGUF file (each family, f32 / q8_0 / q4_k_m, the formats file with every
  value type, split shards) to the same version, metadata keys, value types, array element types,
  values, tensor names, shapes, types and absolute data offsets as scripts/gguf_file.py reads;
- files whose header it serialized again (one extra key, so the tensor data moves) load in moed
  and give the same tokens and bit-identical logits as the originals.
Usage: test_gguf.py TEST_MODELS_DIR MOED_BINARY"""
import json
import os
import sys
import tempfile
import unittest

from common import MODELS, MOED, ROOT, main, node, run

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import gguf_file as gg  # noqa: E402
FAMILIES = ["qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3"]
SPLIT = ["tiny-bytelevel-q6_k-%05d-of-00003.gguf" % i for i in (1, 2, 3)]
# 64-bit integers come from the JavaScript side as decimal strings (BigInt).
WIDE_TYPES = (gg.UINT64, gg.INT64)


def as_ours(value, vtype):
    """A value as @huggingface/gguf's dump shows it, from gguf_file's Python value."""
    if isinstance(value, list):
        return [as_ours(v, None) for v in value]
    if vtype in WIDE_TYPES:
        return str(value)
    return value


def moed(*args):
    return run([MOED, *args])


class ReadsTheSame(unittest.TestCase):
    def test_every_test_file(self):
        files = ["formats.gguf", "tiny-f32.gguf", "tiny-q8_0.gguf", "tiny-q4_k_m.gguf",
                 "tiny-q3_k.gguf", "tiny-split-experts-q8_0.gguf", *SPLIT]
        files += ["tiny-%s-%s.gguf" % (f, t) for f in FAMILIES for t in ("f32", "q8_0", "q4_k_m")]
        paths = [os.path.join(MODELS, f) for f in files]
        dumps = json.loads(node("hf_gguf.mjs", "dump", *paths))
        self.assertEqual(len(dumps), len(paths))
        for path, theirs in zip(paths, dumps):
            with self.subTest(file=os.path.basename(path)):
                self.compare(gg.read(path), theirs)

    def compare(self, ours, theirs):
        self.assertTrue(theirs["littleEndian"])
        self.assertEqual(theirs["version"], ours.version)
        self.assertEqual([m["key"] for m in theirs["metadata"]], list(ours.metadata))
        self.assertEqual(int(theirs["kvCount"]), len(ours.metadata))
        for entry in theirs["metadata"]:
            key = entry["key"]
            self.assertEqual(entry["type"], ours.types[key], key)
            self.assertEqual(entry["subType"], ours.element_types.get(key), key)
            self.assertEqual(entry["value"], as_ours(ours.metadata[key], ours.types[key]), key)
        self.assertEqual(int(theirs["tensorCount"]), len(ours.tensors))
        start = int(theirs["tensorDataOffset"])
        self.assertEqual(start % ours.alignment, 0)
        self.assertEqual([t["name"] for t in theirs["tensors"]], list(ours.tensors))
        for tensor in theirs["tensors"]:
            mine = ours.tensors[tensor["name"]]
            self.assertEqual([int(d) for d in tensor["shape"]], mine.dims, tensor["name"])
            self.assertEqual(tensor["dtype"], gg.GGML_TYPES[mine.type_name][0], tensor["name"])
            self.assertEqual(start + int(tensor["offset"]), mine.offset, tensor["name"])


class RewrittenHeaders(unittest.TestCase):
    TOKENS = "1,5,9,13,2,7,3,11"
    TEXT = "Hello world, the 3 tests\n"

    def rewritten_runs_the_same(self, names):
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                node("hf_gguf.mjs", "rewrite", os.path.join(MODELS, name), os.path.join(tmp, name),
                     "moed.interop")
            rewritten = os.path.join(tmp, names[0])
            original = os.path.join(MODELS, names[0])
            ours = gg.read(original)
            again = gg.read(rewritten)
            self.assertEqual(again.metadata["moed.interop"], "rewritten by @huggingface/gguf")
            self.assertNotEqual(again.tensors[next(iter(again.tensors))].offset,
                                ours.tensors[next(iter(ours.tensors))].offset)
            for name, tensor in ours.tensors.items():
                self.assertEqual(again.tensors[name].raw, tensor.raw, name)
            outputs = []
            for model in (original, rewritten):
                out = os.path.join(tmp, "logits-%d.npy" % len(outputs))
                moed("logits", "--model", model, "--tokens", self.TOKENS, "--out", out,
                     "--threads", "2")
                with open(out, "rb") as f:
                    outputs.append((f.read(), moed("tokenize", "--model", model, "--text",
                                                   self.TEXT)))
            self.assertEqual(outputs[0][1], outputs[1][1], "token ids differ")
            self.assertEqual(outputs[0][0], outputs[1][0], "logits differ")

    def test_mixtral_q4_k_m(self):
        self.rewritten_runs_the_same(["tiny-q4_k_m.gguf"])

    def test_split_byte_level(self):
        self.rewritten_runs_the_same(SPLIT)

    def test_families(self):
        for family in FAMILIES:
            with self.subTest(family=family):
                self.rewritten_runs_the_same(["tiny-%s-q8_0.gguf" % family])


if __name__ == "__main__":
    main("test_gguf.py")
