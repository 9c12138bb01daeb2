#!/usr/bin/python3
"""Write a small MoE model in Hugging Face layout, from a seed: Mixtral (the default) or, with
--family, qwen2_moe, qwen3_moe, olmoe, deepseek_v2 or deepseek_v3.

The output is indistinguishable in format from a real checkpoint: config.json,
model.safetensors (or model-0000i-of-0000N.safetensors shards plus
model.safetensors.index.json), tokenizer.json and tokenizer_config.json (and, for the
families other than mixtral, generation_config.json).
Weights are random (numpy only); the tokenizer is a real BPE trained on a small
built-in text so that ordinary English encodes to multi-byte pieces.

--format gguf --quant q8_0,q4_k_m,... then converts the model with scripts/hf-to-gguf.py (the
layout of llama.cpp's converter and llama-quantize) into one file per type beside the directory:
--out models/tiny --quant q8_0,q4_k_m writes models/tiny/ (HF) and models/tiny-q8_0.gguf,
models/tiny-q4_k_m.gguf.
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np

SIZES = {
    # name: vocab, hidden, layers, experts, top_k, ffn, heads, kv_heads
    "tiny": dict(vocab=512, hidden=256, layers=4, experts=8, top_k=2, ffn=512, heads=8, kv_heads=4),
    "bench": dict(vocab=32000, hidden=1024, layers=8, experts=8, top_k=2, ffn=2816, heads=8, kv_heads=4),
    # Fuzzing seeds: every tensor and key of the format in a file of a few tens of KB.
    "seed": dict(vocab=288, hidden=32, layers=1, experts=4, top_k=2, ffn=32, heads=2, kv_heads=1),
}

CORPUS = """
The capital of France is Paris. The capital of Germany is Berlin. The quick brown fox jumps over
the lazy dog. A mixture of experts model routes every token to a few of its experts, and only those
experts are computed. Memory is the limit: weights live on the GPU, in host memory or on the disk,
and the daemon moves them between tiers ahead of need. Once upon a time there was a little model
that wanted to be large. It read its weights from the solid state drive, one layer after another,
and it answered every question that the users asked. Hello world! How are you today? I am fine,
thank you. What is the weather like in London? It is raining again, as it often does in autumn.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2026. Code: def main(): return 0 if x == y else 1.
"""

# Mixtral-8x7B-Instruct-v0.1's template (system message folded into the first user turn).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)

# OLMoE-1B-7B-Instruct's (Tulu) template, for the byte-level tokenizer.
BYTE_LEVEL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<|system|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'assistant' %}"
    "{% if not loop.last %}{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}"
    "{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}"
)


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def merge_pair(symbols, a, b):
    """The symbols with every non-overlapping adjacent (a, b), left to right, merged into a + b."""
    out = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def train_bpe(words, base_vocab, vocab_size, rng, max_piece_chars=12):
    """Classic BPE training on word counts; then random merges of existing pieces fill the rest."""
    vocab = dict(base_vocab)
    merges = []
    counts = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    splits = {w: list(w) for w in counts}
    for w in counts:
        for ch in w:
            if ch not in vocab and len(vocab) < vocab_size:
                vocab[ch] = len(vocab)
    while len(vocab) < vocab_size:
        pairs = {}
        for w, c in counts.items():
            s = splits[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        candidates = [(c, p) for p, c in pairs.items() if c >= 2 and p[0] + p[1] not in vocab]
        if not candidates:
            break
        candidates.sort(key=lambda cp: (-cp[0], cp[1]))
        a, b = candidates[0][1]
        merges.append((a, b))
        vocab[a + b] = len(vocab)
        for w in counts:
            splits[w] = merge_pair(splits[w], a, b)
    pieces = [p for p in vocab if len(p) >= 1 and all(ch.isalpha() or ch in "▁Ġ" for ch in p)]
    while len(vocab) < vocab_size:
        a = pieces[rng.integers(len(pieces))]
        b = pieces[rng.integers(len(pieces))]
        if b[0] in "▁Ġ" or len(a) + len(b) > max_piece_chars or a + b in vocab:
            continue
        merges.append((a, b))
        vocab[a + b] = len(vocab)
        pieces.append(a + b)
    return vocab, merges


def added_token(idx, content):
    return {"id": idx, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def llama_tokenizer(vocab_size, rng):
    """SentencePiece-style BPE with byte fallback, as Llama 2 and Mixtral ship it."""
    specials = ["<unk>", "<s>", "</s>"]
    base = {t: i for i, t in enumerate(specials)}
    for b in range(256):
        base["<0x%02X>" % b] = len(base)
    words = ["▁" + w for w in CORPUS.split()]
    vocab, merges = train_bpe(words, base, vocab_size, rng)
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token(i, t) for i, t in enumerate(specials)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False,
              "legacy": True, "model_max_length": 1000000000000000019884624838656,
              "sp_model_kwargs": {}, "spaces_between_special_tokens": False,
              "tokenizer_class": "LlamaTokenizer", "use_default_system_prompt": False,
              "chat_template": CHAT_TEMPLATE}
    return tok, config, {"bos": 1, "eos": 2}


def bytelevel_tokenizer(vocab_size, rng):
    """GPT-2 / OLMoE-style byte-level BPE."""
    b2u = bytes_to_unicode()
    base = {b2u[b]: b for b in range(256)}
    words = []
    for i, w in enumerate(CORPUS.split()):
        words.append(("Ġ" if i else "") + "".join(b2u[c] for c in w.encode("utf-8")))
    eos = "<|endoftext|>"
    vocab, merges = train_bpe(words, base, vocab_size - 1, rng)
    vocab[eos] = len(vocab)
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token(vocab[eos], eos)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }
    config = {"add_bos_token": False, "add_eos_token": False, "bos_token": eos, "eos_token": eos,
              "unk_token": eos, "pad_token": None, "clean_up_tokenization_spaces": False,
              "model_max_length": 4096, "tokenizer_class": "GPTNeoXTokenizer",
              "chat_template": BYTE_LEVEL_CHAT_TEMPLATE}
    return tok, config, {"bos": vocab[eos], "eos": vocab[eos]}


def to_bf16_bits(a):
    """float32 -> bfloat16 bit patterns, round to nearest even (as torch does)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


ELEMENT_BYTES = {"F32": 4, "BF16": 2, "F8_E4M3": 1}


def e4m3_value(code):
    """The value of an OCP FP8 E4M3 ("fn") code below 0x7f: bias 7, subnormals, no infinities."""
    exponent, mantissa = code >> 3, code & 7
    if exponent == 0:
        return mantissa / 8.0 * 2.0 ** -6
    return (1.0 + mantissa / 8.0) * 2.0 ** (exponent - 7)


E4M3_MAGNITUDES = np.array([e4m3_value(code) for code in range(0x7F)])  # rising; 0x7f is NaN
E4M3_MAX = 448.0


def to_e4m3_codes(x):
    """float -> E4M3 codes, round to nearest even, as torch's cast to float8_e4m3fn (|x| <= 448)."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    assert a.max(initial=0.0) <= E4M3_MAX
    hi = np.minimum(np.searchsorted(E4M3_MAGNITUDES, a, side="left"), 0x7E)
    lo = np.maximum(hi - 1, 0)
    below, above = a - E4M3_MAGNITUDES[lo], E4M3_MAGNITUDES[hi] - a
    code = np.where(below < above, lo, np.where(above < below, hi, np.where(lo % 2 == 0, lo, hi)))
    code = np.where(a == E4M3_MAGNITUDES[hi], hi, code)
    return (code | np.where(np.signbit(x), 0x80, 0)).astype(np.uint8)


def quantize_fp8_blocks(w, block):
    """A weight as a fine-grained FP8 checkpoint stores it (DeepSeek-V3's and transformers'
    FineGrainedFP8 quantizer): per block of block[0] x block[1] elements, scale = amax / 448,
    codes = e4m3(w / scale); the scale is the multiplier kept as `<name>_scale_inv`."""
    rows, cols = w.shape
    grid = (-(-rows // block[0]), -(-cols // block[1]))
    scales = np.ones(grid, dtype=np.float32)
    codes = np.zeros(w.shape, dtype=np.uint8)
    for i in range(grid[0]):
        for j in range(grid[1]):
            r, c = slice(i * block[0], (i + 1) * block[0]), slice(j * block[1], (j + 1) * block[1])
            amax = np.float32(np.abs(w[r, c]).max())
            scale = amax / np.float32(E4M3_MAX) if amax > 0 else np.float32(1.0)
            scales[i, j] = scale
            codes[r, c] = to_e4m3_codes(np.clip(w[r, c].astype(np.float32) / scale, -E4M3_MAX, E4M3_MAX))
    return codes, scales


class SafetensorsWriter:
    """Writes one safetensors file: u64 header length, JSON header padded to 8 bytes, raw data.
    dtype is "F32" or "BF16" for every tensor, or a dict giving each tensor's."""

    def __init__(self, path, names_shapes, dtype):
        self.path = path
        self.dtypes = dtype if isinstance(dtype, dict) else {name: dtype for name in names_shapes}
        header = {"__metadata__": {"format": "pt"}}
        offset = 0
        self.order = sorted(names_shapes)
        self.expected = {}
        for name in self.order:
            shape = names_shapes[name]
            nbytes = int(np.prod(shape)) * ELEMENT_BYTES[self.dtypes[name]]
            header[name] = {"dtype": self.dtypes[name], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self.expected[name] = (tuple(shape), offset)
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * ((8 - len(raw) % 8) % 8)
        self.file = open(path, "wb")
        self.file.write(struct.pack("<Q", len(raw)))
        self.file.write(raw)
        self.data_start = 8 + len(raw)
        self.next = 0

    def dtype_of(self, name):
        return self.dtypes[name]

    def write(self, name, array):
        shape, offset = self.expected[name]
        assert self.order[self.next] == name and tuple(array.shape) == shape
        assert self.file.tell() == self.data_start + offset
        if self.dtypes[name] == "F32":
            self.file.write(np.ascontiguousarray(array, dtype="<f4").tobytes())
        elif self.dtypes[name] == "F8_E4M3":
            assert array.dtype == np.uint8
            self.file.write(np.ascontiguousarray(array).tobytes())
        else:
            self.file.write(to_bf16_bits(array).astype("<u2").tobytes())
        self.next += 1

    def close(self):
        assert self.next == len(self.order)
        self.file.close()


def tensor_shapes(c):
    head_dim = c["hidden"] // c["heads"]
    shapes = {"model.embed_tokens.weight": (c["vocab"], c["hidden"]),
              "model.norm.weight": (c["hidden"],),
              "lm_head.weight": (c["vocab"], c["hidden"])}
    for l in range(c["layers"]):
        p = "model.layers.%d." % l
        shapes[p + "input_layernorm.weight"] = (c["hidden"],)
        shapes[p + "post_attention_layernorm.weight"] = (c["hidden"],)
        shapes[p + "self_attn.q_proj.weight"] = (c["heads"] * head_dim, c["hidden"])
        shapes[p + "self_attn.k_proj.weight"] = (c["kv_heads"] * head_dim, c["hidden"])
        shapes[p + "self_attn.v_proj.weight"] = (c["kv_heads"] * head_dim, c["hidden"])
        shapes[p + "self_attn.o_proj.weight"] = (c["hidden"], c["heads"] * head_dim)
        shapes[p + "block_sparse_moe.gate.weight"] = (c["experts"], c["hidden"])
        for e in range(c["experts"]):
            q = p + "block_sparse_moe.experts.%d." % e
            shapes[q + "w1.weight"] = (c["ffn"], c["hidden"])
            shapes[q + "w3.weight"] = (c["ffn"], c["hidden"])
            shapes[q + "w2.weight"] = (c["hidden"], c["ffn"])
    return shapes


def make_tensor(name, shape, rng):
    if name.endswith("norm.weight"):
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if name == "model.embed_tokens.weight":
        return rng.standard_normal(shape, dtype=np.float32)
    scale = 1.0 / np.sqrt(shape[1])
    if name.endswith("gate.weight"):
        scale *= 4.0  # a decisive router, so top-k choices are not near ties
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)


# ---------------------------------------------------------------------------------------------
# Other MoE families, each in the exact layout transformers reads and writes for a released
# checkpoint: config.json as save_pretrained writes it (sorted keys, indent 2), per-expert tensor
# names, the family's tokenizer.json shape, tokenizer_config.json with its published chat template,
# and generation_config.json.

FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3"]

# The version whose save_pretrained the config.json files imitate: the last one that wrote
# "torch_dtype" and kept rope_theta / rope_scaling as top-level keys.
TRANSFORMERS_VERSION = "4.53.3"

# Qwen1.5-MoE-A2.7B-Chat's template (as in make-chat-golden.py's "qwen1.5-moe-chat").
QWEN15_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen3's template (Qwen3-30B-A3B ships the same one as Qwen3-8B): tools, <think> handling and the
# enable_thinking switch.
QWEN3_CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for index in range(ns.last_query_index, -1, -1) %}
    {%- set message = messages[index] %}
    {%- if ns.multi_step_tool and message.role == "user" and not('<tool_response>' in message.content and '</tool_response>' in message.content) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in message.content %}
                {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}
                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

# DeepSeek-V2-Lite-Chat's template (as in make-chat-golden.py's "deepseek-v2-lite-chat").
DEEPSEEK_V2_CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# DeepSeek-R1's template (an architecture-deepseek_v3 checkpoint): tool calls, tool outputs, the
# stripping of reasoning from past turns, and the <think> generation prompt.
DEEPSEEK_V3_CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}"
    "{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}"
    "{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}"
    "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + "
    "tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + "
    "'<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}{{'\\n' + '<｜tool▁call▁begin｜>' + "
    "tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + "
    "tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}"
    "{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}"
    "{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
    "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
    "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- set ns.is_output_first = false %}{%- else %}"
    "{{'\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}"
    "{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)

# Qwen2's pre-tokenizer regex (tokenization_qwen2.py PRETOKENIZE_REGEX; single digits).
QWEN2_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                       r"\s*[\r\n]+|\s+(?!\S)|\s+")
# DeepSeek-V3's three Splits, in its tokenizer.json's order.
DEEPSEEK_V3_SPLIT_PATTERNS = [
    r"\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|"""
    r"\s*[\r\n]+|\s+(?!\S)|\s+",
]
# DeepSeek-LLM / V2's Splits (before its Digits step), as llama.cpp copies them from tokenizer.json.
# The letter class holds compatibility characters (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A)
# that Unicode normalization replaces; copies passed through NFC end up with out-of-order ranges
# (U+1F5F-U+03CE) that no regex engine compiles, so keep these code points as they are.
DEEPSEEK_V2_SPLIT_PATTERNS = [
    r"[\r\n]",
    r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
    r"\s+$",
    "[一-龥ࠀ-一가-퟿]+",
]


def split_step(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


def byte_level_step(add_prefix_space, trim_offsets, use_regex):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets,
            "use_regex": use_regex}


def byte_level_bpe(vocab_size, rng):
    """A byte-level BPE vocabulary (256 byte symbols first) and its merges, trained on CORPUS."""
    b2u = bytes_to_unicode()
    base = {b2u[b]: b for b in range(256)}
    words = [("Ġ" if i else "") + "".join(b2u[c] for c in w.encode("utf-8")) for i, w in enumerate(CORPUS.split())]
    return train_bpe(words, base, vocab_size, rng)


def bos_post_processor(bos, bos_id):
    """TemplateProcessing that prepends BOS (DeepSeek-V2's tokenizer.json as this script writes it;
    transformers' LlamaTokenizerFast rebuilds the same from add_bos_token whatever the file has)."""
    return {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}


# Each family's added tokens, in id order after the BPE vocabulary: (content, special). The names
# are the released tokenizers'; the tiny vocabularies place them after their own BPE pieces.
FAMILY_SPECIALS = {
    "qwen2_moe": [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True)],
    "qwen3_moe": [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
                  ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
                  ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
                  ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
                  ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
                  ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
                  ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
                  ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
                  ("<think>", False), ("</think>", False)],
    "olmoe": [("<|padding|>", True), ("<|endoftext|>", True)],
    "deepseek_v2": [("<｜begin▁of▁sentence｜>", True), ("<｜end▁of▁sentence｜>", True)],
    "deepseek_v3": [("<｜begin▁of▁sentence｜>", True), ("<｜end▁of▁sentence｜>", True), ("<｜▁pad▁｜>", True),
                    ("<｜User｜>", False), ("<｜Assistant｜>", False), ("<think>", False), ("</think>", False),
                    ("<｜tool▁calls▁begin｜>", False), ("<｜tool▁calls▁end｜>", False),
                    ("<｜tool▁call▁begin｜>", False), ("<｜tool▁call▁end｜>", False),
                    ("<｜tool▁outputs▁begin｜>", False), ("<｜tool▁outputs▁end｜>", False),
                    ("<｜tool▁output▁begin｜>", False), ("<｜tool▁output▁end｜>", False), ("<｜tool▁sep｜>", False)],
}


def family_tokenizer(family, tokenizer_size, rng):
    """tokenizer.json, tokenizer_config.json and the special ids, in the family's published shape.
    tokenizer_size counts the BPE vocabulary plus the added tokens; the config's vocab_size may be
    larger (the released Qwen and OLMoE embeddings are padded past their tokenizers)."""
    specials = FAMILY_SPECIALS[family]
    vocab, merges = byte_level_bpe(tokenizer_size - len(specials), rng)
    added = []
    for content, special in specials:
        vocab[content] = len(vocab)
        entry = added_token(vocab[content], content)
        entry["special"] = special
        added.append(entry)
    ids = {content: vocab[content] for content, _ in specials}
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
             "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
             "vocab": vocab, "merges": [[a, b] for a, b in merges]}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added}
    added_decoder = {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word",
                                                        "special")} for t in added}
    if family in ("qwen2_moe", "qwen3_moe"):
        tok["normalizer"] = {"type": "NFC"}
        tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            split_step(QWEN2_SPLIT_PATTERN), byte_level_step(False, False, False)]}
        tok["post_processor"] = byte_level_step(False, False, False)
        tok["decoder"] = byte_level_step(False, False, False)
        chat = QWEN15_CHAT_TEMPLATE if family == "qwen2_moe" else QWEN3_CHAT_TEMPLATE
        eos = "<|im_end|>"
        config = {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added_decoder,
                  "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None,
                  "chat_template": chat, "clean_up_tokenization_spaces": False, "eos_token": eos,
                  "errors": "replace", "extra_special_tokens": {}, "model_max_length": 32768 if family == "qwen2_moe" else 131072,
                  "pad_token": "<|endoftext|>", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
                  "unk_token": None}
        special_ids = {"bos": ids["<|endoftext|>"], "eos": ids["<|im_end|>"], "pad": ids["<|endoftext|>"],
                       "base_eos": ids["<|endoftext|>"]}
    elif family == "olmoe":
        tok["normalizer"] = {"type": "NFC"}
        tok["pre_tokenizer"] = byte_level_step(False, True, True)
        tok["post_processor"] = byte_level_step(False, True, True)
        tok["decoder"] = byte_level_step(False, True, True)
        eos = "<|endoftext|>"
        config = {"add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
                  "added_tokens_decoder": added_decoder, "bos_token": eos, "chat_template": BYTE_LEVEL_CHAT_TEMPLATE,
                  "clean_up_tokenization_spaces": True, "eos_token": eos, "extra_special_tokens": {},
                  "model_max_length": 1000000000000000019884624838656, "pad_token": "<|padding|>",
                  "tokenizer_class": "GPTNeoXTokenizer", "unk_token": eos}
        special_ids = {"bos": None, "eos": ids[eos], "pad": ids["<|padding|>"]}
    else:
        patterns = DEEPSEEK_V3_SPLIT_PATTERNS if family == "deepseek_v3" else DEEPSEEK_V2_SPLIT_PATTERNS
        steps = [split_step(p) for p in patterns]
        if family == "deepseek_v2":
            steps.append({"type": "Digits", "individual_digits": True})
        steps.append(byte_level_step(False, True, False))
        bos, eos = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
        # DeepSeek-V3's tokenizer.json has an empty Sequence normalizer; V2's is taken to be null.
        tok["normalizer"] = {"type": "Sequence", "normalizers": []} if family == "deepseek_v3" else None
        tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": steps}
        # DeepSeek-V3's published tokenizer.json has a ByteLevel post-processor: its BOS comes
        # from tokenizer_config.json's add_bos_token, which LlamaTokenizerFast applies.
        tok["post_processor"] = (byte_level_step(True, False, True) if family == "deepseek_v3"
                                 else bos_post_processor(bos, ids[bos]))
        tok["decoder"] = byte_level_step(True, True, True)
        chat = DEEPSEEK_V3_CHAT_TEMPLATE if family == "deepseek_v3" else DEEPSEEK_V2_CHAT_TEMPLATE
        # V3's published tokenizer_config.json writes its special tokens as AddedToken objects.
        def added(content):
            return content if family == "deepseek_v2" else {
                "__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}
        config = {"add_bos_token": True, "add_eos_token": False, "bos_token": added(bos),
                  "chat_template": chat, "clean_up_tokenization_spaces": False,
                  "eos_token": added(eos), "legacy": True,
                  "model_max_length": 131072 if family == "deepseek_v3" else 16384,
                  "pad_token": "<｜▁pad▁｜>" if family == "deepseek_v3" else eos, "sp_model_kwargs": {},
                  "tokenizer_class": "LlamaTokenizerFast", "unk_token": None, "use_default_system_prompt": False}
        special_ids = {"bos": ids[bos], "eos": ids[eos],
                       "pad": ids["<｜▁pad▁｜>"] if family == "deepseek_v3" else ids[eos]}
    tok["model"] = model
    return tok, config, special_ids


# Per family and size: the hyper-parameters that differ from the family's released config. Tiny
# exercises every feature the engine must get right; bench is for decode speed: hidden 2048 and the
# families' own expert widths (Qwen1.5-MoE 1408, Qwen3-30B-A3B 768, DeepSeek-V2-Lite 1408, ...),
# fewer experts and layers, 1.2-1.7 GB in bf16, so a decode step is dominated by weight bytes. Seed
# is the smallest file with every tensor and key of the family, for the fuzzers' seed corpus.
FAMILY_SIZES = {
    "qwen2_moe": {
        # decoder_sparse_step 2 makes layers 0 and 2 dense; the shared expert is gated by a sigmoid;
        # top-k probabilities are not renormalised.
        "tiny": dict(vocab_size=512, tokenizer_size=506, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, intermediate_size=256, moe_intermediate_size=64,
                     shared_expert_intermediate_size=192, num_experts=8, num_experts_per_tok=3,
                     decoder_sparse_step=2, mlp_only_layers=[], norm_topk_prob=False),
        "bench": dict(vocab_size=16000, tokenizer_size=15990, hidden_size=2048, num_hidden_layers=4,
                      num_attention_heads=16, num_key_value_heads=16, intermediate_size=5632,
                      moe_intermediate_size=1408, shared_expert_intermediate_size=5632, num_experts=16,
                      num_experts_per_tok=4, decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=False),
        "seed": dict(vocab_size=288, tokenizer_size=282, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, intermediate_size=32, moe_intermediate_size=32,
                     shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                     decoder_sparse_step=2, mlp_only_layers=[], norm_topk_prob=False)
    },
    "qwen3_moe": {
        # head_dim 48 != 128 / 4; layer 1 is dense through mlp_only_layers.
        "tiny": dict(vocab_size=512, tokenizer_size=500, hidden_size=128, num_hidden_layers=3, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=48, intermediate_size=256, moe_intermediate_size=64,
                     num_experts=8, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[1],
                     norm_topk_prob=True),
        "bench": dict(vocab_size=16000, tokenizer_size=15990, hidden_size=2048, num_hidden_layers=4,
                      num_attention_heads=32, num_key_value_heads=4, head_dim=128, intermediate_size=6144,
                      moe_intermediate_size=768, num_experts=32, num_experts_per_tok=8, decoder_sparse_step=1,
                      mlp_only_layers=[], norm_topk_prob=True),
        "seed": dict(vocab_size=288, tokenizer_size=282, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=32, intermediate_size=32, moe_intermediate_size=32,
                     num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[0],
                     norm_topk_prob=True)
    },
    "olmoe": {
        # q_norm / k_norm over the whole projections; top-k probabilities not renormalised.
        "tiny": dict(vocab_size=512, tokenizer_size=500, hidden_size=128, num_hidden_layers=3, num_attention_heads=4,
                     num_key_value_heads=4, intermediate_size=64, num_experts=8, num_experts_per_tok=3,
                     norm_topk_prob=False),
        "bench": dict(vocab_size=16000, tokenizer_size=15990, hidden_size=2048, num_hidden_layers=4,
                      num_attention_heads=16, num_key_value_heads=16, intermediate_size=1024, num_experts=24,
                      num_experts_per_tok=8, norm_topk_prob=False),
        "seed": dict(vocab_size=288, tokenizer_size=282, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=2, intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                     norm_topk_prob=False)
    },
    "deepseek_v2": {
        # V2-Lite's shape: q_proj (no q LoRA), softmax scoring, greedy top-k, one group, YaRN.
        "tiny": dict(vocab_size=512, tokenizer_size=512, hidden_size=128, num_hidden_layers=3, num_attention_heads=4,
                     kv_lora_rank=32, q_lora_rank=None, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                     intermediate_size=256, moe_intermediate_size=32, n_routed_experts=8, n_shared_experts=2,
                     num_experts_per_tok=3, first_k_dense_replace=1, n_group=1, topk_group=1),
        "bench": dict(vocab_size=16000, tokenizer_size=16000, hidden_size=2048, num_hidden_layers=4,
                      num_attention_heads=16, kv_lora_rank=512, q_lora_rank=None, qk_nope_head_dim=128,
                      qk_rope_head_dim=64, v_head_dim=128, intermediate_size=5632, moe_intermediate_size=1408,
                      n_routed_experts=24, n_shared_experts=2, num_experts_per_tok=6, first_k_dense_replace=1,
                      n_group=1, topk_group=1),
        "seed": dict(vocab_size=288, tokenizer_size=288, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     kv_lora_rank=32, q_lora_rank=None, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                     intermediate_size=32, moe_intermediate_size=32, n_routed_experts=4, n_shared_experts=1,
                     num_experts_per_tok=2, first_k_dense_replace=1, n_group=1, topk_group=1)
    },
    "deepseek_v3": {
        # q LoRA, sigmoid scoring with a selection-only bias, 4 groups of which 2 are kept, a shared
        # expert, routed_scaling_factor 2.5, YaRN; layer 0 dense.
        "tiny": dict(vocab_size=512, tokenizer_size=512, hidden_size=128, num_hidden_layers=3, num_attention_heads=4,
                     kv_lora_rank=32, q_lora_rank=48, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                     intermediate_size=256, moe_intermediate_size=32, n_routed_experts=16, n_shared_experts=1,
                     num_experts_per_tok=4, first_k_dense_replace=1, n_group=4, topk_group=2),
        "bench": dict(vocab_size=16000, tokenizer_size=16000, hidden_size=2048, num_hidden_layers=4,
                      num_attention_heads=16, kv_lora_rank=512, q_lora_rank=768, qk_nope_head_dim=128,
                      qk_rope_head_dim=64, v_head_dim=128, intermediate_size=5632, moe_intermediate_size=1024,
                      n_routed_experts=32, n_shared_experts=1, num_experts_per_tok=8, first_k_dense_replace=1,
                      n_group=8, topk_group=4),
        "seed": dict(vocab_size=288, tokenizer_size=288, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     kv_lora_rank=32, q_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                     intermediate_size=32, moe_intermediate_size=32, n_routed_experts=4, n_shared_experts=1,
                     num_experts_per_tok=2, first_k_dense_replace=1, n_group=2, topk_group=1)
    },
}


def yarn_rope_scaling(mscale):
    """rope_scaling as DeepSeek's config.json ships it (V2-Lite: mscale 0.707, V3: 1.0)."""
    return {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": mscale, "mscale_all_dim": mscale,
            "original_max_position_embeddings": 4096, "type": "yarn"}


def family_config(family, s, ids, torch_dtype, tie):
    """config.json: every attribute of the family's config class (plus the keys the released
    checkpoints carry that the class keeps as extra attributes), as save_pretrained writes it."""
    common = {"attention_dropout": 0.0, "hidden_act": "silu", "hidden_size": s["hidden_size"],
              "initializer_range": 0.02, "intermediate_size": s["intermediate_size"], "model_type": family,
              "num_attention_heads": s["num_attention_heads"], "num_hidden_layers": s["num_hidden_layers"],
              "tie_word_embeddings": tie, "torch_dtype": torch_dtype, "transformers_version": TRANSFORMERS_VERSION,
              "use_cache": True, "vocab_size": s["vocab_size"], "rope_scaling": None}
    if family in ("qwen2_moe", "qwen3_moe"):
        c = dict(common, bos_token_id=ids["bos"], eos_token_id=ids["eos"] if family == "qwen3_moe" else ids["base_eos"],
                 decoder_sparse_step=s["decoder_sparse_step"], max_position_embeddings=32768 if family == "qwen2_moe" else 40960,
                 max_window_layers=s["num_hidden_layers"], mlp_only_layers=s["mlp_only_layers"],
                 moe_intermediate_size=s["moe_intermediate_size"], norm_topk_prob=s["norm_topk_prob"],
                 num_experts=s["num_experts"], num_experts_per_tok=s["num_experts_per_tok"],
                 num_key_value_heads=s["num_key_value_heads"], output_router_logits=False, rms_norm_eps=1e-06,
                 rope_theta=1000000.0, router_aux_loss_coef=0.001, sliding_window=None, use_sliding_window=False)
        if family == "qwen2_moe":
            c.update(architectures=["Qwen2MoeForCausalLM"], qkv_bias=True,
                     shared_expert_intermediate_size=s["shared_expert_intermediate_size"])
        else:
            c.update(architectures=["Qwen3MoeForCausalLM"], attention_bias=False, head_dim=s["head_dim"])
        return c
    if family == "olmoe":
        return dict(common, architectures=["OlmoeForCausalLM"], attention_bias=False, clip_qkv=None,
                    eos_token_id=ids["eos"], pad_token_id=ids["pad"], max_position_embeddings=4096,
                    norm_topk_prob=s["norm_topk_prob"], num_experts=s["num_experts"],
                    num_experts_per_tok=s["num_experts_per_tok"], num_key_value_heads=s["num_key_value_heads"],
                    output_router_logits=False, rms_norm_eps=1e-05, rope_theta=10000.0, router_aux_loss_coef=0.01)
    v3 = family == "deepseek_v3"
    c = dict(common, architectures=["DeepseekV3ForCausalLM" if v3 else "DeepseekV2ForCausalLM"],
             attention_bias=False, aux_loss_alpha=0.001, bos_token_id=ids["bos"], eos_token_id=ids["eos"],
             ep_size=1, first_k_dense_replace=s["first_k_dense_replace"], head_dim=s["qk_rope_head_dim"],
             kv_lora_rank=s["kv_lora_rank"], max_position_embeddings=163840,
             moe_intermediate_size=s["moe_intermediate_size"], moe_layer_freq=1, n_group=s["n_group"],
             n_routed_experts=s["n_routed_experts"], n_shared_experts=s["n_shared_experts"],
             num_experts_per_tok=s["num_experts_per_tok"], num_key_value_heads=s["num_attention_heads"],
             pretraining_tp=1, q_lora_rank=s["q_lora_rank"], qk_head_dim=s["qk_nope_head_dim"] + s["qk_rope_head_dim"],
             qk_nope_head_dim=s["qk_nope_head_dim"], qk_rope_head_dim=s["qk_rope_head_dim"], rms_norm_eps=1e-06,
             rope_scaling=yarn_rope_scaling(1.0 if v3 else 0.707), rope_theta=10000.0, seq_aux=True,
             topk_group=s["topk_group"], v_head_dim=s["v_head_dim"])
    if v3:
        c.update(norm_topk_prob=True, num_nextn_predict_layers=0, rope_interleave=True, routed_scaling_factor=2.5,
                 scoring_func="sigmoid", topk_method="noaux_tc")
    else:
        c.update(mlp_bias=False, norm_topk_prob=False, routed_scaling_factor=1.0, scoring_func="softmax",
                 topk_method="greedy")
    return c


def generation_config(family, ids):
    if family == "qwen2_moe":
        return {"bos_token_id": ids["bos"], "do_sample": True, "eos_token_id": [ids["eos"], ids["base_eos"]],
                "pad_token_id": ids["pad"], "repetition_penalty": 1.05, "temperature": 0.7, "top_k": 20,
                "top_p": 0.8, "transformers_version": TRANSFORMERS_VERSION}
    if family == "qwen3_moe":
        return {"bos_token_id": ids["bos"], "do_sample": True, "eos_token_id": [ids["eos"], ids["base_eos"]],
                "pad_token_id": ids["pad"], "temperature": 0.6, "top_k": 20, "top_p": 0.95,
                "transformers_version": TRANSFORMERS_VERSION}
    if family == "olmoe":
        return {"eos_token_id": ids["eos"], "pad_token_id": ids["pad"], "transformers_version": TRANSFORMERS_VERSION}
    return {"_from_model_config": True, "bos_token_id": ids["bos"], "do_sample": True, "eos_token_id": ids["eos"],
            "temperature": 0.6 if family == "deepseek_v3" else 0.3, "top_p": 0.95,
            "transformers_version": TRANSFORMERS_VERSION}


def family_tensor_shapes(family, c):
    """name -> shape for every tensor of a released checkpoint of the family (per-expert layout)."""
    H, V, nh = c["hidden_size"], c["vocab_size"], c["num_attention_heads"]
    shapes = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H)}

    def mlp(prefix, width):
        shapes[prefix + "gate_proj.weight"] = (width, H)
        shapes[prefix + "up_proj.weight"] = (width, H)
        shapes[prefix + "down_proj.weight"] = (H, width)

    for l in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % l
        shapes[p + "input_layernorm.weight"] = (H,)
        shapes[p + "post_attention_layernorm.weight"] = (H,)
        a = p + "self_attn."
        if family.startswith("deepseek"):
            qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
            if c["q_lora_rank"] is None:
                shapes[a + "q_proj.weight"] = (nh * qk, H)
            else:
                shapes[a + "q_a_proj.weight"] = (c["q_lora_rank"], H)
                shapes[a + "q_a_layernorm.weight"] = (c["q_lora_rank"],)
                shapes[a + "q_b_proj.weight"] = (nh * qk, c["q_lora_rank"])
            shapes[a + "kv_a_proj_with_mqa.weight"] = (c["kv_lora_rank"] + c["qk_rope_head_dim"], H)
            shapes[a + "kv_a_layernorm.weight"] = (c["kv_lora_rank"],)
            shapes[a + "kv_b_proj.weight"] = (nh * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
            shapes[a + "o_proj.weight"] = (H, nh * c["v_head_dim"])
            moe = l >= c["first_k_dense_replace"]
            experts, width = c["n_routed_experts"], c["moe_intermediate_size"]
        else:
            nkv = c["num_key_value_heads"]
            hd = c.get("head_dim") or H // nh
            shapes[a + "q_proj.weight"] = (nh * hd, H)
            shapes[a + "k_proj.weight"] = (nkv * hd, H)
            shapes[a + "v_proj.weight"] = (nkv * hd, H)
            shapes[a + "o_proj.weight"] = (H, nh * hd)
            if family == "qwen2_moe":
                shapes[a + "q_proj.bias"] = (nh * hd,)
                shapes[a + "k_proj.bias"] = (nkv * hd,)
                shapes[a + "v_proj.bias"] = (nkv * hd,)
            elif family == "qwen3_moe":
                shapes[a + "q_norm.weight"] = (hd,)
                shapes[a + "k_norm.weight"] = (hd,)
            else:
                shapes[a + "q_norm.weight"] = (nh * hd,)
                shapes[a + "k_norm.weight"] = (nkv * hd,)
            experts = c["num_experts"]
            if family == "olmoe":
                moe, width = True, c["intermediate_size"]
            else:
                moe = l not in c["mlp_only_layers"] and experts > 0 and (l + 1) % c["decoder_sparse_step"] == 0
                width = c["moe_intermediate_size"]
        if not moe:
            mlp(p + "mlp.", c["intermediate_size"])
            continue
        shapes[p + "mlp.gate.weight"] = (experts, H)
        for e in range(experts):
            mlp(p + "mlp.experts.%d." % e, width)
        if family == "qwen2_moe":
            mlp(p + "mlp.shared_expert.", c["shared_expert_intermediate_size"])
            shapes[p + "mlp.shared_expert_gate.weight"] = (1, H)
        elif family.startswith("deepseek"):
            mlp(p + "mlp.shared_experts.", width * c["n_shared_experts"])
            if family == "deepseek_v3":
                shapes[p + "mlp.gate.e_score_correction_bias"] = (experts,)
    return shapes


def make_family_tensor(family, name, shape, rng):
    """Random weights scaled so activations stay O(1) and the routers decide clearly."""
    if name.endswith("norm.weight"):
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if name == "model.embed_tokens.weight":
        return rng.standard_normal(shape, dtype=np.float32)
    if name.endswith("e_score_correction_bias"):
        # Selection-only bias: large enough to change some top-k choices, as trained biases do.
        return (0.15 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if name.endswith("_proj.bias"):
        return (0.2 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    scale = 1.0 / np.sqrt(shape[1])
    if name.endswith("mlp.gate.weight"):
        # A decisive router. DeepSeek-V3 scores with a sigmoid, which saturates, so its logits
        # stay smaller than the softmax routers'.
        scale *= 2.0 if family == "deepseek_v3" else 4.0
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)


def write_json(path, obj, sort_keys):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=sort_keys) + "\n")


def make_family_model(args):
    """Writes a model of args.family (not mixtral) under args.out."""
    s = dict(FAMILY_SIZES[args.family][args.size])
    if args.layers is not None:
        s["num_hidden_layers"] = args.layers
    if args.all_moe:
        for key, every_layer in (("decoder_sparse_step", 1), ("mlp_only_layers", []), ("first_k_dense_replace", 0)):
            if key in s:
                s[key] = every_layer
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    tok_rng = np.random.default_rng(args.seed + 1)
    tok, tok_config, ids = family_tokenizer(args.family, s["tokenizer_size"], tok_rng)
    write_json(os.path.join(args.out, "tokenizer.json"), tok, sort_keys=False)
    write_json(os.path.join(args.out, "tokenizer_config.json"), tok_config, sort_keys=False)
    write_json(os.path.join(args.out, "generation_config.json"), generation_config(args.family, ids), sort_keys=True)
    torch_dtype = "float32" if args.dtype == "f32" else "bfloat16"
    config = family_config(args.family, s, ids, torch_dtype, bool(args.tie_embeddings))
    if args.dtype == "fp8":
        # As the released FP8 checkpoints' config.json says it (DeepSeek-V3, Qwen3-*-FP8).
        config["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                         "weight_block_size": list(args.fp8_block)}
    write_json(os.path.join(args.out, "config.json"), config, sort_keys=True)

    shapes = family_tensor_shapes(args.family, config)
    if args.tie_embeddings:
        del shapes["lm_head.weight"]
    weight_dtype = "F32" if args.dtype == "f32" else "BF16"
    # The released DeepSeek-V3 keeps the correction bias in float32 whatever the weights' type
    # (transformers keeps it there too: _keep_in_fp32_modules_strict).
    dtypes = {n: "F32" if n.endswith("e_score_correction_bias") else weight_dtype for n in shapes}
    make = lambda name: make_family_tensor(args.family, name, shapes[name], rng)  # noqa: E731
    if args.dtype == "fp8":
        shapes, dtypes, make = fp8_tensors(shapes, dtypes, make, args.fp8_block, args.fp8_scale_dtype)
    elif args.dtype == "fp8-cast":
        make = fp8_cast_tensors(make, args.fp8_block, args.fp8_scale_dtype)
    write_safetensors(args.out, shapes, dtypes, args.shards, make)
    params = {"experts": 0, "total": 0}
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        params["total"] += n
        if ".mlp.experts." in name:
            params["experts"] += n
    print("make-tiny-model: %s %s: %d parameters, %.0f%% in routed experts" % (
        args.family, args.size, params["total"], 100.0 * params["experts"] / params["total"]), file=sys.stderr)


# The projections the released FP8 checkpoints store in FP8: every attention and MLP Linear,
# routed and shared experts alike; not the embedding, norms, routers (mlp.gate), biases or lm_head.
FP8_LINEAR = re.compile(r".*_proj(_with_mqa)?\.weight$")


def fp8_tensors(shapes, dtypes, make, block, scale_dtype):
    """The model's tensors with its projections in F8_E4M3 beside their `_scale_inv` tensors. A
    weight is made (from the same random stream as the bf16 model's) when its codes are written;
    its scales, which come next in name order, are kept until then and no longer."""
    shapes, dtypes = dict(shapes), dict(dtypes)
    for name in [n for n in shapes if FP8_LINEAR.match(n)]:
        rows, cols = shapes[name]
        shapes[name + "_scale_inv"] = (-(-rows // block[0]), -(-cols // block[1]))
        dtypes[name], dtypes[name + "_scale_inv"] = "F8_E4M3", scale_dtype
    pending_scales = {}

    def make_fp8(name):
        if name.endswith("_scale_inv"):
            return pending_scales.pop(name[:-len("_scale_inv")])
        if dtypes[name] == "F8_E4M3":
            codes, pending_scales[name] = quantize_fp8_blocks(make(name), block)
            return codes
        return make(name)
    return shapes, dtypes, make_fp8


def e4m3_values(codes):
    return np.where(codes & 0x80, -1.0, 1.0) * E4M3_MAGNITUDES[np.minimum(codes & 0x7F, 0x7E)]


def fp8_cast_tensors(make, block, scale_dtype):
    """The bf16 model DeepSeek's fp8_cast_bf16.py would write from the --dtype fp8 one (same seed
    and blocks): each projection's codes times its block scale in float32 (the scale as stored,
    in scale_dtype), written as bf16."""
    def make_cast(name):
        w = make(name)
        if not FP8_LINEAR.match(name):
            return w
        codes, scales = quantize_fp8_blocks(w, block)
        if scale_dtype == "BF16":
            scales = (to_bf16_bits(scales).astype(np.uint32) << 16).view(np.float32)
        rows, cols = w.shape
        per_element = np.repeat(np.repeat(scales, block[0], axis=0), block[1], axis=1)[:rows, :cols]
        return e4m3_values(codes).astype(np.float32) * per_element.astype(np.float32)
    return make_cast


def write_safetensors(out, shapes, dtypes, shards, make):
    """Writes the tensors (made in sorted-name order by make(name)) into shards files, with
    model.safetensors.index.json when there is more than one."""
    names = sorted(shapes)
    per_shard = -(-len(names) // shards)
    groups = [names[i:i + per_shard] for i in range(0, len(names), per_shard)]
    weight_map = {}
    total = 0
    for i, group in enumerate(groups):
        fname = "model.safetensors" if len(groups) == 1 else "model-%05d-of-%05d.safetensors" % (i + 1, len(groups))
        group_dtypes = dtypes if isinstance(dtypes, str) else {n: dtypes[n] for n in group}
        w = SafetensorsWriter(os.path.join(out, fname), {n: shapes[n] for n in group}, group_dtypes)
        for name in w.order:
            w.write(name, make(name))
            weight_map[name] = fname
            total += int(np.prod(shapes[name])) * ELEMENT_BYTES[w.dtype_of(name)]
        w.close()
        print("make-tiny-model: wrote %s (%d tensors)" % (fname, len(group)), file=sys.stderr)
    if len(groups) > 1:
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return total


GGUF_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
               "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq4_xs", "q4_k_m", "q5_k_m")


def write_gguf_files(args):
    """OUT-QUANT.gguf beside the HF directory for each quant, through scripts/hf-to-gguf.py."""
    converter = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf-to-gguf.py")
    prefix = os.path.normpath(args.out)
    for quant in args.quant:
        path = "%s-%s.gguf" % (prefix, quant)
        result = subprocess.run([sys.executable, converter, "--model", args.out, "--out", path, "--type", quant])
        if result.returncode:
            sys.exit("make-tiny-model: hf-to-gguf.py --type %s failed (exit %d)" % (quant, result.returncode))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--family", choices=FAMILIES, default="mixtral",
                    help="architecture, written as transformers writes its checkpoints (default mixtral)")
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--dtype", choices=["f32", "bf16", "fp8", "fp8-cast"], default="f32",
                    help="fp8: the projections in F8_E4M3 with block scales, as DeepSeek-V3 and Qwen3's FP8 "
                         "releases store them (families other than mixtral); fp8-cast: the bf16 model "
                         "fp8_cast_bf16.py would make of that one")
    ap.add_argument("--fp8-block", default="128,128",
                    help="with --dtype fp8: weight_block_size ROWS,COLS (default 128,128)")
    ap.add_argument("--fp8-scale-dtype", choices=["F32", "BF16"], default="F32",
                    help="with --dtype fp8: the scales' dtype (DeepSeek-V3: F32; some Qwen3 FP8 files: BF16)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--shards", type=int, default=1, help="number of safetensors shards (default 1)")
    ap.add_argument("--tokenizer", choices=["llama", "bytelevel"], default=None, help="mixtral only (default llama)")
    for key in SIZES["tiny"]:
        ap.add_argument("--" + key.replace("_", "-"), type=int, help="override the size's " + key)
    ap.add_argument("--rope-theta", type=float, default=None, help="mixtral only (default 1e6)")
    ap.add_argument("--tie-embeddings", action="store_true", help="tie lm_head to the embedding")
    ap.add_argument("--all-moe", action="store_true",
                    help="no dense layers (the families' tiny sizes have some; llama.cpp's qwen2moe and "
                         "qwen3moe cannot load them)")
    ap.add_argument("--format", choices=["hf", "gguf"], default="hf",
                    help="gguf: also write OUT-QUANT.gguf beside OUT for each --quant (default hf only)")
    ap.add_argument("--quant", default="f32",
                    help="with --format gguf: comma-separated GGUF types, of " + ", ".join(GGUF_QUANTS) + " (default f32)")
    args = ap.parse_args()
    if args.shards < 1:
        sys.exit("make-tiny-model: --shards must be >= 1")
    args.fp8_block = [int(v) for v in args.fp8_block.split(",")]
    if len(args.fp8_block) != 2 or min(args.fp8_block) < 1:
        sys.exit("make-tiny-model: --fp8-block %r: give ROWS,COLS" % args.fp8_block)
    if args.dtype.startswith("fp8") and args.family == "mixtral":
        sys.exit("make-tiny-model: --dtype fp8 applies to the other families, not mixtral")
    args.quant = [q for q in args.quant.split(",") if q]
    unknown = [q for q in args.quant if q not in GGUF_QUANTS]
    if unknown or not args.quant:
        sys.exit("make-tiny-model: --quant %r: give some of %s" % (",".join(unknown), ", ".join(GGUF_QUANTS)))
    make_hf_model(args)
    if args.format == "gguf":
        write_gguf_files(args)


def make_hf_model(args):
    if args.family != "mixtral":
        mixtral_only = [key for key in list(SIZES["tiny"]) + ["tokenizer", "rope_theta"]
                        if key != "layers" and getattr(args, key) is not None]
        if mixtral_only:
            sys.exit("make-tiny-model: --%s applies to --family mixtral only, not %s"
                     % (mixtral_only[0].replace("_", "-"), args.family))
        make_family_model(args)
        return
    if args.tokenizer is None:
        args.tokenizer = "llama"
    if args.rope_theta is None:
        args.rope_theta = 1e6

    c = dict(SIZES[args.size])
    for key in c:
        v = getattr(args, key)
        if v is not None:
            c[key] = v
    if c["hidden"] % c["heads"] or c["heads"] % c["kv_heads"] or c["top_k"] > c["experts"]:
        sys.exit("make-tiny-model: hidden must divide by heads, heads by kv_heads, top_k <= experts")
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    tok_rng = np.random.default_rng(args.seed + 1)

    make_tok = llama_tokenizer if args.tokenizer == "llama" else bytelevel_tokenizer
    tok, tok_config, ids = make_tok(c["vocab"], tok_rng)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=2)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tok_config, f, ensure_ascii=False, indent=2)

    dtype = "F32" if args.dtype == "f32" else "BF16"
    config = {
        "architectures": ["MixtralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "hidden_act": "silu",
        "hidden_size": c["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": c["ffn"],
        "max_position_embeddings": 4096,
        "model_type": "mixtral",
        "num_attention_heads": c["heads"],
        "num_experts_per_tok": c["top_k"],
        "num_hidden_layers": c["layers"],
        "num_key_value_heads": c["kv_heads"],
        "num_local_experts": c["experts"],
        "output_router_logits": False,
        "rms_norm_eps": 1e-05,
        "rope_theta": args.rope_theta,
        "router_aux_loss_coef": 0.02,
        "sliding_window": None,
        "tie_word_embeddings": bool(args.tie_embeddings),
        "torch_dtype": "float32" if dtype == "F32" else "bfloat16",
        "transformers_version": "4.36.0",
        "use_cache": True,
        "vocab_size": c["vocab"],
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    shapes = tensor_shapes(c)
    if args.tie_embeddings:
        del shapes["lm_head.weight"]
    total = write_safetensors(args.out, shapes, dtype, args.shards, lambda name: make_tensor(name, shapes[name], rng))
    print("make-tiny-model: %s model (%s, %.1f MB) in %s" % (args.size, args.dtype, total / 1e6, args.out), file=sys.stderr)

if __name__ == "__main__":
    main()
