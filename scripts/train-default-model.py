#!/usr/bin/python3
"""Train moed's default model: a small Mixtral-architecture MoE on the King James Bible.

The corpus is the KJV text of Debian's bible-kjv-text package (public domain), read with its
`bible` program. Six whole books are held out for evaluation only (HELD_OUT_BOOKS) and written
to heldout.txt beside the model. The script trains a byte-level BPE tokenizer (GPT-2 style, as
tokenizers' ByteLevel pre-tokenizer splits text) and the model with PyTorch on the CPU, and
writes, in exactly the Hugging Face layout:

  config.json  model.safetensors (bf16)  tokenizer.json  tokenizer_config.json
  generation_config.json  heldout.txt  eval.json  loss.png  LICENSE-corpus.txt

eval.json holds the golden the tests compare `moed perplexity` with: PyTorch's perplexity of
the saved bf16 checkpoint on heldout.txt, computed in float64 the way `moed perplexity` defines
it (non-overlapping windows of --eval-context tokens; every token but a window's first is scored
given the tokens before it in the window).

Training is seeded and reproducible on the same machine and thread count (float summation order
depends on the thread count). With the defaults it takes about an hour on two cores (59 min
here, 7.4M tokens at about 2,100 tokens/s): matrix products run in bfloat16 through oneDNN
(torch's CPU autocast; this torch's float32 BLAS is the slow generic one), the weights and the
optimizer stay float32.
"""
import argparse
import ctypes
import ctypes.util
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))

# bible(1)'s book abbreviations, in canonical order, and the names the corpus prints.
BOOKS = [
    ("Ge", "Genesis"), ("Exo", "Exodus"), ("Lev", "Leviticus"), ("Num", "Numbers"),
    ("Deu", "Deuteronomy"), ("Josh", "Joshua"), ("Jdgs", "Judges"), ("Ruth", "Ruth"),
    ("1Sm", "1 Samuel"), ("2Sm", "2 Samuel"), ("1Ki", "1 Kings"), ("2Ki", "2 Kings"),
    ("1Chr", "1 Chronicles"), ("2Chr", "2 Chronicles"), ("Ezra", "Ezra"), ("Neh", "Nehemiah"),
    ("Est", "Esther"), ("Job", "Job"), ("Psa", "Psalms"), ("Prv", "Proverbs"),
    ("Eccl", "Ecclesiastes"), ("SSol", "Song of Solomon"), ("Isa", "Isaiah"),
    ("Jer", "Jeremiah"), ("Lam", "Lamentations"), ("Eze", "Ezekiel"), ("Dan", "Daniel"),
    ("Hos", "Hosea"), ("Joel", "Joel"), ("Amos", "Amos"), ("Obad", "Obadiah"),
    ("Jonah", "Jonah"), ("Mic", "Micah"), ("Nahum", "Nahum"), ("Hab", "Habakkuk"),
    ("Zep", "Zephaniah"), ("Hag", "Haggai"), ("Zec", "Zechariah"), ("Mal", "Malachi"),
    ("Mat", "Matthew"), ("Mark", "Mark"), ("Luke", "Luke"), ("John", "John"), ("Acts", "Acts"),
    ("Rom", "Romans"), ("1Cor", "1 Corinthians"), ("2Cor", "2 Corinthians"),
    ("Gal", "Galatians"), ("Eph", "Ephesians"), ("Phi", "Philippians"), ("Col", "Colossians"),
    ("1Th", "1 Thessalonians"), ("2Th", "2 Thessalonians"), ("1Tim", "1 Timothy"),
    ("2Tim", "2 Timothy"), ("Titus", "Titus"), ("Phmn", "Philemon"), ("Heb", "Hebrews"),
    ("Jas", "James"), ("1Pet", "1 Peter"), ("2Pet", "2 Peter"), ("1Jn", "1 John"),
    ("2Jn", "2 John"), ("3Jn", "3 John"), ("Jude", "Jude"), ("Rev", "Revelation"),
]
# Narrative, wisdom, prophecy, gospel and epistle, so the held-out text is not one style.
HELD_OUT_BOOKS = ["Ruth", "Ecclesiastes", "Jonah", "Mark", "Philippians", "James"]

EOS = "<|endoftext|>"

# A plain-text template: the model is not instruction-tuned, so a conversation is rendered as
# paragraphs it can continue in the corpus' style.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' %}{{ message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + '\\n' }}"
    "{%- else %}{{ raise_exception('Only system, user and assistant roles are supported') }}"
    "{%- endif %}{%- endfor %}"
)

# GPT-2's pre-tokenizer pattern ('s|'t|... ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)
# for ASCII, which is all the KJV text is; Python's re has no \p classes.
GPT2_SPLIT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")


def log(msg):
    print("train-default-model: " + msg, file=sys.stderr, flush=True)


def load_tiny_model_module():
    spec = importlib.util.spec_from_file_location("make_tiny_model", os.path.join(HERE, "make-tiny-model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Its byte map, BPE merge step and safetensors writer.
TINY = load_tiny_model_module()


def read_corpus():
    """{book name: text}, one verse per line, each chapter headed by 'Book N' and a blank line."""
    if shutil.which("bible") is None:
        sys.exit("train-default-model: the `bible` program is missing (apt install bible-kjv bible-kjv-text)")
    out = subprocess.run(["bible", "-f", "-l", "100000", "Gen1:1-Rev22:21"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, check=True).stdout
    names = dict(BOOKS)
    verse = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")
    books, chapter_of = {}, {}
    for line in out.splitlines():
        if not line.strip():
            continue
        m = verse.match(line)
        if not m or m.group(1) not in names:
            sys.exit("train-default-model: unexpected line from bible(1): %r" % line[:80])
        name = names[m.group(1)]
        chapter = int(m.group(2))
        parts = books.setdefault(name, [])
        if chapter_of.get(name) != chapter:
            chapter_of[name] = chapter
            parts.append(("\n" if parts else "") + "%s %d\n\n" % (name, chapter))
        parts.append(m.group(4).strip() + "\n")
    if len(books) != len(BOOKS):
        sys.exit("train-default-model: bible(1) printed %d books, expected %d" % (len(books), len(BOOKS)))
    return {name: "".join(parts) for name, parts in books.items()}


class ByteLevelBPE:
    """Byte-level BPE trained on pre-token counts, with incremental pair counts."""

    def __init__(self, vocab, merges):
        self.vocab = vocab
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.merges = merges
        self.b2u = TINY.bytes_to_unicode()
        self.cache = {}

    @staticmethod
    def train(texts, vocab_size):
        b2u = TINY.bytes_to_unicode()
        counts = {}
        for text in texts:
            for piece in GPT2_SPLIT.findall(text):
                counts[piece] = counts.get(piece, 0) + 1
        words = [[b2u[b] for b in piece.encode("utf-8")] for piece in counts]
        freq = list(counts.values())
        vocab = {b2u[b]: b for b in range(256)}
        pair_count, pair_words = {}, {}

        def add_pairs(i, sign):
            w = words[i]
            for a, b in zip(w, w[1:]):
                pair_count[(a, b)] = pair_count.get((a, b), 0) + sign * freq[i]
                if sign > 0:
                    pair_words.setdefault((a, b), set()).add(i)

        for i in range(len(words)):
            add_pairs(i, 1)
        merges = []
        while len(vocab) < vocab_size - 1 and pair_count:
            best, count = min(pair_count.items(), key=lambda kv: (-kv[1], kv[0]))
            if count < 2:
                break
            merges.append(best)
            merged = best[0] + best[1]
            vocab[merged] = len(vocab)
            for i in sorted(pair_words.pop(best, ())):
                add_pairs(i, -1)
                words[i] = TINY.merge_pair(words[i], *best)
                add_pairs(i, 1)
            pair_count = {p: c for p, c in pair_count.items() if c > 0}
        vocab[EOS] = len(vocab)
        return ByteLevelBPE(vocab, merges)

    def encode_piece(self, piece):
        if piece in self.cache:
            return self.cache[piece]
        w = [self.b2u[b] for b in piece.encode("utf-8")]
        while len(w) > 1:
            ranked = [(self.ranks.get((a, b), math.inf), j) for j, (a, b) in enumerate(zip(w, w[1:]))]
            rank, _ = min(ranked)
            if rank == math.inf:
                break
            w = TINY.merge_pair(w, *self.merges[rank])
        ids = [self.vocab[s] for s in w]
        self.cache[piece] = ids
        return ids

    def encode(self, text):
        ids = []
        for piece in GPT2_SPLIT.findall(text):
            ids.extend(self.encode_piece(piece))
        return ids

    def tokenizer_json(self):
        eos_id = self.vocab[EOS]
        added = {"id": eos_id, "content": EOS, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        return {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": [added],
            "normalizer": None, "pre_tokenizer": byte_level, "post_processor": byte_level,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": self.vocab, "merges": [[a, b] for a, b in self.merges]},
        }


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # As transformers' MixtralRMSNorm: normalise in float32, then scale in the input's type.
        dtype = x.dtype
        x = x.float() if dtype != torch.float64 else x
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight.to(x.dtype) * x.to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(torch.nn.Module):
    """One Mixtral decoder layer, with transformers' parameter names."""

    def __init__(self, c):
        super().__init__()
        h, hd = c["hidden_size"], c["head_dim"]
        self.c = c
        self.input_layernorm = RMSNorm(h, c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(h, c["rms_norm_eps"])
        self.q_proj = torch.nn.Linear(h, c["num_attention_heads"] * hd, bias=False)
        self.k_proj = torch.nn.Linear(h, c["num_key_value_heads"] * hd, bias=False)
        self.v_proj = torch.nn.Linear(h, c["num_key_value_heads"] * hd, bias=False)
        self.o_proj = torch.nn.Linear(c["num_attention_heads"] * hd, h, bias=False)
        self.gate = torch.nn.Linear(h, c["num_local_experts"], bias=False)
        e, f = c["num_local_experts"], c["intermediate_size"]
        self.w1 = torch.nn.Parameter(torch.empty(e, f, h))
        self.w3 = torch.nn.Parameter(torch.empty(e, f, h))
        self.w2 = torch.nn.Parameter(torch.empty(e, h, f))

    def attention(self, x, cos, sin, mask):
        c = self.c
        b, t, _ = x.shape
        nh, kv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        q = self.q_proj(x).view(b, t, nh, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, kv, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, kv, hd).transpose(1, 2)
        q = q * cos.to(q.dtype) + rotate_half(q) * sin.to(q.dtype)
        k = k * cos.to(k.dtype) + rotate_half(k) * sin.to(k.dtype)
        k = k.repeat_interleave(nh // kv, dim=1)
        v = v.repeat_interleave(nh // kv, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        scores = scores if scores.dtype == torch.float64 else scores.float()
        probs = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        out = (probs.to(v.dtype) @ v).transpose(1, 2).reshape(b, t, nh * hd)
        return self.o_proj(out)

    def moe(self, x):
        """Softmax over all experts, keep the top k, renormalise (Mixtral's routing)."""
        c = self.c
        flat = x.reshape(-1, x.shape[-1])
        logits = self.gate(flat)
        probs = torch.softmax(logits.float() if logits.dtype != torch.float64 else logits, dim=-1)
        weights, chosen = probs.topk(c["num_experts_per_tok"], dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros(flat.shape, dtype=weights.dtype)
        for e in range(c["num_local_experts"]):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            xe = flat[rows]
            ye = (F.silu(xe @ self.w1[e].t()) * (xe @ self.w3[e].t())) @ self.w2[e].t()
            out.index_add_(0, rows, ye.to(weights.dtype) * weights[rows, slot, None])
        return out.view(x.shape).to(x.dtype), probs, chosen

    def forward(self, x, cos, sin, mask):
        x = x + self.attention(self.input_layernorm(x), cos, sin, mask)
        y, probs, chosen = self.moe(self.post_attention_layernorm(x))
        return x + y, probs, chosen


class Mixtral(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = torch.nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = torch.nn.ModuleList([Block(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.lm_head = torch.nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def init_weights(self, generator):
        std = self.c["initializer_range"]
        depth_scale = 1.0 / math.sqrt(2 * self.c["num_hidden_layers"])
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                continue
            scale = depth_scale if name.endswith(("o_proj.weight", "w2")) else 1.0
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=generator) * std * scale)

    def rope(self, t, dtype):
        hd = self.c["head_dim"]
        inv_freq = 1.0 / (self.c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        freqs = torch.outer(torch.arange(t, dtype=torch.float64), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, ids):
        t = ids.shape[1]
        x = self.embed_tokens(ids)
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        cos, sin = self.rope(t, dtype)
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        routing = []
        for layer in self.layers:
            x, probs, chosen = layer(x, cos, sin, mask)
            routing.append((probs, chosen))
        return self.lm_head(self.norm(x)), routing

    def hf_tensors(self):
        """{transformers tensor name: float32 array}, experts split as MixtralForCausalLM has them."""
        out = {"model.embed_tokens.weight": self.embed_tokens.weight, "model.norm.weight": self.norm.weight,
               "lm_head.weight": self.lm_head.weight}
        for i, layer in enumerate(self.layers):
            p = "model.layers.%d." % i
            out[p + "input_layernorm.weight"] = layer.input_layernorm.weight
            out[p + "post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out[p + "self_attn.%s.weight" % proj] = getattr(layer, proj).weight
            out[p + "block_sparse_moe.gate.weight"] = layer.gate.weight
            for e in range(self.c["num_local_experts"]):
                for w in ("w1", "w2", "w3"):
                    out[p + "block_sparse_moe.experts.%d.%s.weight" % (e, w)] = getattr(layer, w)[e]
        return {k: v.detach().float().numpy() for k, v in out.items()}


def load_balancing_loss(routing, experts, top_k):
    """Switch/Mixtral auxiliary loss: experts * sum(token share routed * mean router probability)."""
    probs = torch.cat([p for p, _ in routing])
    chosen = torch.cat([c for _, c in routing])
    routed = F.one_hot(chosen, experts).float().sum(1).mean(0) / top_k
    return experts * (routed * probs.mean(0)).sum()


def bf16_round(a):
    return torch.from_numpy(a).to(torch.bfloat16).to(torch.float64)


def eval_perplexity(model, ids, context, label):
    """Mean NLL over non-overlapping windows (the definition `moed perplexity` uses), float64."""
    total, scored = 0.0, 0
    starts = list(range(0, len(ids), context))
    t0 = time.time()
    with torch.no_grad():
        for n, start in enumerate(starts):
            window = ids[start:start + context]
            if len(window) < 2:
                continue
            x = torch.tensor([window])
            logits, _ = model(x)
            nll = F.cross_entropy(logits[0, :-1], x[0, 1:], reduction="sum")
            total += float(nll)
            scored += len(window) - 1
            if n % 20 == 0:
                log("%s: window %d/%d (%.0f s)" % (label, n + 1, len(starts), time.time() - t0))
    return total / scored, scored


def write_loss_png(path, curve, title):
    """Training and held-out loss against tokens seen, drawn with libgd (moectl's plot library)."""
    gd = ctypes.CDLL(ctypes.util.find_library("gd") or "libgd.so.3")
    gd.gdImageCreateTrueColor.restype = ctypes.c_void_p
    gd.gdFontGetSmall.restype = ctypes.c_void_p
    gd.gdImagePngPtr.restype = ctypes.c_void_p
    width, height, left, right, top, bottom = 900, 500, 70, 170, 56, 50
    im = ctypes.c_void_p(gd.gdImageCreateTrueColor(width, height))
    font = ctypes.c_void_p(gd.gdFontGetSmall())
    black, grid, white = 0, 0xE1E1E1, 0xFFFFFF
    colors = {"train": 0x1F77B4, "held-out": 0xD62728}

    def text(x, y, s):
        gd.gdImageString(im, font, int(x), int(y), ctypes.c_char_p(s.encode()), black)

    gd.gdImageFilledRectangle(im, 0, 0, width - 1, height - 1, white)
    xs = [p["tokens"] for p in curve]
    x_max = max(xs) or 1
    y_max = math.ceil(max(max(p["train"], p.get("held_out") or 0) for p in curve))
    pw, ph = width - left - right, height - top - bottom
    px = lambda v: left + int(v / x_max * pw)  # noqa: E731
    py = lambda v: top + ph - int(v / y_max * ph)  # noqa: E731
    for v in range(0, y_max + 1):
        gd.gdImageLine(im, left, py(v), left + pw, py(v), grid)
        text(left - 20, py(v) - 6, str(v))
    for i in range(0, 6):
        v = x_max * i / 5
        gd.gdImageLine(im, px(v), top, px(v), top + ph, grid)
        text(px(v) - 12, top + ph + 6, "%.1fM" % (v / 1e6))
    gd.gdImageLine(im, left, top + ph, left + pw, top + ph, black)
    gd.gdImageLine(im, left, top, left, top + ph, black)
    text(left + pw // 2 - 60, height - 22, "tokens trained on")
    text(8, top - 20, "loss (nats/token)")
    text(left, 8, title)
    gd.gdImageSetThickness(im, 2)
    for i, (name, color) in enumerate(colors.items()):
        key = "train" if name == "train" else "held_out"
        pts = [(p["tokens"], p[key]) for p in curve if p.get(key) is not None]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            gd.gdImageLine(im, px(x0), py(y0), px(x1), py(y1), color)
        y = top + 10 + 20 * i
        gd.gdImageLine(im, left + pw + 12, y + 6, left + pw + 36, y + 6, color)
        text(left + pw + 42, y, name)
    size = ctypes.c_int(0)
    data = ctypes.c_void_p(gd.gdImagePngPtr(im, ctypes.byref(size)))
    with open(path, "wb") as f:
        f.write(ctypes.string_at(data, size.value))
    gd.gdFree(data)
    gd.gdImageDestroy(im)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "models", "default"), help="model directory (default models/default)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1800, help="optimizer steps (default 1800)")
    ap.add_argument("--batch", type=int, default=16, help="sequences per step (default 16)")
    ap.add_argument("--seq", type=int, default=256, help="tokens per training sequence (default 256)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    ap.add_argument("--vocab", type=int, default=4096, help="tokenizer size (default 4096)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--eval-context", type=int, default=256, help="perplexity window of the golden (default 256)")
    ap.add_argument("--eval-every", type=int, default=100, help="steps between held-out checks (default 100)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()

    books = read_corpus()
    train_books = [b for _, b in BOOKS if b not in HELD_OUT_BOOKS]
    heldout_text = "".join(books[b] + "\n" for b in HELD_OUT_BOOKS)
    log("corpus: %d books for training (%d bytes), %d held out (%d bytes): %s" % (
        len(train_books), sum(len(books[b]) for b in train_books), len(HELD_OUT_BOOKS),
        len(heldout_text), ", ".join(HELD_OUT_BOOKS)))

    log("training a %d-token byte-level BPE" % args.vocab)
    bpe = ByteLevelBPE.train([books[b] for b in train_books], args.vocab)
    eos = bpe.vocab[EOS]
    stream = []
    for b in train_books:
        stream.extend(bpe.encode(books[b]))
        stream.append(eos)
    stream = np.array(stream, dtype=np.int64)
    heldout = bpe.encode(heldout_text)
    log("tokenizer: %d tokens, %d merges; training stream %d tokens (%.2f bytes/token), held out %d" % (
        len(bpe.vocab), len(bpe.merges), len(stream), sum(len(books[b]) for b in train_books) / len(stream),
        len(heldout)))

    config = {
        "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": eos,
        "eos_token_id": eos, "head_dim": 32, "hidden_act": "silu", "hidden_size": 192,
        "initializer_range": 0.02, "intermediate_size": 256, "max_position_embeddings": 1024,
        "model_type": "mixtral", "num_attention_heads": 6, "num_experts_per_tok": 2,
        "num_hidden_layers": 4, "num_key_value_heads": 2, "num_local_experts": 8,
        "output_router_logits": False, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "router_aux_loss_coef": 0.02, "router_jitter_noise": 0.0, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.46.0",
        "use_cache": True, "vocab_size": len(bpe.vocab),
    }
    model = Mixtral(config)
    model.init_weights(torch.Generator().manual_seed(args.seed))
    params = sum(p.numel() for p in model.parameters())
    log("model: %d parameters (%.1f MB in bf16), %d layers x %d experts, top-%d" % (
        params, params * 2 / 1e6, config["num_hidden_layers"], config["num_local_experts"],
        config["num_experts_per_tok"]))

    decay = [p for n, p in model.named_parameters() if not n.endswith("norm.weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("norm.weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    probe = torch.tensor([heldout[i:i + args.seq + 1] for i in range(0, 16 * (args.seq + 1), args.seq + 1)])
    curve, train_losses = [], []
    t0 = time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * (step / warmup if step <= warmup else
                        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (args.steps - warmup))))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, len(stream) - args.seq - 1, size=args.batch)
        batch = torch.from_numpy(np.stack([stream[s:s + args.seq + 1] for s in starts]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, routing = model(batch[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            aux = load_balancing_loss(routing, config["num_local_experts"], config["num_experts_per_tok"])
        opt.zero_grad(set_to_none=True)
        (loss + config["router_aux_loss_coef"] * aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        train_losses.append(float(loss))
        if step % args.eval_every == 0 or step == args.steps or step == 1:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                logits, _ = model(probe[:, :-1])
                held = float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), probe[:, 1:].reshape(-1)))
            mean_train = float(np.mean(train_losses[-args.eval_every:]))
            curve.append({"step": step, "tokens": step * args.batch * args.seq, "train": mean_train, "held_out": held})
            rate = step * args.batch * args.seq / (time.time() - t0)
            eta = (args.steps - step) * args.batch * args.seq / rate
            log("step %d/%d  loss %.3f  held-out %.3f  aux %.3f  lr %.2e  %.0f tok/s  eta %.0f min" % (
                step, args.steps, mean_train, held, float(aux), lr, rate, eta / 60))

    log("writing the checkpoint to %s" % args.out)
    tensors = model.hf_tensors()
    writer = TINY.SafetensorsWriter(os.path.join(args.out, "model.safetensors"),
                                    {k: v.shape for k, v in tensors.items()}, "BF16")
    for name in writer.order:
        writer.write(name, tensors[name])
    writer.close()
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": eos, "eos_token_id": eos, "transformers_version": "4.46.0"}, f, indent=2)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(bpe.tokenizer_json(), f, ensure_ascii=False, indent=1)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": False, "add_eos_token": False, "bos_token": EOS, "eos_token": EOS,
                   "unk_token": EOS, "pad_token": None, "clean_up_tokenization_spaces": False,
                   "model_max_length": config["max_position_embeddings"],
                   "tokenizer_class": "GPT2Tokenizer", "chat_template": CHAT_TEMPLATE}, f, indent=2)
    with open(os.path.join(args.out, "heldout.txt"), "w") as f:
        f.write(heldout_text)
    with open(os.path.join(args.out, "LICENSE-corpus.txt"), "w") as f:
        f.write("The training and held-out text is the King James Version of the Bible (1611) as\n"
                "Debian's bible-kjv-text package ships it. The text is in the public domain; the\n"
                "package's copyright file follows.\n\n")
        with open("/usr/share/doc/bible-kjv-text/copyright") as c:
            f.write(c.read())
    write_loss_png(os.path.join(args.out, "loss.png"), curve,
                   "moed default model: %d steps of %d x %d tokens; held-out: %d sequences of %d" % (
                       args.steps, args.batch, args.seq, len(probe), args.seq))

    log("golden: float64 perplexity of the bf16 checkpoint on heldout.txt (context %d)" % args.eval_context)
    reference = Mixtral(config).double()
    state = {}
    for name, p in model.named_parameters():
        state[name] = bf16_round(p.detach().float().numpy())
    reference.load_state_dict(state)
    mean_nll, scored = eval_perplexity(reference, heldout, args.eval_context, "golden")
    result = {
        "file": "heldout.txt", "held_out_books": HELD_OUT_BOOKS, "context": args.eval_context,
        "tokens": len(heldout), "scored": scored, "mean_nll": mean_nll, "perplexity": math.exp(mean_nll),
        "computed_by": "scripts/train-default-model.py, PyTorch float64 over the bf16 weights",
        "training": {"seed": args.seed, "steps": args.steps, "batch": args.batch, "seq": args.seq,
                     "lr": args.lr, "threads": args.threads, "tokens": args.steps * args.batch * args.seq,
                     "parameters": params, "seconds": round(time.time() - started), "curve": curve},
    }
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(result, f, indent=1)
    log("held-out: %d tokens, mean NLL %.4f, perplexity %.3f; done in %.0f min" % (
        len(heldout), mean_nll, math.exp(mean_nll), (time.time() - started) / 60))


if __name__ == "__main__":
    main()
