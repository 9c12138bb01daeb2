#!/usr/bin/python3
"""moed against llama.cpp itself (its prebuilt libraries, through tests/interop/llama_cpp.py):
- llama.cpp loads moed's test GGUF files (every family, f32 and quantized, split shards, and the
  trained default model converted; tensor data validated) and computes the same logits as
  `moed logits` on the same tokens;
- moed loads files made by llama.cpp's own quantizer (llama-quantize's code, every type moed
  computes and the K-quant mixes Q4_K_M / Q5_K_M; every family) and computes the same logits as
  llama.cpp on them; types moed does not compute are refused with the tensor and type named;
- moed reads files llama.cpp's model saver wrote again to the same logits as the originals;
- `moed tokenize` gives llama.cpp's ids, and text back, on every GGUF vocabulary: the test
  models' and the four published tokenizers converted to GGUF.

"The same logits", in units of the standard deviation of llama.cpp's logits:
- f32 files agree to float rounding (1e-4) at every position.
- Quantized files: both sides quantize the activations of block-format weights to int8 blocks as
  ggml does (Q8_0 blocks with Q8_1's fp16 sum for the 32-element formats, Q8_K for the
  K-quants), but that rounding is discontinuous: a difference of 1e-6 elsewhere (an exp, a rope
  angle computed another way) now and then moves a value across a rounding boundary, and that
  position's logits then move by about 0.01-0.05 of their spread, later positions too through
  attention. So they must agree within 0.1 at the median position (twice that step: a step
  early in the prompt, which every later position inherits, stays inside on any CPU's kernels)
  and within 0.2 at nine positions in ten. A misread block, a wrong format or layout is off by far more (the test
  shows Q4_0 against Q5_0 failing); a difference in the rounding itself below that bound (Q8_1's
  fp16 sum, for one) is pinned by the kernels' unit tests instead (test_quant_dot).
- llama.cpp also rounds the activations of f16 and bf16 weights to f16 / bf16, where moed keeps
  f32 (an f16 activation overflows past 65504), so a file holding either gets twice the bounds.
The 26-layer DeepSeek-V2-Lite (the depth llama.cpp needs to recognize it) gathers more such
steps than the bound allows, so it is compared in f32 only. `moed logits` runs the prompt as one
batch; decode's own paths are compared with the batched one bit for bit by the engine's tests.
Usage: test_llamacpp.py TEST_MODELS_DIR MOED_BINARY"""
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from common import MODELS, MOED, ROOT, main, run
from llama_cpp import LlamaCpp
from test_tokenizers import GGUF_PRE, PUBLISHED, TEXTS, published, write_gguf_tokenizer

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import gguf_file as gg  # noqa: E402

SKIPPED = 77  # ctest's SKIP_RETURN_CODE for this test
PROMPT = ("Once upon a time, the quick brown fox jumps over the lazy dog 1234. "
          "The capital of France is Paris; it's 42 degrees!")
SPLIT = "tiny-bytelevel-q6_k-00001-of-00003.gguf"
# Weights whose activations llama.cpp rounds to f16 / bf16 and moed keeps in f32.
ROUNDED_BY_LLAMA_CPP = {"f16", "bf16"}
LLAMA_CPP_TYPES = ["f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s",
                   "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "iq4_nl",
                   "iq3_s", "iq3_m", "iq4_xs"]
# llama-quantize writes f16 for a matrix whose rows are not whole blocks of the type (the tiny
# DeepSeek models' 16-wide absorbed and 48-wide q LoRA projections); kept f32 here, such a file
# stays under the closer bound.
KEEP_F32 = ["attn_(k|q)_b\\.weight"]


@functools.cache
def llama_cpp():
    return LlamaCpp()


WORK = tempfile.TemporaryDirectory(prefix="moed-llamacpp-")


def workdir():
    return WORK.name


def generated(name, *args):
    """A GGUF of a model made here (scripts/make-tiny-model.py args), converted by hf-to-gguf."""
    out = os.path.join(workdir(), name)
    if not os.path.exists(out + "-f32.gguf"):
        run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "make-tiny-model.py"), "--out", out,
             "--format", "gguf", "--quant", "f32,q8_0", *args])
    return out


# Models llama.cpp cannot load as the test models are: its qwen2moe / qwen3moe have no dense
# layers (the tiny ones have some), and it tells DeepSeek-V2-Lite (no q LoRA) from V2 by its 26
# or 27 layers.
LLAMA_CPP_SHAPES = {
    "qwen2_moe": ["--family", "qwen2_moe", "--all-moe"],
    "qwen3_moe": ["--family", "qwen3_moe", "--all-moe"],
    "deepseek_v2": ["--family", "deepseek_v2", "--layers", "26"],
}


def family_file(family, quant):
    """The test GGUF of a family ("default": the trained default model, converted here)."""
    if family == "default":
        out = os.path.join(workdir(), "default-%s.gguf" % quant)
        if not os.path.exists(out):
            run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "hf-to-gguf.py"), "--model",
                 os.path.join(ROOT, "models", "default"), "--out", out, "--type", quant])
        return out
    if family in LLAMA_CPP_SHAPES:
        return generated(family, *LLAMA_CPP_SHAPES[family]) + "-%s.gguf" % quant
    prefix = "tiny" if family == "mixtral" else "tiny-" + family
    return os.path.join(MODELS, "%s-%s.gguf" % (prefix, quant))


def llama_cpp_made(family, ftype):
    """family's f32 test file quantized to ftype by llama.cpp (once)."""
    out = os.path.join(workdir(), "llama-cpp-%s-%s.gguf" % (family, ftype))
    if not os.path.exists(out):
        llama_cpp().quantize(family_file(family, "f32"), out, ftype, KEEP_F32)
    return out


def weight_types(path):
    """The types of a GGUF's matrices (its 1-D norms and biases are f32 everywhere)."""
    types = set()
    parts = [path]
    if "-00001-of-" in path:
        count = int(path[path.index("-of-") + 4:-len(".gguf")])
        parts = [path.replace("-00001-of-", "-%05d-of-" % i) for i in range(1, count + 1)]
    for part in parts:
        types |= {t.type_name for t in gg.read(part).tensors.values() if len(t.dims) >= 2}
    return types


def moed_logits(path, tokens):
    out = os.path.join(workdir(), "logits.npy")
    run([MOED, "logits", "--model", path, "--kv-dtype", "f32", "--threads", "2",
         "--tokens", ",".join(map(str, tokens)), "--out", out])
    return np.load(out).reshape(len(tokens), -1)


def disagreement(path, theirs_path=None):
    """Per position, the largest |difference| between moed's logits on path and llama.cpp's on
    theirs_path (default: path itself), in units of the spread of llama.cpp's logits (about 1 in
    the random tiny models, 3.3 in the trained default model)."""
    theirs_path = theirs_path or path
    tokens = llama_cpp().tokenize(theirs_path, [PROMPT], add_special=True)[0]
    theirs = llama_cpp().logits(theirs_path, tokens)
    ours = moed_logits(path, tokens)
    if ours.shape != theirs.shape:
        raise AssertionError("logits of shape %s against llama.cpp's %s" % (ours.shape,
                                                                           theirs.shape))
    return np.abs(ours - theirs).max(axis=1) / theirs.std()


def bound_for(path):
    """The median bound of path's weight types (None: f32, where every position must agree)."""
    types = weight_types(path)
    if types == {"f32"}:
        return None
    return 0.2 if types & ROUNDED_BY_LLAMA_CPP else 0.1


class SameLogits(unittest.TestCase):
    def agree(self, path):
        rows = disagreement(path)
        report = "%s (%s): per-position max |difference| / logits' std %s" % (
            os.path.basename(path), ", ".join(sorted(weight_types(path))),
            np.array2string(rows, precision=2, max_line_width=1000))
        print("%s: median %.2g, max %.2g of the logits' std" % (
            os.path.basename(path), np.median(rows), rows.max()), file=sys.stderr)
        bound = bound_for(path)
        if bound is None:
            self.assertLess(rows.max(), 1e-4, report)
        else:
            self.assertLess(np.median(rows), bound, report)
            self.assertLessEqual((rows > 2 * bound).sum(), len(rows) // 10, report)

    def test_llama_cpp_reads_our_files(self):
        files = [family_file(f, q) for f in ("mixtral", "olmoe", "deepseek_v3", "default")
                 for q in ("f32", "q8_0", "q4_k_m")]
        files += [family_file(f, "f32") for f in LLAMA_CPP_SHAPES]
        files += [family_file(f, "q8_0") for f in ("qwen2_moe", "qwen3_moe")]
        files.append(os.path.join(MODELS, SPLIT))
        files.append(os.path.join(MODELS, "tiny-q3_k.gguf"))  # hf-to-gguf's own q3_K blocks
        files.append(os.path.join(MODELS, "tiny-q2_k.gguf"))  # and q2_K blocks
        files.append(os.path.join(MODELS, "tiny-iq4_xs.gguf"))  # and iq4_xs blocks
        files.append(os.path.join(MODELS, "tiny-iq3_s.gguf"))  # and iq3_s blocks
        files.append(os.path.join(MODELS, "tiny-iq3_xxs.gguf"))  # and iq3_xxs blocks
        files.append(os.path.join(MODELS, "tiny-iq1_s.gguf"))  # and iq1_s blocks
        files.append(os.path.join(MODELS, "tiny-iq1_m.gguf"))  # and iq1_m blocks
        files.append(os.path.join(MODELS, "tiny-iq2_xxs.gguf"))  # and iq2_xxs blocks
        files.append(os.path.join(MODELS, "tiny-iq2_xs.gguf"))  # and iq2_xs blocks
        files.append(os.path.join(MODELS, "tiny-iq2_s.gguf"))  # and iq2_s blocks
        for wide in ("f16", "bf16"):
            files.append(os.path.join(workdir(), "tiny-%s.gguf" % wide))
            run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "hf-to-gguf.py"), "--model",
                 os.path.join(MODELS, "tiny-f32"), "--out", files[-1], "--type", wide])
        for path in files:
            with self.subTest(file=os.path.basename(path)):
                self.agree(path)

    def test_moed_reads_llama_cpp_files(self):
        made = [("mixtral", t) for t in LLAMA_CPP_TYPES]
        made += [(f, t) for f in ("qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3")
                 for t in ("q8_0", "q4_k_m")]
        # Hidden size 128: llama-quantize falls back from q3_K there (to q4_0; iq4_nl before).
        made += [("qwen3_moe", "q3_k_m"), ("deepseek_v3", "q3_k_m")]
        for family, ftype in made:
            with self.subTest(family=family, type=ftype):
                self.agree(llama_cpp_made(family, ftype))

    def test_moed_reads_ggml_iq_blocks(self):
        """Blocks from ggml's own quantizer (its grid searches and sign choices, not hf-to-gguf's)
        for the IQ formats llama-quantize makes only with an importance matrix; ggml's quantizer
        needs one for IQ1_S, IQ2_XXS and IQ2_XS, and is given one that weighs all columns alike:
        every matrix of whole 256-element rows of the Mixtral test file in the type."""
        source = gg.read(family_file("mixtral", "f32"))
        for type_name in ("iq3_xxs", "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s"):
            with self.subTest(type=type_name):
                writer = gg.Writer(source.version, source.alignment)
                for key, value in source.metadata.items():
                    writer.add(key, gg.Value(source.types[key], value,
                                             source.element_types.get(key)))
                for tensor in source.tensors.values():
                    if len(tensor.dims) == 2 and tensor.dims[0] % 256 == 0:
                        raw = llama_cpp().quantize_rows(gg.GGML_TYPES[type_name][0],
                                                        tensor.values())
                        writer.add_tensor(tensor.name, type_name, tensor.shape, raw)
                    else:
                        writer.add_tensor(tensor.name, tensor.type_name, tensor.shape, tensor.raw)
                out = os.path.join(workdir(), "ggml-mixtral-%s.gguf" % type_name)
                writer.write(out)
                self.assertIn(type_name, weight_types(out))
                self.agree(out)

    def test_files_llama_cpp_wrote_again(self):
        """llama.cpp's model saver writes a loaded model with its own GGUF writer and every
        hyperparameter key it has (a hundred more than a converter writes, most of them zero or
        another architecture's defaults); moed reads those files as llama.cpp does, to logits
        bit-identical to the originals'. Not DeepSeek: the saver writes its
        rope.scaling.yarn_log_multiplier as 1.0, and llama.cpp itself computes other logits then."""
        for family, quant in (("mixtral", "f32"), ("mixtral", "q4_k_m"), ("qwen2_moe", "f32"),
                              ("qwen3_moe", "q8_0"), ("olmoe", "f32"), ("olmoe", "q4_k_m")):
            with self.subTest(family=family, type=quant):
                original = family_file(family, quant)
                saved = os.path.join(workdir(), "resaved-%s-%s.gguf" % (family, quant))
                llama_cpp().resave(original, saved)
                tokens = llama_cpp().tokenize(original, [PROMPT], add_special=True)[0]
                np.testing.assert_array_equal(moed_logits(saved, tokens),
                                              moed_logits(original, tokens))

    def test_types_moed_does_not_compute(self):
        # Ternary TQ1_0: the pinned llama-quantize makes the IQ2 and IQ3_XXS mixes only with an
        # importance matrix.
        out = llama_cpp_made("mixtral", "tq1_0")
        result = run_failing([MOED, "logits", "--model", out, "--tokens", "1,2",
                              "--out", os.path.join(workdir(), "refused.npy")])
        self.assertIn("has ggml type tq1_0, which moed does not compute", result)
        self.assertIn("tensor '", result)

    def test_a_different_file_does_not_agree(self):
        """The bound tells formats apart: moed's Q4_0 logits against llama.cpp's Q5_0 are far
        beyond it."""
        q4_0 = llama_cpp_made("mixtral", "q4_0")
        rows = disagreement(q4_0, theirs_path=llama_cpp_made("mixtral", "q5_0"))
        self.assertGreater(np.median(rows), 5 * bound_for(q4_0))


def run_failing(command):
    """The stderr of a command that must fail."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode == 0:
        raise AssertionError("%s succeeded" % " ".join(command[:3]))
    return result.stderr


class SameTokens(unittest.TestCase):
    def check(self, path):
        """Each text with and without BOS (special tokens written in the text parsed, as
        llama.cpp's server tokenizes a prompt), and the first decoded with special tokens kept."""
        with tempfile.TemporaryDirectory() as tmp:
            lines = os.path.join(tmp, "texts.jsonl")
            with open(lines, "w") as f:
                f.writelines(json.dumps(text) + "\n" for text in TEXTS)
            ours = {}
            for flags, special in (([], True), (["--no-special"], False)):
                out = run([MOED, "tokenize", "--model", path, "--jsonl", lines, *flags])
                ours[special] = [json.loads(line) for line in out.splitlines()]
        name = os.path.basename(path)
        for special in (True, False):
            theirs = llama_cpp().tokenize(path, TEXTS, add_special=special)
            self.assertEqual(len(ours[special]), len(TEXTS))
            for text, mine, expected in zip(TEXTS, ours[special], theirs):
                self.assertEqual(mine["ids"], expected, "%s, %r, special %s" % (name, text, special))
        decoded = llama_cpp().detokenize(path, [o["ids"] for o in ours[True]])
        for text, mine, expected in zip(TEXTS, ours[True], decoded):
            self.assertEqual(mine["decoded"], expected, "%s, %r, decoded" % (name, text))

    def test_test_models(self):
        for family in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2",
                       "deepseek_v3", "default"):
            with self.subTest(family=family):
                self.check(family_file(family, "f32"))
        with self.subTest(file=SPLIT):
            self.check(os.path.join(MODELS, SPLIT))

    def test_published_tokenizers_as_gguf(self):
        for package in PUBLISHED:
            with self.subTest(tokenizer=package):
                path = os.path.join(workdir(), package + ".gguf")
                write_gguf_tokenizer(published(package), GGUF_PRE[package], path)
                self.check(path)


if __name__ == "__main__":
    if platform.machine() != "x86_64":
        # The only build of llama.cpp's libraries the package pins (an optional npm dependency).
        print("test_llamacpp.py: skipped, llama.cpp's prebuilt libraries are x86-64 only")
        sys.exit(SKIPPED)
    main("test_llamacpp.py")
