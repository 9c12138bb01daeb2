#!/usr/bin/python3
"""scripts/hf-to-gguf.py on the tiny test models (made by scripts/make-gguf-test-models.sh):
keys, tensor names and shapes, the q/k row permutation, merged experts, per-tensor formats of the
q4_k_m recipe, the tokenizer keys, and split files. Usage: test_hf_to_gguf.py TEST_MODELS_DIR"""
import json
import os
import struct
import sys
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import gguf_file as gg  # noqa: E402

MODELS = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(ROOT, "build", "test-models")


def load_safetensors(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32"
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype="<f4").reshape(info["shape"])
    return out


def hf_row(gguf_row, head_dim):
    """The HF row that a llama-arch GGUF q/k row holds: within a head, GGUF row 2i is HF row i
    and GGUF row 2i+1 is HF row head_dim/2 + i (rotate-half pairs made adjacent)."""
    head, within = divmod(gguf_row, head_dim)
    pair, second = divmod(within, 2)
    return head * head_dim + pair + second * (head_dim // 2)


class TinyF32(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(MODELS, "tiny-f32")
        with open(os.path.join(cls.dir, "config.json")) as f:
            cls.config = json.load(f)
        cls.hf = load_safetensors(os.path.join(cls.dir, "model.safetensors"))
        cls.gguf = gg.read(os.path.join(MODELS, "tiny-f32.gguf"))

    def test_hyperparameters(self):
        m, c = self.gguf.metadata, self.config
        self.assertEqual(m["general.architecture"], "llama")
        expected = {"llama.block_count": c["num_hidden_layers"], "llama.embedding_length": c["hidden_size"],
                    "llama.feed_forward_length": c["intermediate_size"],
                    "llama.attention.head_count": c["num_attention_heads"],
                    "llama.attention.head_count_kv": c["num_key_value_heads"],
                    "llama.expert_count": c["num_local_experts"],
                    "llama.expert_used_count": c["num_experts_per_tok"],
                    "llama.context_length": c["max_position_embeddings"], "llama.vocab_size": c["vocab_size"],
                    "llama.rope.dimension_count": c["hidden_size"] // c["num_attention_heads"],
                    "general.file_type": 0}
        for key, value in expected.items():
            self.assertEqual(m[key], value, key)
            self.assertEqual(self.gguf.types[key], gg.UINT32, key)
        self.assertEqual(m["llama.rope.freq_base"], np.float32(c["rope_theta"]))
        self.assertEqual(m["llama.attention.layer_norm_rms_epsilon"], np.float32(c["rms_norm_eps"]))
        self.assertNotIn("general.quantization_version", m)

    def test_tensor_names_and_shapes(self):
        c = self.config
        hidden, ffn, experts = c["hidden_size"], c["intermediate_size"], c["num_local_experts"]
        names = {"token_embd.weight", "output_norm.weight", "output.weight"}
        for layer in range(c["num_hidden_layers"]):
            names |= {"blk.%d.%s.weight" % (layer, t) for t in (
                "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate_inp",
                "ffn_gate_exps", "ffn_down_exps", "ffn_up_exps")}
        self.assertEqual(set(self.gguf.tensors), names)
        t = self.gguf.tensors
        self.assertEqual(t["blk.0.ffn_gate_exps.weight"].dims, [hidden, ffn, experts])
        self.assertEqual(t["blk.0.ffn_down_exps.weight"].dims, [ffn, hidden, experts])
        self.assertEqual(t["blk.0.ffn_gate_inp.weight"].dims, [hidden, experts])
        self.assertEqual(t["token_embd.weight"].dims, [hidden, c["vocab_size"]])
        self.assertTrue(all(x.type_name == "f32" for x in t.values()))
        self.assertTrue(all(x.offset % 32 == 0 for x in t.values()))

    def test_q_and_k_rows_are_permuted_as_llama_cpp_does(self):
        head_dim = self.config["hidden_size"] // self.config["num_attention_heads"]
        for layer in range(self.config["num_hidden_layers"]):
            for gguf_name, hf_name in (("attn_q", "q_proj"), ("attn_k", "k_proj")):
                ours = self.gguf.tensors["blk.%d.%s.weight" % (layer, gguf_name)].values()
                theirs = self.hf["model.layers.%d.self_attn.%s.weight" % (layer, hf_name)]
                rows = [hf_row(r, head_dim) for r in range(theirs.shape[0])]
                np.testing.assert_array_equal(ours, theirs[rows])
                self.assertFalse(np.array_equal(ours, theirs))  # the permutation did something
            np.testing.assert_array_equal(self.gguf.tensors["blk.%d.attn_v.weight" % layer].values(),
                                          self.hf["model.layers.%d.self_attn.v_proj.weight" % layer])

    def test_experts_are_merged_in_order(self):
        for layer in range(self.config["num_hidden_layers"]):
            for gguf_name, hf_name in (("ffn_gate_exps", "w1"), ("ffn_down_exps", "w2"), ("ffn_up_exps", "w3")):
                merged = self.gguf.tensors["blk.%d.%s.weight" % (layer, gguf_name)].values()
                for e in range(self.config["num_local_experts"]):
                    np.testing.assert_array_equal(
                        merged[e], self.hf["model.layers.%d.block_sparse_moe.experts.%d.%s.weight" % (layer, e, hf_name)])
        np.testing.assert_array_equal(self.gguf.tensors["token_embd.weight"].values(),
                                      self.hf["model.embed_tokens.weight"])
        np.testing.assert_array_equal(self.gguf.tensors["output.weight"].values(), self.hf["lm_head.weight"])

    def test_llama_tokenizer(self):
        with open(os.path.join(self.dir, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        with open(os.path.join(self.dir, "tokenizer_config.json"), encoding="utf-8") as f:
            tok_config = json.load(f)
        m = self.gguf.metadata
        self.assertEqual(m["tokenizer.ggml.model"], "llama")
        tokens = m["tokenizer.ggml.tokens"]
        self.assertEqual(len(tokens), self.config["vocab_size"])
        for text, ident in tok["model"]["vocab"].items():
            self.assertEqual(tokens[ident], text)
        types = m["tokenizer.ggml.token_type"]
        self.assertEqual(types[tokens.index("<0x41>")], 6)  # byte
        self.assertEqual(types[1], 3)  # <s>: control
        self.assertEqual(types[tokens.index(tok["model"]["merges"][0].replace(" ", ""))], 1)
        scores = m["tokenizer.ggml.scores"]
        merges = tok["model"]["merges"]
        first, last = merges[0].replace(" ", ""), merges[-1].replace(" ", "")
        self.assertEqual(scores[tokens.index(first)], 0.0)
        self.assertEqual(scores[tokens.index(last)], -float(len(merges) - 1))
        self.assertEqual(m["tokenizer.ggml.bos_token_id"], 1)
        self.assertEqual(m["tokenizer.ggml.eos_token_id"], 2)
        self.assertEqual(m["tokenizer.ggml.unknown_token_id"], 0)
        self.assertIs(m["tokenizer.ggml.add_bos_token"], True)
        self.assertEqual(m["tokenizer.chat_template"], tok_config["chat_template"])


class TinyQuantized(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.f32 = gg.read(os.path.join(MODELS, "tiny-f32.gguf"))

    def check_close(self, quantized, bounds):
        for name, t in quantized.tensors.items():
            ref = self.f32.tensors[name].values()
            err = np.abs(t.values() - ref).max() / np.abs(ref).max()
            self.assertLessEqual(err, bounds[t.type_name], "%s (%s)" % (name, t.type_name))

    def test_q8_0(self):
        q = gg.read(os.path.join(MODELS, "tiny-q8_0.gguf"))
        self.assertEqual(q.metadata["general.file_type"], 7)
        self.assertEqual(q.metadata["general.quantization_version"], 2)
        for name, t in q.tensors.items():
            keep_f32 = len(t.dims) == 1 or "ffn_gate_inp" in name
            self.assertEqual(t.type_name, "f32" if keep_f32 else "q8_0", name)
        self.check_close(q, {"f32": 0.0, "q8_0": 0.0042})

    def test_q4_k_m_recipe(self):
        q = gg.read(os.path.join(MODELS, "tiny-q4_k_m.gguf"))
        self.assertEqual(q.metadata["general.file_type"], 15)
        t = q.tensors
        # 4 layers: use_more_bits is true for layers 2 and 3 (>= 7/8 * 4; (i - 0) % 3 == 2).
        self.assertEqual(t["output.weight"].type_name, "q6_k")
        self.assertEqual(t["token_embd.weight"].type_name, "q4_k")
        for layer in range(4):
            b = "blk.%d." % layer
            self.assertEqual(t[b + "ffn_down_exps.weight"].type_name, "q6_k" if layer >= 2 else "q4_k")
            self.assertEqual(t[b + "attn_v.weight"].type_name, "q8_0")  # 8 experts
            self.assertEqual(t[b + "attn_output.weight"].type_name, "q5_k")  # 8 experts
            self.assertEqual(t[b + "ffn_up_exps.weight"].type_name, "q4_k")
            self.assertEqual(t[b + "ffn_gate_inp.weight"].type_name, "f32")
        # Half a quantization step of max |x| (q8_0: 1/254; K-quants: a sub-block's range over
        # 2 * levels, at most 2 max|x| / (2 * 15) for q4_K) with slack for the 6-bit scales.
        self.check_close(q, {"f32": 0.0, "q8_0": 0.0042, "q6_k": 0.025, "q5_k": 0.04, "q4_k": 0.08})


class ByteLevelSplit(unittest.TestCase):
    def test_split_files_and_gpt2_tokenizer(self):
        paths = [os.path.join(MODELS, "tiny-bytelevel-q6_k-%05d-of-00003.gguf" % i) for i in (1, 2, 3)]
        parts = [gg.read(p) for p in paths]
        total = sum(len(p.tensors) for p in parts)
        for i, part in enumerate(parts):
            self.assertEqual(part.metadata["split.no"], i)
            self.assertEqual(part.types["split.no"], gg.UINT16)
            self.assertEqual(part.metadata["split.count"], 3)
            self.assertEqual(part.metadata["split.tensors.count"], total)
            self.assertEqual("general.architecture" in part.metadata, i == 0)
        m = parts[0].metadata
        with open(os.path.join(MODELS, "tiny-bytelevel", "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        self.assertEqual(m["tokenizer.ggml.model"], "gpt2")
        self.assertEqual(m["tokenizer.ggml.pre"], "gpt-2")
        self.assertEqual(m["tokenizer.ggml.merges"], [a + " " + b for a, b in tok["model"]["merges"]])
        self.assertNotIn("tokenizer.ggml.scores", m)
        eos = tok["added_tokens"][0]
        self.assertEqual(m["tokenizer.ggml.tokens"][eos["id"]], eos["content"])
        self.assertEqual(m["tokenizer.ggml.token_type"][eos["id"]], 3)
        self.assertEqual(m["tokenizer.ggml.eos_token_id"], eos["id"])


if __name__ == "__main__":
    unittest.main()
