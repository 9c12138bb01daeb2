#!/usr/bin/python3
"""Convert a Hugging Face Mixtral checkpoint (config.json, safetensors, tokenizer.json) to GGUF,
laid out as llama.cpp's convert_hf_to_gguf.py and llama-quantize lay it out:

- architecture `llama` with the `llama.*` hyperparameters, `llama.expert_count` and
  `llama.expert_used_count`; general.file_type and general.quantization_version;
- tensor names token_embd / output_norm / output and blk.N.{attn_norm, attn_q, attn_k, attn_v,
  attn_output, ffn_norm, ffn_gate_inp, ffn_gate_exps, ffn_down_exps, ffn_up_exps}, the experts
  merged into 3-D tensors (numpy [expert, rows, cols], GGUF ne = [cols, rows, expert]);
- attn_q / attn_k rows permuted as llama.cpp's LlamaModel.permute does (the HF checkpoint holds
  them in the rotate-half order; llama-arch GGUF files hold them interleaved);
- norms and the router (ffn_gate_inp) stay f32, as llama.cpp keeps them;
- tokenizer.ggml.* from tokenizer.json: `llama` (SentencePiece-style BPE with byte fallback:
  tokens, scores, token types) or `gpt2` (byte-level BPE: tokens, token types, merges, `pre`),
  special ids, add_bos/add_eos, and tokenizer.chat_template from tokenizer_config.json.

One departure: llama.cpp's LlamaHfVocab writes the placeholder score -1000 for every token of a
tokenizer.json-only Llama tokenizer, which leaves SentencePiece-style merging without an order.
Here a token's score is minus the rank of the merge that makes it, the order HF's BPE merges in.

--type picks the weights' format: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k,
or the mixed recipes q4_k_m / q5_k_m (llama-quantize's: q6_K for output, for attn_v and ffn_down
in the first and last eighth of the layers and every third layer between; attn_v q8_0 and
attn_output q5_K with 8 experts). A tensor whose rows are not whole blocks of the type falls back
as llama-quantize does (q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0; then f16).
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
              "q4_k": 14, "q4_k_m": 15, "q5_k": 16, "q5_k_m": 17, "q6_k": 18, "bf16": 32}
FALLBACK = {"q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}
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


def permute(weights, n_head, n_head_kv):
    """llama.cpp's LlamaModel.permute: rotate-half row order -> interleaved pairs, per head."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def hf_tensors(st, config):
    """(GGUF name, float32 array) in llama.cpp's naming, experts merged."""
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_head)
    n_expert = config["num_local_experts"]
    yield "token_embd.weight", st.get("model.embed_tokens.weight")
    yield "output_norm.weight", st.get("model.norm.weight")
    if "lm_head.weight" in st and not config.get("tie_word_embeddings", False):
        yield "output.weight", st.get("lm_head.weight")
    for layer in range(config["num_hidden_layers"]):
        hf = "model.layers.%d." % layer
        blk = "blk.%d." % layer
        yield blk + "attn_norm.weight", st.get(hf + "input_layernorm.weight")
        yield blk + "attn_q.weight", permute(st.get(hf + "self_attn.q_proj.weight"), n_head, n_head)
        yield blk + "attn_k.weight", permute(st.get(hf + "self_attn.k_proj.weight"), n_head, n_kv)
        yield blk + "attn_v.weight", st.get(hf + "self_attn.v_proj.weight")
        yield blk + "attn_output.weight", st.get(hf + "self_attn.o_proj.weight")
        yield blk + "ffn_norm.weight", st.get(hf + "post_attention_layernorm.weight")
        yield blk + "ffn_gate_inp.weight", st.get(hf + "block_sparse_moe.gate.weight")
        for hf_name, gguf_name in (("w1", "ffn_gate_exps"), ("w2", "ffn_down_exps"), ("w3", "ffn_up_exps")):
            experts = [st.get(hf + "block_sparse_moe.experts.%d.%s.weight" % (e, hf_name)) for e in range(n_expert)]
            yield blk + gguf_name + ".weight", np.stack(experts)


# ---------------------------------------------------------------------------------------------
# Formats per tensor

def use_more_bits(i_layer, n_layers):
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def tensor_type(name, array, recipe, n_layers, n_expert):
    if array.ndim == 1 or name.endswith("ffn_gate_inp.weight"):
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
    if pre.get("type") == "ByteLevel":
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

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--out", required=True, help="output .gguf file")
    ap.add_argument("--type", default="f32", choices=sorted(FILE_TYPES))
    ap.add_argument("--splits", type=int, default=1, help="write N split files (gguf-split naming)")
    ap.add_argument("--tokenizer-pre", help="tokenizer.ggml.pre to write instead of the detected one")
    args = ap.parse_args()

    with open(os.path.join(args.model, "config.json")) as f:
        config = json.load(f)
    archs = config.get("architectures", [])
    if archs != ["MixtralForCausalLM"]:
        fail("%s: architectures %s; this converter handles MixtralForCausalLM" % (args.model, archs))
    if args.splits < 1:
        fail("--splits must be >= 1")

    w = gg.Writer()
    n_head = config["num_attention_heads"]
    hidden = config["hidden_size"]
    w.add("general.architecture", "llama")
    w.add("general.name", os.path.basename(os.path.normpath(args.model)))
    w.add("llama.vocab_size", gg.Value(gg.UINT32, config["vocab_size"]))
    w.add("llama.context_length", gg.Value(gg.UINT32, config.get("max_position_embeddings", 4096)))
    w.add("llama.embedding_length", gg.Value(gg.UINT32, hidden))
    w.add("llama.block_count", gg.Value(gg.UINT32, config["num_hidden_layers"]))
    w.add("llama.feed_forward_length", gg.Value(gg.UINT32, config["intermediate_size"]))
    w.add("llama.rope.dimension_count", gg.Value(gg.UINT32, config.get("head_dim", hidden // n_head)))
    w.add("llama.attention.head_count", gg.Value(gg.UINT32, n_head))
    w.add("llama.attention.head_count_kv", gg.Value(gg.UINT32, config.get("num_key_value_heads", n_head)))
    w.add("llama.rope.freq_base", gg.Value(gg.FLOAT32, float(config.get("rope_theta", 10000.0))))
    w.add("llama.attention.layer_norm_rms_epsilon", gg.Value(gg.FLOAT32, float(config["rms_norm_eps"])))
    w.add("llama.expert_count", gg.Value(gg.UINT32, config["num_local_experts"]))
    w.add("llama.expert_used_count", gg.Value(gg.UINT32, config["num_experts_per_tok"]))
    w.add("general.file_type", gg.Value(gg.UINT32, FILE_TYPES[args.type]))
    if args.type not in ("f32", "f16", "bf16"):
        w.add("general.quantization_version", gg.Value(gg.UINT32, 2))
    add_tokenizer(w, args.model, config, args.tokenizer_pre)

    st = Safetensors(args.model)
    counts = {}
    for name, array in hf_tensors(st, config):
        type_name = tensor_type(name, array, args.type, config["num_hidden_layers"], config["num_local_experts"])
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
