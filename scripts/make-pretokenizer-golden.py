#!/usr/bin/python3
"""Write tests/golden/pretokenizer-splits.json: how the published tokenizers of each MoE family cut
tricky text into pieces before BPE (tokenizers' pre_tokenize_str), computed independently of moed
with Python's `regex` module (full Unicode properties) and unicodedata (NFC).

Each family entry holds the normalizer and pre_tokenizer JSON exactly as the family's
tokenizer.json writes them, and for every string the expected pieces, byte-level mapped as
tokenizers returns them. The tests load a tokenizer with that JSON and compare moed's pieces.
"""
import importlib.util
import json
import os
import sys
import unicodedata

import regex

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
DEEPSEEK_V3 = [
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
]


def split(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


def byte_level(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


FAMILIES = {
    # OLMoE, GPT-NeoX, GPT-2
    "gpt2-bytelevel": {"normalizer": None, "pre_tokenizer": byte_level(True)},
    # Qwen1.5-MoE, Qwen2-57B-A14B, Qwen3-30B-A3B, Qwen3-235B-A22B
    "qwen2": {"normalizer": {"type": "NFC"},
              "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(QWEN2), byte_level(False)]}},
    "llama3": {"normalizer": None,
               "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(LLAMA3), byte_level(False)]}},
    "deepseek-v3": {"normalizer": None,
                    "pre_tokenizer": {"type": "Sequence",
                                      "pretokenizers": [split(p) for p in DEEPSEEK_V3] + [byte_level(False)]}},
}

CASES = [
    "Hello world! It's  fine.",
    "I'm sure they'll say we've done it, can't you? WE'LL SEE, DON'T",
    "1234567 3.14159 2026-12-01 ①②③ x² ½",
    "你好世界，很高兴认识你。",
    "こんにちは、カタカナとひらがな。",
    "नमस्ते दुनिया ०१२३ का",
    "😀👍🏽 family: 👨‍👩‍👧 ok",
    "a  b   c\t\td    ",
    "line one\r\nline two\n\n\nline three \r\n",
    "cafe\u0301 vs caf\u00e9, A\u030angstr\u00f6m",
    "def f(x):\n    return x**2  # comment",
    "https://example.com/a_b?c=1&d=%20 <tag attr=\"v\">",
    "Ünïcödé ÀÉÎÕÜ straße ΑΒΓ абв",
    "\u00a0non\u00a0breaking\u3000ideographic space",
    "  leading and trailing  ",
]


def load_make_tiny_model():
    """make-tiny-model.py (a file name Python cannot import by name): GPT-2's byte map and the
    DeepSeek-V2 split patterns live there."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-tiny-model.py")
    spec = importlib.util.spec_from_file_location("make_tiny_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE_TINY_MODEL = load_make_tiny_model()
B2U = MAKE_TINY_MODEL.bytes_to_unicode()


# DeepSeek-LLM / V2 / V2-Lite: five Splits, then each digit alone.
FAMILIES["deepseek-v2"] = {
    "normalizer": None,
    "pre_tokenizer": {"type": "Sequence",
                      "pretokenizers": [split(p) for p in MAKE_TINY_MODEL.DEEPSEEK_V2_SPLIT_PATTERNS]
                      + [{"type": "Digits", "individual_digits": True}, byte_level(False)]}}


def isolated(pieces, pattern):
    """tokenizers' Split with behavior Isolated: matches and the gaps between them, non-empty."""
    out = []
    for piece in pieces:
        at = 0
        for m in regex.finditer(pattern, piece):
            if m.start() > at:
                out.append(piece[at:m.start()])
            if m.end() > m.start():
                out.append(m.group())
            at = m.end()
        if at < len(piece):
            out.append(piece[at:])
    return out


def pre_tokenize(family, text):
    if family["normalizer"] and family["normalizer"]["type"] == "NFC":
        text = unicodedata.normalize("NFC", text)
    steps = family["pre_tokenizer"]
    steps = steps["pretokenizers"] if steps["type"] == "Sequence" else [steps]
    pieces = [text]
    for step in steps:
        if step["type"] == "Split":
            pieces = isolated(pieces, step["pattern"]["Regex"])
        elif step["type"] == "Digits":
            # tokenizers' Digits: numeric characters (char::is_numeric, Unicode's N) isolated,
            # each alone or in runs.
            pieces = isolated(pieces, r"\p{N}" if step["individual_digits"] else r"\p{N}+")
        elif step["type"] == "ByteLevel":
            if step["use_regex"]:
                pieces = isolated(pieces, GPT2)
            pieces = ["".join(B2U[b] for b in p.encode("utf-8")) for p in pieces]
        else:
            raise ValueError(step["type"])
    return pieces


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden",
                       "pretokenizer-splits.json")
    golden = {}
    for name, family in FAMILIES.items():
        golden[name] = dict(family, cases=[{"text": t, "pieces": pre_tokenize(family, t)} for t in CASES])
    with open(out, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("make-pretokenizer-golden: %d families x %d strings -> %s" % (len(golden), len(CASES), out),
          file=sys.stderr)


if __name__ == "__main__":
    main()
