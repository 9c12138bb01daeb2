#!/usr/bin/python3
"""Independent numpy (float64) forward pass of a Hugging Face MoE checkpoint: mixtral, qwen2_moe,
qwen3_moe, olmoe, deepseek_v2 or deepseek_v3 (by config.json's model_type).

Reads config.json and the safetensors file(s) itself, follows transformers' modeling_<family>
semantics, and writes golden files for the engine's tests. A fine-grained FP8 checkpoint
(quantization_config quant_method fp8) is read as DeepSeek's fp8_cast_bf16.py converts it: each
F8_E4M3 weight times its block scale in float32, rounded to bfloat16.

--model FILE.gguf (a single file, or the first part of a gguf-split set) reads a GGUF model
instead, as llama.cpp's converter lays each family out (architectures llama, qwen2moe, qwen3moe,
olmoe, deepseek2): every tensor dequantized in numpy (f32, f16, bf16 here; the block formats by
gguf_file.py's dequantizers), llama.cpp's names and layouts mapped back to the HF family's (the
llama q/k row permutation undone, kv_b rebuilt from attn_k_b / attn_v_b, merged or per-expert
tensors split per expert), and the hyperparameters from the GGUF metadata alone. What llama.cpp
fixes per architecture rather than in keys follows llama.cpp: top-k renormalisation off for
qwen2moe and olmoe and on for qwen3moe unless expert_weights_norm says otherwise; deepseek2 is
DeepSeek-V3's routing with expert_gating_func sigmoid and V2's with softmax; layers without
ffn_gate_inp are dense.

  reference.py --model DIR --tokens 1,17,42 --out logits.npy       float32 [n_tokens, vocab]
  reference.py --model DIR --tokens 1,17,42 --greedy 32 --out t.json   greedy continuation ids
"""
import argparse
import glob
import json
import os
import re
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_file as gg  # noqa: E402  (its dequantizers only)


def read_safetensors(path, fp8_names=None):
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
        elif info["dtype"] == "F8_E4M3" and fp8_names is not None:
            a = float8_e4m3fn(np.frombuffer(raw, dtype=np.uint8))
            fp8_names.add(name)
        else:
            sys.exit("reference: unsupported dtype %s for %s" % (info["dtype"], name))
        out[name] = a.astype(np.float64).reshape(info["shape"])
    return out


def float8_e4m3fn(codes):
    """OCP FP8 E4M3 (torch.float8_e4m3fn): 1 sign, 4 exponent (bias 7) and 3 mantissa bits;
    exponent 0 is subnormal (m/8 * 2^-6); S.1111.111 is NaN; no infinities."""
    codes = codes.astype(np.int64)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent = (codes >> 3) & 0xF
    mantissa = (codes & 0x7).astype(np.float64)
    magnitude = np.where(exponent == 0, mantissa / 8.0 * 2.0 ** -6,
                         (1.0 + mantissa / 8.0) * np.exp2(exponent.astype(np.float64) - 7.0))
    magnitude = np.where((codes & 0x7F) == 0x7F, np.nan, magnitude)
    return (sign * magnitude).astype(np.float32)


def round_to_bf16(a):
    """float32 -> the nearest bfloat16 (ties to even), as float32."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    bits = a.view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return np.where(np.isnan(a), np.float32(np.nan), bits.astype(np.uint32).view(np.float32))


def dequantize_fp8_weights(cfg, weights, fp8_names):
    """Fine-grained FP8 (config quantization_config, quant_method fp8): each F8_E4M3 weight W has
    `W_scale_inv` holding one multiplier per weight_block_size block. The weight is what
    DeepSeek's inference/fp8_cast_bf16.py writes: x.float() * s per block, then cast to bf16."""
    q = cfg.get("quantization_config")
    if not q:
        if fp8_names:
            sys.exit("reference: F8_E4M3 tensors but no quantization_config in config.json")
        return weights
    block_rows, block_cols = q["weight_block_size"]
    out = {}
    for name, w in weights.items():
        if name.endswith("_scale_inv"):
            continue
        scales = weights.get(name + "_scale_inv")
        if name in fp8_names and scales is None:
            sys.exit("reference: %s is F8_E4M3 without %s_scale_inv" % (name, name))
        if scales is not None:
            rows, cols = w.shape
            per_element = np.repeat(np.repeat(scales.astype(np.float32), block_rows, axis=0), block_cols, axis=1)
            w = round_to_bf16(w.astype(np.float32) * per_element[:rows, :cols]).astype(np.float64)
        out[name] = w
    return out


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    weights, fp8_names = {}, set()
    for path in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        weights.update(read_safetensors(path, fp8_names))
    return cfg, dequantize_fp8_weights(cfg, weights, fp8_names)


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
    # llama.cpp (GGUF files) departs from transformers in three places: it scores every group by
    # its two best experts, fills the groups not kept with -inf instead of 0.0, and divides by the
    # top-k sum clamped below at 2^-14 instead of adding 1e-20 (or nothing).
    llama_cpp = cfg.get("llama_cpp_routing", False)
    masked = -np.inf if llama_cpp else 0.0

    def renormalised(weights, guard=0.0):
        return weights / (max(weights.sum(), 2.0 ** -14) if llama_cpp else weights.sum() + guard)

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
        kept = np.where(np.repeat(mask, experts // n_group), choice, masked)
        chosen = np.argsort(-kept, kind="stable")[:top_k]
        weights = scores[chosen]
        if cfg.get("norm_topk_prob", True):
            weights = renormalised(weights, 1e-20)
        return chosen, weights * cfg["routed_scaling_factor"]
    probs = softmax(logits)
    if family == "deepseek_v2":
        method = cfg.get("topk_method", "greedy")
        if method == "group_limited_greedy":
            n_group = cfg["n_group"]
            grouped = probs.reshape(n_group, -1)
            group_scores = np.sort(grouped, axis=-1)[:, -2:].sum(axis=-1) if llama_cpp else grouped.max(axis=-1)
            keep = np.argsort(-group_scores, kind="stable")[: cfg["topk_group"]]
            mask = np.zeros(n_group, dtype=bool)
            mask[keep] = True
            choice = np.where(np.repeat(mask, len(probs) // n_group), probs, masked)
        elif method != "greedy":
            sys.exit("reference: deepseek_v2 topk_method %r is not implemented" % method)
        else:
            choice = probs
        chosen = np.argsort(-choice, kind="stable")[:top_k]
        # transformers' DeepseekV2Moe never renormalises (norm_topk_prob is not consulted) and
        # weighs with the masked probabilities; llama.cpp with the unmasked ones (the same for
        # any expert the mask lets through).
        weights = probs[chosen] if llama_cpp else choice[chosen]
        return chosen, weights * cfg.get("routed_scaling_factor", 1.0)
    chosen = np.argsort(-probs, kind="stable")[:top_k]
    weights = probs[chosen]
    if cfg.get("norm_topk_prob"):
        weights = renormalised(weights)
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


# ---------------------------------------------------------------------------------------------
# GGUF input: a reader of its own (the dequantizers are gguf_file.py's, written from ggml's block
# layouts apart from moed's C++), llama.cpp's names and layouts mapped back to the HF family's,
# and the hyperparameters from the GGUF metadata alone.

GGUF_VALUE_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
                      11: "<q", 12: "<d"}
GGUF_FLOAT32 = 6


def read_gguf_file(path):
    """(metadata {key: value}, float32-typed keys, tensors {name: (ggml type id, numpy shape, bytes)})."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(data):
            sys.exit("reference: %s is truncated at byte %d" % (path, pos))
        pos += n
        return data[pos - n:pos]

    def string():
        return take(struct.unpack("<Q", take(8))[0]).decode("utf-8")

    def value(vtype):
        if vtype == 8:
            return string()
        if vtype == 9:
            etype, count = struct.unpack("<IQ", take(12))
            return [value(etype) for _ in range(count)]
        fmt = GGUF_VALUE_FORMATS[vtype]
        return struct.unpack(fmt, take(struct.calcsize(fmt)))[0]

    if take(4) != b"GGUF":
        sys.exit("reference: %s is not a GGUF file" % path)
    version, n_tensors, n_kv = struct.unpack("<IQQ", take(20))
    if version not in (2, 3):
        sys.exit("reference: %s: GGUF version %d" % (path, version))
    meta, float32_keys = {}, set()
    for _ in range(n_kv):
        key = string()
        vtype = struct.unpack("<I", take(4))[0]
        meta[key] = value(vtype)
        if vtype == GGUF_FLOAT32:
            float32_keys.add(key)
    infos = []
    for _ in range(n_tensors):
        name = string()
        n_dims = struct.unpack("<I", take(4))[0]
        dims = struct.unpack("<%dQ" % n_dims, take(8 * n_dims))
        type_id, offset = struct.unpack("<IQ", take(12))
        infos.append((name, type_id, tuple(reversed(dims)), offset))
    alignment = meta.get("general.alignment", 32)
    start = (pos + alignment - 1) // alignment * alignment
    tensors = {}
    for name, type_id, shape, offset in infos:
        if type_id not in gg.GGML_TYPE_BY_ID:
            sys.exit("reference: %s: tensor %s has ggml type %d" % (path, name, type_id))
        nbytes = gg.tensor_nbytes(gg.GGML_TYPE_BY_ID[type_id], shape)
        tensors[name] = (type_id, shape, data[start + offset:start + offset + nbytes])
    return meta, float32_keys, tensors


def dequantize_gguf_tensor(type_id, shape, raw):
    type_name = gg.GGML_TYPE_BY_ID[type_id]
    if type_name == "f32":
        values = np.frombuffer(raw, dtype="<f4")
    elif type_name == "f16":
        values = np.frombuffer(raw, dtype="<f2")
    elif type_name == "bf16":
        values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        values = gg.dequantize(raw, type_name)
    return values.astype(np.float64).reshape(shape)


def read_gguf(path):
    """Metadata and dequantized float64 tensors of a GGUF model: a single file, or every part of a
    split one (gguf-split naming, given its first part)."""
    parts = [path]
    split = re.search(r"-(\d{5})-of-(\d{5})\.gguf$", path)
    if split:
        count = int(split.group(2))
        parts = [path[:split.start()] + "-%05d-of-%05d.gguf" % (i, count) for i in range(1, count + 1)]
    meta, float32_keys, tensors = {}, set(), {}
    for part in parts:
        part_meta, part_floats, part_tensors = read_gguf_file(part)
        if not meta:
            meta, float32_keys = part_meta, part_floats
        tensors.update(part_tensors)
    # A float32 value stands for the decimal the converter was given; the shortest decimal that
    # rounds to it recovers that (1e-6 rather than 9.99999997e-7).
    for key in float32_keys:
        meta[key] = float(str(np.float32(meta[key])))
    return meta, {name: dequantize_gguf_tensor(*t) for name, t in tensors.items()}


def unpermute_rows(weights, n_head):
    """Undoes llama.cpp's LlamaModel.permute (interleaved pairs -> rotate-half order, per head)."""
    return (weights.reshape(n_head, weights.shape[0] // n_head // 2, 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


GGUF_FAMILIES = {"llama": "mixtral", "qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "olmoe": "olmoe"}


def gguf_to_hf(meta, t):
    """(config, weights) in the HF family's names and layouts from a GGUF model's metadata and tensors."""
    arch = meta.get("general.architecture")
    if arch not in GGUF_FAMILIES and arch != "deepseek2":
        sys.exit("reference: GGUF architecture %r is not implemented" % arch)

    def key(name, default=KeyError):
        full = arch + "." + name
        if full in meta:
            return meta[full]
        if default is KeyError:
            sys.exit("reference: the GGUF has no %s" % full)
        return default

    def tensor(name):
        if name not in t:
            sys.exit("reference: the GGUF has no tensor %s" % name)
        return t[name]

    n_layers = key("block_count")
    heads = key("attention.head_count")
    hidden = key("embedding_length")
    cfg = {"hidden_size": hidden, "num_hidden_layers": n_layers, "num_attention_heads": heads,
           "num_key_value_heads": key("attention.head_count_kv", heads),
           "rms_norm_eps": key("attention.layer_norm_rms_epsilon"), "rope_theta": key("rope.freq_base", 10000.0),
           "num_experts_per_tok": key("expert_used_count"), "max_position_embeddings": key("context_length", 4096),
           "tie_word_embeddings": "output.weight" not in t,
           # llama.cpp's build_moe_ffn routes a GGUF: see route().
           "llama_cpp_routing": True}
    if key("rope.scaling.type", "none") == "yarn":
        rope = {"type": "yarn", "factor": key("rope.scaling.factor"),
                "original_max_position_embeddings": key("rope.scaling.original_context_length")}
        for name, hf_name in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow"),
                              ("yarn_attn_factor", "attention_factor")):
            if key("rope.scaling." + name, None) is not None:
                rope[hf_name] = key("rope.scaling." + name)
        cfg["rope_scaling"] = rope
    elif key("rope.scaling.type", "none") not in ("none", "linear") or key("rope.scaling.factor", 1.0) != 1.0:
        sys.exit("reference: GGUF rope scaling %r is not implemented" % key("rope.scaling.type"))
    w = {"model.embed_tokens.weight": tensor("token_embd.weight"), "model.norm.weight": tensor("output_norm.weight")}
    if "output.weight" in t:
        w["lm_head.weight"] = t["output.weight"]
    family = GGUF_FAMILIES.get(arch)
    if arch == "deepseek2":
        family = "deepseek_v3" if key("expert_gating_func", 1) == 2 else "deepseek_v2"
    cfg["model_type"] = family
    n_expert = key("expert_count")

    def experts(blk, prefix, names):
        """Routed experts, merged (ffn_gate_exps ...) or the legacy one tensor per expert."""
        for gguf_name, hf_name in names:
            merged = t.get(blk + "ffn_%s_exps.weight" % gguf_name)
            for e in range(n_expert):
                w[prefix % (e, hf_name)] = merged[e] if merged is not None else tensor(blk + "ffn_%s.%d.weight" % (gguf_name, e))

    for layer in range(n_layers):
        blk, hf = "blk.%d." % layer, "model.layers.%d." % layer
        attn = hf + "self_attn."
        w[hf + "input_layernorm.weight"] = tensor(blk + "attn_norm.weight")
        w[hf + "post_attention_layernorm.weight"] = tensor(blk + "ffn_norm.weight")
        w[attn + "o_proj.weight"] = tensor(blk + "attn_output.weight")
        if arch == "deepseek2":
            if blk + "attn_q.weight" in t:
                w[attn + "q_proj.weight"] = t[blk + "attn_q.weight"]
            else:
                w[attn + "q_a_proj.weight"] = tensor(blk + "attn_q_a.weight")
                w[attn + "q_a_layernorm.weight"] = tensor(blk + "attn_q_a_norm.weight")
                w[attn + "q_b_proj.weight"] = tensor(blk + "attn_q_b.weight")
            w[attn + "kv_a_proj_with_mqa.weight"] = tensor(blk + "attn_kv_a_mqa.weight")
            w[attn + "kv_a_layernorm.weight"] = tensor(blk + "attn_kv_a_norm.weight")
            if blk + "attn_kv_b.weight" in t:  # files from converters before the k_b / v_b split
                w[attn + "kv_b_proj.weight"] = t[blk + "attn_kv_b.weight"]
            else:
                k_b, v_b = tensor(blk + "attn_k_b.weight"), tensor(blk + "attn_v_b.weight")  # [h, lora, nope], [h, v, lora]
                kv_b = np.concatenate([k_b.transpose(0, 2, 1), v_b], axis=1)
                w[attn + "kv_b_proj.weight"] = kv_b.reshape(-1, kv_b.shape[-1])
        else:
            for proj in "qkv":
                weights = tensor(blk + "attn_%s.weight" % proj)
                if arch == "llama" and proj in "qk":
                    weights = unpermute_rows(weights, heads if proj == "q" else cfg["num_key_value_heads"])
                w[attn + "%s_proj.weight" % proj] = weights
                if blk + "attn_%s.bias" % proj in t:
                    w[attn + "%s_proj.bias" % proj] = t[blk + "attn_%s.bias" % proj]
            for norm in ("q_norm", "k_norm"):
                if blk + "attn_%s.weight" % norm in t:
                    w[attn + norm + ".weight"] = t[blk + "attn_%s.weight" % norm]
        if arch == "llama":
            moe = hf + "block_sparse_moe."
            w[moe + "gate.weight"] = tensor(blk + "ffn_gate_inp.weight")
            experts(blk, moe + "experts.%d.%s.weight", (("gate", "w1"), ("down", "w2"), ("up", "w3")))
            continue
        mlp = hf + "mlp."
        if blk + "ffn_gate_inp.weight" not in t:
            for proj in ("gate", "up", "down"):
                w[mlp + "%s_proj.weight" % proj] = tensor(blk + "ffn_%s.weight" % proj)
            continue
        w[mlp + "gate.weight"] = t[blk + "ffn_gate_inp.weight"]
        if blk + "exp_probs_b.bias" in t:
            w[mlp + "gate.e_score_correction_bias"] = t[blk + "exp_probs_b.bias"]
        experts(blk, mlp + "experts.%d.%s_proj.weight", (("gate", "gate"), ("down", "down"), ("up", "up")))
        shared = mlp + ("shared_expert." if family == "qwen2_moe" else "shared_experts.")
        for proj in ("gate", "up", "down"):
            if blk + "ffn_%s_shexp.weight" % proj in t:
                w[shared + "%s_proj.weight" % proj] = t[blk + "ffn_%s_shexp.weight" % proj]
        if blk + "ffn_gate_inp_shexp.weight" in t:
            w[mlp + "shared_expert_gate.weight"] = t[blk + "ffn_gate_inp_shexp.weight"].reshape(1, hidden)

    moe_layers = [l for l in range(n_layers) if "blk.%d.ffn_gate_inp.weight" % l in t]
    head_dim = key("attention.key_length", key("rope.dimension_count", hidden // heads))
    if family == "mixtral":
        cfg["head_dim"] = head_dim
    elif family in ("qwen2_moe", "qwen3_moe"):
        # llama.cpp's graphs fix the top-k renormalisation per architecture: qwen2moe no, qwen3moe yes.
        cfg.update(head_dim=head_dim, num_experts=n_expert, decoder_sparse_step=1,
                   mlp_only_layers=[l for l in range(n_layers) if l not in moe_layers],
                   norm_topk_prob=key("expert_weights_norm", family == "qwen3_moe"))
    elif family == "olmoe":
        if len(moe_layers) != n_layers:
            sys.exit("reference: olmoe layers without experts are not implemented")
        if key("expert_weights_norm", False):
            sys.exit("reference: olmoe with expert_weights_norm is not implemented")
        # llama.cpp's olmoe graph applies no clamp_kqv (its converter writes none for OLMoE).
        cfg.update(head_dim=head_dim, num_experts=n_expert, clip_qkv=None)
    else:
        rope_dim = key("rope.dimension_count")
        n_group = key("expert_group_count", 1)
        cfg.update(n_routed_experts=n_expert, first_k_dense_replace=key("leading_dense_block_count", 0),
                   kv_lora_rank=key("attention.kv_lora_rank"), q_lora_rank=key("attention.q_lora_rank", None),
                   qk_rope_head_dim=rope_dim, qk_nope_head_dim=key("attention.key_length_mla") - rope_dim,
                   v_head_dim=key("attention.value_length_mla"), n_group=n_group,
                   topk_group=key("expert_group_used_count", n_group),
                   routed_scaling_factor=key("expert_weights_scale", 1.0),
                   norm_topk_prob=key("expert_weights_norm", False), rope_interleave=True,
                   topk_method="greedy" if n_group == 1 else "group_limited_greedy")
        if moe_layers != list(range(cfg["first_k_dense_replace"], n_layers)):
            sys.exit("reference: deepseek2 experts in layers %s, leading_dense_block_count %d"
                     % (moe_layers, cfg["first_k_dense_replace"]))
        if family == "deepseek_v2" and cfg["norm_topk_prob"]:
            sys.exit("reference: deepseek2 with softmax gating and expert_weights_norm is not implemented")
        rope = cfg.get("rope_scaling")
        if rope:
            # llama.cpp's deepseek2 keeps the rotary embedding unscaled (mscale == mscale_all_dim in
            # every DeepSeek config) and scales the softmax by mscale(factor, mscale_all_dim)^2,
            # mscale_all_dim written as yarn_log_multiplier = 0.1 * mscale_all_dim.
            log_mul = key("rope.scaling.yarn_log_multiplier", 0.0)
            rope.update(attention_factor=1.0, mscale_all_dim=float(str(np.float32(log_mul / 0.1))) if log_mul else 0)
    return cfg, w


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
    if args.model.endswith(".gguf"):
        cfg, w = gguf_to_hf(*read_gguf(args.model))
    else:
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
