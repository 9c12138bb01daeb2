#!/usr/bin/python3
"""Convert a Hugging Face MoE checkpoint (config.json, safetensors, tokenizer.json) to GGUF, laid
out as llama.cpp's convert_hf_to_gguf.py and llama-quantize lay it out. Families, by config.json's
architectures, and the llama.cpp architecture each becomes:

  MixtralForCausalLM -> llama      Qwen2MoeForCausalLM -> qwen2moe   Qwen3MoeForCausalLM -> qwen3moe
  OlmoeForCausalLM   -> olmoe      DeepseekV2ForCausalLM, DeepseekV3ForCausalLM -> deepseek2

What follows llama.cpp's converter (conversion/{llama,qwen,olmo,deepseek,base}.py):

- the `{arch}.*` hyperparameters each class writes, with its value types (counts uint32, norms,
  scales and rope values float32, expert_weights_norm bool, rope.scaling.type a string);
- tensor names token_embd / output_norm / output and blk.N.*; routed experts merged into 3-D
  tensors (numpy [expert, rows, cols], GGUF ne = [cols, rows, expert]); --split-experts writes
  Mixtral's experts the legacy way instead, one 2-D blk.N.ffn_{gate,down,up}.E.weight each,
  as early (2023-24) Mixtral GGUFs have them (llama.cpp then merged them on load; its current
  llama loader requires the merged tensors, so such files are for readers that accept both);
- llama only: attn_q / attn_k rows permuted as LlamaModel.permute does (the HF checkpoint holds
  them in rotate-half order; llama-arch files hold them interleaved). qwen2moe, qwen3moe and
  olmoe are NeoX-rope architectures in llama.cpp and keep HF's rows; deepseek2 is a normal-rope
  architecture whose HF weights are already interleaved, so it keeps them too;
- qwen2moe: q/k/v biases, the shared expert (ffn_{gate,up,down}_shexp) and its sigmoid gate
  ffn_gate_inp_shexp, kept 2-D ([1, hidden], ne = [hidden, 1]) as the converter no longer
  squeezes; layers outside decoder_sparse_step / mlp_only_layers keep a dense ffn_{gate,up,down};
- qwen3moe / olmoe: attn_q_norm / attn_k_norm (per head for qwen3moe, whole projection for olmoe);
  olmoe's rms epsilon is written as 1e-5 whatever the config says, as OlmoeModel does;
- deepseek2: head_count_kv 1 (MLA as MQA), key_length kv_lora_rank + qk_rope_head_dim,
  value_length kv_lora_rank, key_length_mla / value_length_mla the decompressed head sizes;
  kv_b_proj split per head into attn_k_b (transposed: numpy [heads, kv_lora_rank, qk_nope],
  ne = [qk_nope, kv_lora_rank, heads]) and attn_v_b (numpy [heads, v_head, kv_lora_rank]) and no
  attn_kv_b; e_score_correction_bias as blk.N.exp_probs_b.bias; leading_dense_block_count,
  expert_gating_func (softmax 1, sigmoid 2), expert_weights_scale, expert_weights_norm (only when
  true), expert_group_count / expert_group_used_count, YaRN's rope.scaling.* keys and
  yarn_log_multiplier = 0.1 * mscale_all_dim;
- 1-D tensors, *_norm weights, biases and the routers (ffn_gate_inp, ffn_gate_inp_shexp) stay f32;
- tokenizer.ggml.* from tokenizer.json: `llama` (SentencePiece-style BPE with byte fallback:
  tokens, scores, token types) or `gpt2` (byte-level BPE: tokens, token types, merges, `pre`),
  special ids, add_bos/add_eos, and tokenizer.chat_template from tokenizer_config.json. The `pre`
  name is the one llama.cpp's hash table gives the family's real tokenizer: qwen2 (qwen2moe,
  qwen3moe), olmo (olmoe), deepseek-llm (DeepSeek-V2), deepseek-v3 (DeepSeek-V3).

One departure: llama.cpp's LlamaHfVocab writes the placeholder score -1000 for every token of a
tokenizer.json-only Llama tokenizer, which leaves SentencePiece-style merging without an order.
Here a token's score is minus the rank of the merge that makes it, the order HF's BPE merges in.

--type picks the weights' format: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k,
q5_k, q6_k, iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq4_xs, or the mixed recipes q4_k_m / q5_k_m (llama-quantize's: q6_K for output, for
attn_v and ffn_down in the first and last eighth of the layers and every third layer between;
attn_v q8_0 and attn_output q5_K with 8 experts). A tensor whose rows are not whole blocks of the
type falls back as the llama-quantize that tests/interop runs does (q2_K and q3_K -> q4_0, q4_K
-> q5_0, q5_K -> q5_1, q6_K -> q8_0, iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s and iq4_xs -> iq4_nl; then f16; other llama.cpp versions send
q2_K and q3_K to iq4_nl).
--splits N writes OUT-0000i-of-0000N.gguf as gguf-split does (metadata in the first file).
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_file as gg  # noqa: E402

# llama_ftype ids for general.file_type.
FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9,
              "q2_k": 10, "q3_k": 11, "q4_k": 14, "q4_k_m": 15, "q5_k": 16, "q5_k_m": 17, "q6_k": 18, "iq2_xxs": 19, "iq2_xs": 20, "iq3_xxs": 23, "iq1_s": 24, "iq3_s": 26, "iq2_s": 28, "iq4_xs": 30, "iq1_m": 31,
              "bf16": 32}
FALLBACK = {"q2_k": "q4_0", "q3_k": "q4_0", "iq1_s": "iq4_nl", "iq1_m": "iq4_nl", "iq2_xxs": "iq4_nl", "iq2_xs": "iq4_nl", "iq2_s": "iq4_nl", "iq3_xxs": "iq4_nl", "iq3_s": "iq4_nl", "iq4_xs": "iq4_nl", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}
# llama_token_type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def fail(message):
    sys.exit("hf-to-gguf: " + message)


# ---------------------------------------------------------------------------------------------
# Checkpoint

class Safetensors:
    """The tensors of a checkpoint's safetensors files, read through memory maps."""

    DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}

    def __init__(self, model_dir):
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        self.where = {}
        for name in files:
            path = os.path.join(model_dir, name)
            with open(path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
            data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + length)
            for tensor, info in header.items():
                if tensor == "__metadata__":
                    continue
                if info["dtype"] not in self.DTYPES:
                    fail("%s: tensor %s has dtype %s (F32, F16, BF16 are read)" % (path, tensor, info["dtype"]))
                self.where[tensor] = (data, info)

    def __contains__(self, name):
        return name in self.where

    def get(self, name):
        if name not in self.where:
            fail("the checkpoint has no tensor %s" % name)
        data, info = self.where[name]
        begin, end = info["data_offsets"]
        raw = data[begin:end].view(self.DTYPES[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32)


# config.json architecture -> (llama.cpp architecture, HF model_type)
ARCHS = {"MixtralForCausalLM": ("llama", "mixtral"), "Qwen2MoeForCausalLM": ("qwen2moe", "qwen2_moe"),
         "Qwen3MoeForCausalLM": ("qwen3moe", "qwen3_moe"), "OlmoeForCausalLM": ("olmoe", "olmoe"),
         "DeepseekV2ForCausalLM": ("deepseek2", "deepseek_v2"), "DeepseekV3ForCausalLM": ("deepseek2", "deepseek_v3")}
# tokenizer.ggml.pre of each family's real tokenizer, as convert_hf_to_gguf.py's hash table names it.
TOKENIZER_PRE = {"qwen2_moe": "qwen2", "qwen3_moe": "qwen2", "olmoe": "olmo", "deepseek_v2": "deepseek-llm",
                 "deepseek_v3": "deepseek-v3"}


def permute(weights, n_head, n_head_kv):
    """llama.cpp's LlamaModel.permute: rotate-half row order -> interleaved pairs, per head."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def n_routed_experts(config):
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        if key in config:
            return config[key]
    fail("config.json has none of num_local_experts, num_experts, n_routed_experts")


def is_moe_layer(config, layer):
    """Whether the checkpoint's layer has routed experts (its tensors decide what is written)."""
    family = config["model_type"]
    if family.startswith("deepseek"):
        return layer >= config.get("first_k_dense_replace", 0)
    if family in ("qwen2_moe", "qwen3_moe"):
        return (layer not in (config.get("mlp_only_layers") or []) and config["num_experts"] > 0
                and (layer + 1) % config.get("decoder_sparse_step", 1) == 0)
    return True


def merged_experts(st, prefix, n_expert, names, split_experts):
    """The three expert projections of a layer: (GGUF base name, [expert, rows, cols]) merged, or
    per expert (blk.N.ffn_gate.E.weight ...) when split_experts."""
    for hf_name, gguf_name in names:
        experts = [st.get(prefix % (e, hf_name)) for e in range(n_expert)]
        if split_experts:
            for e, weights in enumerate(experts):
                yield "ffn_%s.%d.weight" % (gguf_name, e), weights
        else:
            yield "ffn_%s_exps.weight" % gguf_name, np.stack(experts)


def dense_mlp(st, prefix, suffix=""):
    for proj in ("gate", "up", "down"):
        yield "ffn_%s%s.weight" % (proj, suffix), st.get(prefix + "%s_proj.weight" % proj)


def hf_tensors(st, config, split_experts=False):
    """(GGUF name, float32 array) in llama.cpp's naming and layout for the config's family."""
    family = config["model_type"]
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_head)
    yield "token_embd.weight", st.get("model.embed_tokens.weight")
    yield "output_norm.weight", st.get("model.norm.weight")
    if "lm_head.weight" in st and not config.get("tie_word_embeddings", False):
        yield "output.weight", st.get("lm_head.weight")
    for layer in range(config["num_hidden_layers"]):
        hf = "model.layers.%d." % layer
        blk = "blk.%d." % layer
        attn = hf + "self_attn."
        yield blk + "attn_norm.weight", st.get(hf + "input_layernorm.weight")
        if family == "mixtral":
            yield blk + "attn_q.weight", permute(st.get(attn + "q_proj.weight"), n_head, n_head)
            yield blk + "attn_k.weight", permute(st.get(attn + "k_proj.weight"), n_head, n_kv)
            yield blk + "attn_v.weight", st.get(attn + "v_proj.weight")
        elif family.startswith("deepseek"):
            for name, array in deepseek_attention(st, config, attn):
                yield blk + name, array
        else:
            for proj in "qkv":
                yield blk + "attn_%s.weight" % proj, st.get(attn + "%s_proj.weight" % proj)
                if attn + "%s_proj.bias" % proj in st:
                    yield blk + "attn_%s.bias" % proj, st.get(attn + "%s_proj.bias" % proj)
            if family in ("qwen3_moe", "olmoe"):
                yield blk + "attn_q_norm.weight", st.get(attn + "q_norm.weight")
                yield blk + "attn_k_norm.weight", st.get(attn + "k_norm.weight")
        yield blk + "attn_output.weight", st.get(attn + "o_proj.weight")
        yield blk + "ffn_norm.weight", st.get(hf + "post_attention_layernorm.weight")

        if family == "mixtral":
            moe = hf + "block_sparse_moe."
            yield blk + "ffn_gate_inp.weight", st.get(moe + "gate.weight")
            for name, array in merged_experts(st, moe + "experts.%d.%s.weight", config["num_local_experts"],
                                              (("w1", "gate"), ("w2", "down"), ("w3", "up")), split_experts):
                yield blk + name, array
            continue
        mlp = hf + "mlp."
        if not is_moe_layer(config, layer):
            for name, array in dense_mlp(st, mlp):
                yield blk + name, array
            continue
        yield blk + "ffn_gate_inp.weight", st.get(mlp + "gate.weight")
        if mlp + "gate.e_score_correction_bias" in st:
            yield blk + "exp_probs_b.bias", st.get(mlp + "gate.e_score_correction_bias")
        for name, array in merged_experts(st, mlp + "experts.%d.%s_proj.weight", n_routed_experts(config),
                                          (("gate", "gate"), ("down", "down"), ("up", "up")), False):
            yield blk + name, array
        if family == "qwen2_moe":
            yield blk + "ffn_gate_inp_shexp.weight", st.get(mlp + "shared_expert_gate.weight")
            for name, array in dense_mlp(st, mlp + "shared_expert.", "_shexp"):
                yield blk + name, array
        elif family.startswith("deepseek") and config.get("n_shared_experts"):
            for name, array in dense_mlp(st, mlp + "shared_experts.", "_shexp"):
                yield blk + name, array


def deepseek_attention(st, config, attn):
    """MLA tensors as DeepseekV2Model writes them: kv_b_proj split per head into k_b (transposed)
    and v_b for the absorbed form."""
    if config.get("q_lora_rank") is None:
        yield "attn_q.weight", st.get(attn + "q_proj.weight")
    else:
        yield "attn_q_a.weight", st.get(attn + "q_a_proj.weight")
        yield "attn_q_a_norm.weight", st.get(attn + "q_a_layernorm.weight")
        yield "attn_q_b.weight", st.get(attn + "q_b_proj.weight")
    yield "attn_kv_a_mqa.weight", st.get(attn + "kv_a_proj_with_mqa.weight")
    yield "attn_kv_a_norm.weight", st.get(attn + "kv_a_layernorm.weight")
    heads, nope, v_dim = config["num_attention_heads"], config["qk_nope_head_dim"], config["v_head_dim"]
    kv_b = st.get(attn + "kv_b_proj.weight")
    if kv_b.shape[0] != heads * (nope + v_dim):
        fail("%skv_b_proj.weight has %d rows, heads * (qk_nope_head_dim + v_head_dim) is %d"
             % (attn, kv_b.shape[0], heads * (nope + v_dim)))
    kv_b = kv_b.reshape(heads, nope + v_dim, kv_b.shape[-1])
    yield "attn_k_b.weight", np.ascontiguousarray(kv_b[:, :nope, :].transpose(0, 2, 1))
    yield "attn_v_b.weight", np.ascontiguousarray(kv_b[:, nope:, :])


# ---------------------------------------------------------------------------------------------
# Formats per tensor

def use_more_bits(i_layer, n_layers):
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def tensor_type(name, array, recipe, n_layers, n_expert):
    # ggml counts a tensor's dims without trailing ones, so [1, hidden] is 1-D to llama-quantize.
    one_dimensional = array.ndim == 1 or all(d == 1 for d in array.shape[:-1])
    if (one_dimensional or not name.endswith(".weight") or name.endswith("_norm.weight")
            or name.endswith(("ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight"))):
        return "f32"
    base = {"q4_k_m": "q4_k", "q5_k_m": "q5_k"}.get(recipe, recipe)
    chosen = base
    if recipe in ("q4_k_m", "q5_k_m"):
        layer = re.match(r"blk\.(\d+)\.", name)
        i_layer = int(layer.group(1)) if layer else 0
        if name == "output.weight":
            chosen = "q6_k"
        elif ".attn_v." in name:
            chosen = "q8_0" if n_expert == 8 else ("q6_k" if use_more_bits(i_layer, n_layers) else base)
        elif ".ffn_down" in name and use_more_bits(i_layer, n_layers):
            chosen = "q6_k"
        elif ".attn_output." in name and n_expert == 8 and recipe == "q4_k_m":
            chosen = "q5_k"
    row = array.shape[-1]
    while row % gg.GGML_TYPES[chosen][1]:
        chosen = FALLBACK.get(chosen, "f16")
    return chosen


# ---------------------------------------------------------------------------------------------
# Tokenizer

def merge_pairs(model):
    pairs = []
    for merge in model.get("merges", []):
        pairs.append(tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge))
    return pairs


def tokenizer_kind(tok):
    model = tok.get("model", {})
    if model.get("type") != "BPE":
        fail("tokenizer.json model type %r: only BPE tokenizers convert" % model.get("type"))
    if model.get("byte_fallback"):
        return "llama"
    pre = tok.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if any(step.get("type") == "ByteLevel" for step in steps):
        return "gpt2"
    fail("tokenizer.json: a BPE model without byte_fallback needs a ByteLevel pre-tokenizer, found %r"
         % pre.get("type"))


def add_tokenizer(w, model_dir, config, pre_override):
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    tok_config = {}
    path = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            tok_config = json.load(f)
    kind = tokenizer_kind(tok)
    vocab = dict(tok["model"]["vocab"])
    added = {t["content"]: t for t in tok.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = t["id"]
    reverse = {i: t for t, i in vocab.items()}
    n_vocab = max(config.get("vocab_size", 0), max(reverse) + 1)

    tokens, types, scores = [], [], []
    merges = merge_pairs(tok["model"])
    rank_of = {}
    for rank, (a, b) in enumerate(merges):
        rank_of.setdefault(a + b, rank)
    unk = tok["model"].get("unk_token")
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append("[PAD%d]" % i)
            types.append(UNUSED)
            scores.append(-1000.0)
            continue
        text = reverse[i]
        if text in added:
            types.append(CONTROL if added[text].get("special", False) else USER_DEFINED)
        elif kind == "llama" and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text):
            types.append(BYTE)
        elif kind == "llama" and text == unk:
            types.append(UNKNOWN)
        else:
            types.append(NORMAL)
        tokens.append(text)
        scores.append(-float(rank_of[text]) if text in rank_of else 0.0)

    w.add("tokenizer.ggml.model", kind)
    if kind == "llama":
        w.add("tokenizer.ggml.pre", pre_override or "default")
    else:
        pre = tok.get("pre_tokenizer") or {}
        if pre_override:
            w.add("tokenizer.ggml.pre", pre_override)
        elif pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
            w.add("tokenizer.ggml.pre", "gpt-2")  # GPT-2's split regex, as ByteLevel's use_regex
        else:
            fail("tokenizer.json: pre-tokenizer %s has no known llama.cpp name; pass --tokenizer-pre"
                 % json.dumps(pre)[:200])
    w.add("tokenizer.ggml.tokens", gg.Value(gg.ARRAY, tokens, gg.STRING))
    if kind == "llama":
        w.add("tokenizer.ggml.scores", gg.Value(gg.ARRAY, scores, gg.FLOAT32))
    w.add("tokenizer.ggml.token_type", gg.Value(gg.ARRAY, types, gg.INT32))
    if kind == "gpt2":
        w.add("tokenizer.ggml.merges", gg.Value(gg.ARRAY, [a + " " + b for a, b in merges], gg.STRING))

    def token_id(key, config_key):
        value = tok_config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value in vocab:
            return vocab[value]
        if isinstance(config.get(config_key), int):
            return config[config_key]
        return None

    for key, config_key, gguf_key in (("bos_token", "bos_token_id", "bos_token_id"),
                                      ("eos_token", "eos_token_id", "eos_token_id"),
                                      ("unk_token", None, "unknown_token_id"),
                                      ("pad_token", "pad_token_id", "padding_token_id")):
        ident = token_id(key, config_key)
        if ident is not None:
            w.add("tokenizer.ggml." + gguf_key, gg.Value(gg.UINT32, ident))
    for key in ("add_bos_token", "add_eos_token"):
        if isinstance(tok_config.get(key), bool):
            w.add("tokenizer.ggml." + key, tok_config[key])
    template = tok_config.get("chat_template")
    if isinstance(template, list):  # named templates: llama.cpp keeps "default" as the main one
        named = {t["name"]: t["template"] for t in template}
        template = named.get("default")
    if isinstance(template, str):
        w.add("tokenizer.chat_template", template)
    return n_vocab


# ---------------------------------------------------------------------------------------------

def u32(value):
    return gg.Value(gg.UINT32, int(value))


def f32(value):
    return gg.Value(gg.FLOAT32, float(value))


def llama_hyperparameters(config):
    """LlamaModel's keys (Mixtral)."""
    n_head = config["num_attention_heads"]
    hidden = config["hidden_size"]
    return [("vocab_size", u32(config["vocab_size"])),
            ("context_length", u32(config.get("max_position_embeddings", 4096))),
            ("embedding_length", u32(hidden)),
            ("block_count", u32(config["num_hidden_layers"])),
            ("feed_forward_length", u32(config["intermediate_size"])),
            ("rope.dimension_count", u32(config.get("head_dim", hidden // n_head))),
            ("attention.head_count", u32(n_head)),
            ("attention.head_count_kv", u32(config.get("num_key_value_heads", n_head))),
            ("rope.freq_base", f32(config.get("rope_theta", 10000.0))),
            ("attention.layer_norm_rms_epsilon", f32(config["rms_norm_eps"])),
            ("expert_count", u32(config["num_local_experts"])),
            ("expert_used_count", u32(config["num_experts_per_tok"]))]


def text_model_hyperparameters(config):
    """TextModel.set_gguf_parameters: the keys every non-llama family starts from, in its order.
    A key a subclass writes again replaces the value (GGUFWriter overwrites duplicates)."""
    keys = [("block_count", u32(config["num_hidden_layers"]))]
    if "max_position_embeddings" in config:
        keys.append(("context_length", u32(config["max_position_embeddings"])))
    keys.append(("embedding_length", u32(config["hidden_size"])))
    if "intermediate_size" in config:
        keys.append(("feed_forward_length", u32(config["intermediate_size"])))
    keys.append(("attention.head_count", u32(config["num_attention_heads"])))
    if "num_key_value_heads" in config:
        keys.append(("attention.head_count_kv", u32(config["num_key_value_heads"])))
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type"))
    if rope_type == "yarn" and rope.get("factor") is not None:
        keys += [("rope.scaling.type", "yarn"), ("rope.scaling.factor", f32(rope["factor"])),
                 ("rope.scaling.original_context_length", u32(rope["original_max_position_embeddings"]))]
        for source, key in (("extrapolation_factor", "yarn_ext_factor"), ("attention_factor", "yarn_attn_factor"),
                            ("attn_factor", "yarn_attn_factor"), ("beta_fast", "yarn_beta_fast"),
                            ("beta_slow", "yarn_beta_slow")):
            if rope.get(source) is not None and not any(k == "rope.scaling." + key for k, _ in keys):
                keys.append(("rope.scaling." + key, f32(rope[source])))
    elif rope_type not in (None, "default"):
        fail("rope_scaling type %r: only yarn converts" % rope_type)
    keys.append(("rope.freq_base", f32(rope.get("rope_theta", config.get("rope_theta", 10000.0)))))
    keys.append(("attention.layer_norm_rms_epsilon", f32(config["rms_norm_eps"])))
    for key in ("num_local_experts", "num_experts"):
        if key in config:
            keys.append(("expert_count", u32(config[key])))
            break
    if "num_experts_per_tok" in config:
        keys.append(("expert_used_count", u32(config["num_experts_per_tok"])))
    if config.get("n_group") is not None:
        keys.append(("expert_group_count", u32(config["n_group"])))
    if config.get("topk_group") is not None:
        keys.append(("expert_group_used_count", u32(config["topk_group"])))
    score = config.get("scoring_func")
    if score is not None:
        if score not in ("softmax", "sigmoid"):
            fail("scoring_func %r: softmax or sigmoid convert" % score)
        keys.append(("expert_gating_func", u32(1 if score == "softmax" else 2)))  # llama_expert_gating_func_type
    if config.get("head_dim") is not None:
        keys += [("attention.key_length", u32(config["head_dim"])), ("attention.value_length", u32(config["head_dim"]))]
    return keys


def family_hyperparameters(config):
    family = config["model_type"]
    if family == "mixtral":
        return llama_hyperparameters(config)
    keys = text_model_hyperparameters(config)
    if family in ("qwen2_moe", "qwen3_moe"):
        if config.get("moe_intermediate_size") is not None:
            keys.append(("expert_feed_forward_length", u32(config["moe_intermediate_size"])))
        if config.get("shared_expert_intermediate_size") is not None:
            keys.append(("expert_shared_feed_forward_length", u32(config["shared_expert_intermediate_size"])))
    elif family == "olmoe":
        keys.append(("attention.layer_norm_rms_epsilon", f32(1e-5)))
    elif family.startswith("deepseek"):
        keys.append(("attention.head_count_kv", u32(1)))  # MLA converts to MQA
        keys.append(("leading_dense_block_count", u32(config.get("first_k_dense_replace", 0))))
        keys.append(("vocab_size", u32(config["vocab_size"])))
        if config.get("q_lora_rank") is not None:
            keys.append(("attention.q_lora_rank", u32(config["q_lora_rank"])))
        kv_lora = config.get("kv_lora_rank", 512)
        keys += [("attention.kv_lora_rank", u32(kv_lora)),
                 ("attention.key_length", u32(kv_lora + config["qk_rope_head_dim"])),
                 ("attention.value_length", u32(kv_lora)),
                 ("attention.key_length_mla", u32(config["qk_nope_head_dim"] + config["qk_rope_head_dim"])),
                 ("attention.value_length_mla", u32(config["v_head_dim"])),
                 ("expert_feed_forward_length", u32(config.get("moe_intermediate_size", config.get("intermediate_size")))),
                 ("expert_count", u32(config["n_routed_experts"])),
                 ("expert_shared_count", u32(config.get("n_shared_experts", 0)))]
        if config.get("routed_scaling_factor") is not None:
            keys.append(("expert_weights_scale", f32(config["routed_scaling_factor"])))
        if config.get("norm_topk_prob"):
            keys.append(("expert_weights_norm", True))
        keys.append(("rope.dimension_count", u32(config["qk_rope_head_dim"])))
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if rope.get("mscale_all_dim") is not None:
            # llama.cpp's deepseek2 convention (its TAG_DEEPSEEK2_YARN_LOG_MUL_FIX): 0.1 * mscale_all_dim.
            keys.append(("rope.scaling.yarn_log_multiplier", f32(0.1 * rope["mscale_all_dim"])))
    merged = {}
    for key, value in keys:
        merged[key] = value  # later writes replace earlier ones, in the first one's place
    return list(merged.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--out", required=True, help="output .gguf file")
    ap.add_argument("--type", default="f32", choices=sorted(FILE_TYPES))
    ap.add_argument("--splits", type=int, default=1, help="write N split files (gguf-split naming)")
    ap.add_argument("--tokenizer-pre", help="tokenizer.ggml.pre to write instead of the detected one")
    ap.add_argument("--split-experts", action="store_true",
                    help="llama arch: one 2-D tensor per expert (blk.N.ffn_gate.E.weight ...) instead of merged")
    args = ap.parse_args()

    with open(os.path.join(args.model, "config.json")) as f:
        config = json.load(f)
    archs = config.get("architectures", [])
    if len(archs) != 1 or archs[0] not in ARCHS:
        fail("%s: architectures %s; this converter handles %s" % (args.model, archs, ", ".join(sorted(ARCHS))))
    arch, config["model_type"] = ARCHS[archs[0]]
    if args.split_experts and arch != "llama":
        fail("--split-experts: only llama-arch (Mixtral) files have the legacy per-expert names")
    if args.splits < 1:
        fail("--splits must be >= 1")

    w = gg.Writer()
    w.add("general.architecture", arch)
    w.add("general.name", os.path.basename(os.path.normpath(args.model)))
    for key, value in family_hyperparameters(config):
        w.add(arch + "." + key, value)
    w.add("general.file_type", gg.Value(gg.UINT32, FILE_TYPES[args.type]))
    if args.type not in ("f32", "f16", "bf16"):
        w.add("general.quantization_version", gg.Value(gg.UINT32, 2))
    add_tokenizer(w, args.model, config, args.tokenizer_pre or TOKENIZER_PRE.get(config["model_type"]))

    st = Safetensors(args.model)
    counts = {}
    n_expert = n_routed_experts(config)
    for name, array in hf_tensors(st, config, args.split_experts):
        type_name = tensor_type(name, array, args.type, config["num_hidden_layers"], n_expert)
        w.add_array(name, array, type_name)
        counts[type_name] = counts.get(type_name, 0) + 1

    if args.splits == 1:
        w.write(args.out)
        outputs = [args.out]
    else:
        outputs = write_splits(w, args.out, args.splits)
    summary = ", ".join("%d %s" % (n, t) for t, n in sorted(counts.items()))
    print("hf-to-gguf: wrote %s (%s)" % (", ".join(outputs), summary), file=sys.stderr)


def write_splits(w, out, n_splits):
    """gguf-split's layout: every key in the first file, split.no / split.count /
    split.tensors.count in each, the tensors dealt out in order."""
    prefix = out[:-5] if out.endswith(".gguf") else out
    per = -(-len(w.tensors) // n_splits)
    paths = []
    for i in range(n_splits):
        part = gg.Writer(w.version, w.alignment)
        if i == 0:
            part.kv = dict(w.kv)
        part.add("split.no", gg.Value(gg.UINT16, i))
        part.add("split.count", gg.Value(gg.UINT16, n_splits))
        part.add("split.tensors.count", gg.Value(gg.INT32, len(w.tensors)))
        part.tensors = w.tensors[i * per:(i + 1) * per]
        path = "%s-%05d-of-%05d.gguf" % (prefix, i + 1, n_splits)
        part.write(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    main()
