#!/usr/bin/python3
"""Independent numpy (float64) forward pass of a Mixtral-architecture checkpoint.

Reads config.json and the safetensors file(s) itself, follows Hugging Face's
modeling_mixtral semantics, and writes golden files for the engine's tests:

  reference.py --model DIR --tokens 1,17,42 --out logits.npy       float32 [n_tokens, vocab]
  reference.py --model DIR --tokens 1,17,42 --greedy 32 --out t.json   greedy continuation ids
"""
import argparse
import glob
import json
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        if info["dtype"] == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif info["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            a = np.frombuffer(raw, dtype="<f2")
        else:
            sys.exit("reference: unsupported dtype %s for %s" % (info["dtype"], name))
        out[name] = a.astype(np.float64).reshape(info["shape"])
    return out


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    weights = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        weights.update(read_safetensors(path))
    return cfg, weights


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, positions, theta):
    # x: [n, heads, d]; Hugging Face rotate_half pairs element i with i + d/2.
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    freqs = np.outer(positions, inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos = np.cos(emb)[:, None, :]
    sin = np.sin(emb)[:, None, :]
    rotated = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], axis=-1)
    return x * cos + rotated * sin


def silu(x):
    return x / (1.0 + np.exp(-x))


def forward(cfg, w, tokens):
    n = len(tokens)
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    kv_heads = cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or hidden // heads
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta", 10000.0)
    top_k = cfg["num_experts_per_tok"]
    positions = np.arange(n, dtype=np.float64)

    x = w["model.embed_tokens.weight"][np.array(tokens)]
    causal = np.triu(np.full((n, n), -np.inf), k=1)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(n, heads, head_dim)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(n, kv_heads, head_dim)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(n, kv_heads, head_dim)
        q = rope(q, positions, theta)
        k = rope(k, positions, theta)
        group = heads // kv_heads
        out = np.empty((n, heads, head_dim))
        for hh in range(heads):
            kh = hh // group
            scores = q[:, hh, :] @ k[:, kh, :].T / np.sqrt(head_dim) + causal
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            out[:, hh, :] = scores @ v[:, kh, :]
        x = x + out.reshape(n, heads * head_dim) @ w[p + "self_attn.o_proj.weight"].T

        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        router = h @ w[p + "block_sparse_moe.gate.weight"].T
        probs = np.exp(router - router.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        moe = np.zeros_like(x)
        for t in range(n):
            chosen = np.argsort(-probs[t], kind="stable")[:top_k]
            weights = probs[t, chosen] / probs[t, chosen].sum()
            for e, wt in zip(chosen, weights):
                q_ = p + "block_sparse_moe.experts.%d." % e
                a = silu(w[q_ + "w1.weight"] @ h[t]) * (w[q_ + "w3.weight"] @ h[t])
                moe[t] += wt * (w[q_ + "w2.weight"] @ a)
        x = x + moe
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--out", required=True)
    ap.add_argument("--greedy", type=int, default=0, help="write this many greedy tokens (JSON) instead of logits")
    args = ap.parse_args()
    cfg, w = load(args.model)
    tokens = [int(t) for t in args.tokens.split(",")]
    if args.greedy:
        seq = list(tokens)
        margins = []
        for _ in range(args.greedy):
            logits = forward(cfg, w, seq)[-1]
            order = np.argsort(-logits)
            margins.append(float(logits[order[0]] - logits[order[1]]))
            seq.append(int(order[0]))
        with open(args.out, "w") as f:
            json.dump({"prompt": tokens, "generated": seq[len(tokens):], "min_margin": min(margins)}, f)
        print("reference: greedy %d tokens, smallest top-1 margin %.4f" % (args.greedy, min(margins)), file=sys.stderr)
    else:
        logits = forward(cfg, w, tokens)
        np.save(args.out, logits.astype(np.float32))
        top2 = np.sort(logits, axis=-1)[:, -2:]
        print("reference: logits %s, smallest top-1 margin %.4f" % (logits.shape, float((top2[:, 1] - top2[:, 0]).min())),
              file=sys.stderr)


if __name__ == "__main__":
    main()
