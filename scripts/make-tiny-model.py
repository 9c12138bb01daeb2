#!/usr/bin/python3
"""Write a small Mixtral-architecture model in Hugging Face layout, from a seed.

The output is indistinguishable in format from a real checkpoint: config.json,
model.safetensors (or model-0000i-of-0000N.safetensors shards plus
model.safetensors.index.json), tokenizer.json and tokenizer_config.json.
Weights are random (numpy only); the tokenizer is a real BPE trained on a small
built-in text so that ordinary English encodes to multi-byte pieces.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

SIZES = {
    # name: vocab, hidden, layers, experts, top_k, ffn, heads, kv_heads
    "tiny": dict(vocab=512, hidden=256, layers=4, experts=8, top_k=2, ffn=512, heads=8, kv_heads=4),
    "bench": dict(vocab=32000, hidden=1024, layers=8, experts=8, top_k=2, ffn=2816, heads=8, kv_heads=4),
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


class SafetensorsWriter:
    """Writes one safetensors file: u64 header length, JSON header padded to 8 bytes, raw data."""

    def __init__(self, path, names_shapes, dtype):
        self.path = path
        self.dtype = dtype
        elem = 4 if dtype == "F32" else 2
        header = {"__metadata__": {"format": "pt"}}
        offset = 0
        self.order = sorted(names_shapes)
        self.expected = {}
        for name in self.order:
            shape = names_shapes[name]
            nbytes = int(np.prod(shape)) * elem
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self.expected[name] = (tuple(shape), offset)
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * ((8 - len(raw) % 8) % 8)
        self.file = open(path, "wb")
        self.file.write(struct.pack("<Q", len(raw)))
        self.file.write(raw)
        self.data_start = 8 + len(raw)
        self.next = 0

    def write(self, name, array):
        shape, offset = self.expected[name]
        assert self.order[self.next] == name and tuple(array.shape) == shape
        assert self.file.tell() == self.data_start + offset
        if self.dtype == "F32":
            self.file.write(np.ascontiguousarray(array, dtype="<f4").tobytes())
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--shards", type=int, default=1, help="number of safetensors shards (default 1)")
    ap.add_argument("--tokenizer", choices=["llama", "bytelevel"], default="llama")
    for key in SIZES["tiny"]:
        ap.add_argument("--" + key.replace("_", "-"), type=int, help="override the size's " + key)
    ap.add_argument("--rope-theta", type=float, default=1e6)
    ap.add_argument("--tie-embeddings", action="store_true", help="tie lm_head to the embedding")
    args = ap.parse_args()

    c = dict(SIZES[args.size])
    for key in c:
        v = getattr(args, key)
        if v is not None:
            c[key] = v
    if c["hidden"] % c["heads"] or c["heads"] % c["kv_heads"] or c["top_k"] > c["experts"]:
        sys.exit("make-tiny-model: hidden must divide by heads, heads by kv_heads, top_k <= experts")
    if args.shards < 1:
        sys.exit("make-tiny-model: --shards must be >= 1")
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
    names = sorted(shapes)
    per_shard = -(-len(names) // args.shards)
    groups = [names[i:i + per_shard] for i in range(0, len(names), per_shard)]
    elem = 4 if dtype == "F32" else 2
    weight_map = {}
    total = 0
    for i, group in enumerate(groups):
        fname = "model.safetensors" if len(groups) == 1 else "model-%05d-of-%05d.safetensors" % (i + 1, len(groups))
        w = SafetensorsWriter(os.path.join(args.out, fname), {n: shapes[n] for n in group}, dtype)
        for name in w.order:
            w.write(name, make_tensor(name, shapes[name], rng))
            weight_map[name] = fname
            total += int(np.prod(shapes[name])) * elem
        w.close()
        print("make-tiny-model: wrote %s (%d tensors)" % (fname, len(group)), file=sys.stderr)
    if len(groups) > 1:
        with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    print("make-tiny-model: %s model (%s, %.1f MB) in %s" % (args.size, args.dtype, total / 1e6, args.out), file=sys.stderr)


if __name__ == "__main__":
    main()
