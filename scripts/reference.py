#!/usr/bin/python3
"""Independent numpy (float64) forward pass of a Hugging Face MoE checkpoint: mixtral, qwen2_moe,
qwen3_moe, olmoe, deepseek_v2 or deepseek_v3 (by config.json's model_type).

Reads config.json and the safetensors file(s) itself, follows transformers' modeling_<family>
semantics, and writes golden files for the engine's tests:

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


# ---------------------------------------------------------------------------------------------
# The other families, following transformers' modeling_{qwen2_moe,qwen3_moe,olmoe,deepseek_v2,
# deepseek_v3}.py (the math, in float64; not its bf16 rounding of intermediate values).


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def yarn_get_mscale(scale, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * np.log(scale) + 1.0


def rope_parameters(cfg, dim):
    """(inv_freq [dim/2], attention_factor) as modeling_rope_utils computes them for the config's
    rope_scaling: "default" or "yarn" (_compute_yarn_parameters)."""
    base = float(cfg.get("rope_theta", 10000.0))
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    scaling = cfg.get("rope_scaling")
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "default":
        return 1.0 / pos_freqs, 1.0
    if rope_type != "yarn":
        sys.exit("reference: rope_scaling type %r is not implemented" % rope_type)
    factor = float(scaling["factor"])
    original = scaling.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
    mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_get_mscale(factor)
    beta_fast = scaling.get("beta_fast") or 32
    beta_slow = scaling.get("beta_slow") or 1

    def correction_dim(rotations):
        return (dim * np.log(original / (rotations * 2 * np.pi))) / (2 * np.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = np.floor(low), np.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, attention_factor


def rotate_half_rope(x, positions, inv_freq, attention_factor):
    """apply_rotary_pos_emb: x [n, heads, d], element i paired with i + d/2 (NeoX)."""
    d = x.shape[-1]
    freqs = np.outer(positions, inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos = (np.cos(emb) * attention_factor)[:, None, :]
    sin = (np.sin(emb) * attention_factor)[:, None, :]
    rotated = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], axis=-1)
    return x * cos + rotated * sin


def interleaved_rope_v3(x, positions, inv_freq, attention_factor):
    """DeepSeek-V3's apply_rotary_pos_emb_interleave: de-interleave [x0,x1,x2,..] to
    [x0,x2,..,x1,x3,..], then rotate_half."""
    n, h, d = x.shape
    x = x.reshape(n, h, d // 2, 2).transpose(0, 1, 3, 2).reshape(n, h, d)
    return rotate_half_rope(x, positions, inv_freq, attention_factor)


def complex_rope_v2(x, positions, inv_freq, attention_factor):
    """DeepSeek-V2's apply_rotary_emb: adjacent pairs as complex numbers times freqs_cis, output
    stays interleaved."""
    n, h, d = x.shape
    xc = x.reshape(n, h, d // 2, 2)
    xc = xc[..., 0] + 1j * xc[..., 1]
    freqs_cis = np.exp(1j * np.outer(positions, inv_freq)) * attention_factor
    out = xc * freqs_cis[:, None, :]
    return np.stack([out.real, out.imag], axis=-1).reshape(n, h, d)


def causal_attention(q, k, v, scaling):
    """q [n, heads, dq], k [n, kv_heads, dq], v [n, kv_heads, dv]; repeat_kv maps kv head j to
    query heads j*rep .. j*rep+rep-1. Returns [n, heads*dv] (head-major)."""
    n, heads, _ = q.shape
    rep = heads // k.shape[1]
    causal = np.triu(np.full((n, n), -np.inf), k=1)
    out = np.empty((n, heads, v.shape[-1]))
    for hh in range(heads):
        probs = softmax(q[:, hh, :] @ k[:, hh // rep, :].T * scaling + causal)
        out[:, hh, :] = probs @ v[:, hh // rep, :]
    return out.reshape(n, -1)


def gated_mlp(w, prefix, x):
    return (silu(x @ w[prefix + "gate_proj.weight"].T) * (x @ w[prefix + "up_proj.weight"].T)) @ w[prefix + "down_proj.weight"].T


def linear(w, prefix, x):
    y = x @ w[prefix + ".weight"].T
    bias = w.get(prefix + ".bias")
    return y if bias is None else y + bias


def standard_attention(cfg, w, p, h, positions):
    """qwen2_moe (q/k/v biases), qwen3_moe (per-head q/k RMSNorm), olmoe (whole-projection q/k
    RMSNorm, optional clip_qkv)."""
    family = cfg["model_type"]
    n = h.shape[0]
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    eps = cfg["rms_norm_eps"]
    a = p + "self_attn."
    q, k, v = linear(w, a + "q_proj", h), linear(w, a + "k_proj", h), linear(w, a + "v_proj", h)
    if family == "olmoe":
        q = rms_norm(q, w[a + "q_norm.weight"], eps)
        k = rms_norm(k, w[a + "k_norm.weight"], eps)
        clip = cfg.get("clip_qkv")
        if clip is not None:
            q, k, v = np.clip(q, -clip, clip), np.clip(k, -clip, clip), np.clip(v, -clip, clip)
    q = q.reshape(n, heads, head_dim)
    k = k.reshape(n, kv_heads, head_dim)
    v = v.reshape(n, kv_heads, head_dim)
    if family == "qwen3_moe":
        q = rms_norm(q, w[a + "q_norm.weight"], eps)
        k = rms_norm(k, w[a + "k_norm.weight"], eps)
    inv_freq, attention_factor = rope_parameters(cfg, head_dim)
    q = rotate_half_rope(q, positions, inv_freq, attention_factor)
    k = rotate_half_rope(k, positions, inv_freq, attention_factor)
    return linear(w, a + "o_proj", causal_attention(q, k, v, head_dim ** -0.5))


def mla_scaling(cfg):
    """The MLA softmax scale: qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN
    (modeling_deepseek_v3; modeling_deepseek_v2 since transformers PR #47435)."""
    scaling = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    rope = cfg.get("rope_scaling")
    if rope and rope.get("rope_type", rope.get("type", "default")) != "default":
        mscale_all_dim = rope.get("mscale_all_dim", 0)
        if mscale_all_dim:
            mscale = yarn_get_mscale(float(rope["factor"]), mscale_all_dim)
            scaling *= mscale * mscale
    return scaling


def mla_attention(cfg, w, p, h, positions, check_absorbed):
    """DeepSeek multi-head latent attention, the naive (decompressed) form transformers computes."""
    n = h.shape[0]
    heads = cfg["num_attention_heads"]
    nope, rope_dim, v_dim = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kv_lora = cfg["kv_lora_rank"]
    a = p + "self_attn."
    if cfg.get("q_lora_rank") is None:
        q = linear(w, a + "q_proj", h)
    else:
        # q_a_layernorm / kv_a_layernorm are built without eps: the RMSNorm default 1e-6.
        q = linear(w, a + "q_b_proj", rms_norm(linear(w, a + "q_a_proj", h), w[a + "q_a_layernorm.weight"], 1e-6))
    q = q.reshape(n, heads, nope + rope_dim)
    q_nope, q_pe = q[..., :nope], q[..., nope:]
    compressed = linear(w, a + "kv_a_proj_with_mqa", h)
    latent, k_pe = compressed[:, :kv_lora], compressed[:, kv_lora:]
    latent = rms_norm(latent, w[a + "kv_a_layernorm.weight"], 1e-6)
    kv = (latent @ w[a + "kv_b_proj.weight"].T).reshape(n, heads, nope + v_dim)
    k_nope, v = kv[..., :nope], kv[..., nope:]
    k_pe = k_pe.reshape(n, 1, rope_dim)
    inv_freq, attention_factor = rope_parameters(cfg, rope_dim)
    rotate = interleaved_rope_v3 if cfg["model_type"] == "deepseek_v3" and cfg.get("rope_interleave", True) else (
        complex_rope_v2 if cfg["model_type"] == "deepseek_v2" else rotate_half_rope)
    q_pe = rotate(q_pe, positions, inv_freq, attention_factor)
    k_pe = rotate(k_pe, positions, inv_freq, attention_factor)
    query = np.concatenate([q_nope, q_pe], axis=-1)
    key = np.concatenate([k_nope, np.broadcast_to(k_pe, (n, heads, rope_dim))], axis=-1)
    scaling = mla_scaling(cfg)
    out = causal_attention(query, key, v, scaling)
    if check_absorbed:
        # The absorbed form an engine may use instead: scores from q_nope·W_uk against the latent,
        # values from the latent then W_uv. It must give the same numbers.
        w_kv = w[a + "kv_b_proj.weight"].reshape(heads, nope + v_dim, kv_lora)
        w_uk, w_uv = w_kv[:, :nope, :], w_kv[:, nope:, :]
        causal = np.triu(np.full((n, n), -np.inf), k=1)
        absorbed = np.empty((n, heads, v_dim))
        for hh in range(heads):
            q_latent = q_nope[:, hh, :] @ w_uk[hh]
            scores = (q_latent @ latent.T + q_pe[:, hh, :] @ k_pe[:, 0, :].T) * scaling + causal
            absorbed[:, hh, :] = (softmax(scores) @ latent) @ w_uv[hh].T
        err = np.abs(absorbed.reshape(n, -1) - out).max()
        if err > 1e-9 * max(1.0, np.abs(out).max()):
            sys.exit("reference: MLA absorbed form differs from the naive form by %g in %s" % (err, a))
    return linear(w, a + "o_proj", out)


def is_moe_layer(cfg, l):
    family = cfg["model_type"]
    if family == "olmoe":
        return True
    if family.startswith("deepseek"):
        return l >= cfg["first_k_dense_replace"]
    return (l not in (cfg.get("mlp_only_layers") or []) and cfg["num_experts"] > 0
            and (l + 1) % cfg["decoder_sparse_step"] == 0)


def route(cfg, logits, bias):
    """(expert ids [k], weights [k]) for one token's router logits (and DeepSeek-V3's correction
    bias), as the family's MoE block picks and weighs them."""
    family = cfg["model_type"]
    top_k = cfg["num_experts_per_tok"]
    if family == "deepseek_v3":
        # DeepseekV3TopkRouter / get_topk_indices: the bias enters the choice only.
        scores = sigmoid(logits)
        choice = scores + bias
        n_group, experts = cfg["n_group"], len(scores)
        grouped = choice.reshape(n_group, experts // n_group)
        group_scores = np.sort(grouped, axis=-1)[:, -2:].sum(axis=-1)
        keep = np.argsort(-group_scores, kind="stable")[: cfg["topk_group"]]
        mask = np.zeros(n_group, dtype=bool)
        mask[keep] = True
        masked = np.where(np.repeat(mask, experts // n_group), choice, 0.0)
        chosen = np.argsort(-masked, kind="stable")[:top_k]
        weights = scores[chosen]
        if cfg.get("norm_topk_prob", True):
            weights = weights / (weights.sum() + 1e-20)
        return chosen, weights * cfg["routed_scaling_factor"]
    probs = softmax(logits)
    if family == "deepseek_v2":
        method = cfg.get("topk_method", "greedy")
        if method == "group_limited_greedy":
            n_group = cfg["n_group"]
            group_scores = probs.reshape(n_group, -1).max(axis=-1)
            keep = np.argsort(-group_scores, kind="stable")[: cfg["topk_group"]]
            mask = np.zeros(n_group, dtype=bool)
            mask[keep] = True
            probs = np.where(np.repeat(mask, len(probs) // n_group), probs, 0.0)
        elif method != "greedy":
            sys.exit("reference: deepseek_v2 topk_method %r is not implemented" % method)
        chosen = np.argsort(-probs, kind="stable")[:top_k]
        # transformers' DeepseekV2Moe never renormalises (norm_topk_prob is not consulted).
        return chosen, probs[chosen] * cfg.get("routed_scaling_factor", 1.0)
    chosen = np.argsort(-probs, kind="stable")[:top_k]
    weights = probs[chosen]
    if cfg.get("norm_topk_prob"):
        weights = weights / weights.sum()
    return chosen, weights


def moe_block(cfg, w, p, h, margins):
    family = cfg["model_type"]
    m = p + "mlp."
    logits = h @ w[m + "gate.weight"].T
    bias = w.get(m + "gate.e_score_correction_bias")
    out = np.zeros_like(h)
    for t in range(h.shape[0]):
        chosen, weights = route(cfg, logits[t], bias)
        margins.append(selection_margin(cfg, logits[t], bias, chosen))
        for e, wt in zip(chosen, weights):
            out[t] += wt * gated_mlp(w, m + "experts.%d." % e, h[t])
    if family == "qwen2_moe":
        shared = gated_mlp(w, m + "shared_expert.", h)
        out += sigmoid(h @ w[m + "shared_expert_gate.weight"].T) * shared
    elif family.startswith("deepseek"):
        out += gated_mlp(w, m + "shared_experts.", h)
    return out


def selection_margin(cfg, logits, bias, chosen):
    """How far the last chosen expert is above the best unchosen one in the quantity the choice is
    made on (router logits for softmax routers, sigmoid score plus bias within the kept groups for
    DeepSeek-V3), so goldens can show that routing is not decided by rounding."""
    if cfg["model_type"] != "deepseek_v3":
        rest = np.delete(logits, chosen)
        return float(logits[chosen].min() - rest.max()) if rest.size else float("inf")
    score = sigmoid(logits) + bias
    per = len(score) // cfg["n_group"]
    group_scores = np.sort(score.reshape(cfg["n_group"], per), axis=-1)[:, -2:].sum(axis=-1)
    ranked = np.sort(group_scores)[::-1]
    group_margin = ranked[cfg["topk_group"] - 1] - ranked[cfg["topk_group"]] if cfg["topk_group"] < cfg["n_group"] else np.inf
    kept = set(int(e) // per for e in chosen)
    rest = [score[e] for e in range(len(score)) if e not in chosen and e // per in kept]
    expert_margin = score[chosen].min() - max(rest) if rest else np.inf
    return float(min(group_margin, expert_margin))


def forward_family(cfg, w, tokens, check_absorbed=False, margins=None):
    n = len(tokens)
    eps = cfg["rms_norm_eps"]
    positions = np.arange(n, dtype=np.float64)
    margins = [] if margins is None else margins
    mla = cfg["model_type"].startswith("deepseek")
    x = w["model.embed_tokens.weight"][np.array(tokens)]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        x = x + (mla_attention(cfg, w, p, h, positions, check_absorbed) if mla else standard_attention(cfg, w, p, h, positions))
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + (moe_block(cfg, w, p, h, margins) if is_moe_layer(cfg, l) else gated_mlp(w, p + "mlp.", h))
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


FAMILIES = ("qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3")


def model_forward(cfg, w, tokens, **kwargs):
    """Logits [n, vocab]; kwargs (check_absorbed, margins) apply to the non-mixtral families."""
    if cfg.get("model_type", "mixtral") == "mixtral":
        return forward(cfg, w, tokens)
    if cfg["model_type"] not in FAMILIES:
        sys.exit("reference: model_type %r is not implemented" % cfg["model_type"])
    return forward_family(cfg, w, tokens, **kwargs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--out", required=True)
    ap.add_argument("--greedy", type=int, default=0, help="write this many greedy tokens (JSON) instead of logits")
    args = ap.parse_args()
    cfg, w = load(args.model)
    tokens = [int(t) for t in args.tokens.split(",")]
    routing = []  # routing selection margins of the last forward pass (not tracked for mixtral)
    if args.greedy:
        seq = list(tokens)
        margins = []
        for step in range(args.greedy):
            last = step == args.greedy - 1
            logits = model_forward(cfg, w, seq, margins=routing if last else None)[-1]
            order = np.argsort(-logits)
            margins.append(float(logits[order[0]] - logits[order[1]]))
            seq.append(int(order[0]))
        result = {"prompt": tokens, "generated": seq[len(tokens):], "min_margin": min(margins)}
        if routing:
            result["min_routing_margin"] = min(routing)
        with open(args.out, "w") as f:
            json.dump(result, f)
        print("reference: greedy %d tokens, smallest top-1 margin %.4f" % (args.greedy, min(margins)), file=sys.stderr)
    else:
        logits = model_forward(cfg, w, tokens, check_absorbed=True, margins=routing)
        np.save(args.out, logits.astype(np.float32))
        top2 = np.sort(logits, axis=-1)[:, -2:]
        print("reference: logits %s, smallest top-1 margin %.4f" % (logits.shape, float((top2[:, 1] - top2[:, 0]).min())),
              file=sys.stderr)
    if routing:
        print("reference: smallest routing selection margin %.4f" % min(routing), file=sys.stderr)


if __name__ == "__main__":
    main()
