#!/usr/bin/python3
"""scripts/hf-to-gguf.py on the tiny test models (made by scripts/make-gguf-test-models.sh):
keys, tensor names and shapes, the q/k row permutation, merged experts, per-tensor formats of the
q4_k_m recipe, the tokenizer keys, split files; every other family's keys, names, dims and exact
round trip; and scripts/reference.py reading the GGUF files (metadata only, no config.json) to the
same float64 logits as from the HF directory. Usage: test_hf_to_gguf.py TEST_MODELS_DIR"""
import json
import os
import struct
import sys
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import gguf_file as gg  # noqa: E402
import reference  # noqa: E402

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

    def check_one_type(self, file, file_type, type_name, bound):
        """Every matrix of file in type_name but the routers (f32), within bound of the f32 file."""
        q = gg.read(os.path.join(MODELS, file))
        self.assertEqual(q.metadata["general.file_type"], file_type)
        for name, t in q.tensors.items():
            keep_f32 = len(t.dims) == 1 or "ffn_gate_inp" in name
            self.assertEqual(t.type_name, "f32" if keep_f32 else type_name, name)
        self.check_close(q, {"f32": 0.0, type_name: bound})
        return q

    def test_q8_0(self):
        q = self.check_one_type("tiny-q8_0.gguf", 7, "q8_0", 0.0042)
        self.assertEqual(q.metadata["general.quantization_version"], 2)

    def test_q3_k(self):
        # A step is a quarter of its sub-block's largest magnitude (which lands on -4 of
        # [-4, 3]): an element of the opposite sign clipped at 3 is off by up to one step, the
        # others by half; the 6-bit scales' rounding adds up to 4/64 of a step's size.
        self.check_one_type("tiny-q3_k.gguf", 11, "q3_k", 0.27)  # LLAMA_FTYPE_MOSTLY_Q3_K_S

    def test_q2_k(self):
        # Four levels between a sub-block's min and max: half a step is up to a third of the
        # largest magnitude (a sub-block spanning [-max, max]); the 4-bit scales' and mins'
        # rounding adds to it.
        self.check_one_type("tiny-q2_k.gguf", 10, "q2_k", 0.4)  # LLAMA_FTYPE_MOSTLY_Q2_K

    def test_iq4_xs(self):
        # The codebook's widest gap (89 to 113) is 24 of 127 steps of a sub-block's largest
        # magnitude, so half of it 0.095; the 6-bit scales' rounding adds up to 1/64.
        self.check_one_type("tiny-iq4_xs.gguf", 30, "iq4_xs", 0.12)  # LLAMA_FTYPE_MOSTLY_IQ4_XS

    def test_iq3_xxs(self):
        # Half the grid's widest gap (52 to 62) is 5 of 62 steps of a sub-block's largest
        # magnitude, but an entry holds four magnitudes together and only 256 of the 4096
        # quadruples are entries; and a group of eight with an odd count of negatives flips its
        # smallest element's sign (the format keeps seven signs and their parity), which costs up
        # to twice that element's magnitude.
        self.check_one_type("tiny-iq3_xxs.gguf", 23, "iq3_xxs", 0.65)  # LLAMA_FTYPE_MOSTLY_IQ3_XXS

    def test_iq1_s_and_iq1_m(self):
        # Three levels (plus or minus an eighth) a step of 1.2 root mean squares apart: an element
        # past the top level, 1.35 root mean squares of its group, is clipped there, so the
        # largest ones lose most of their magnitude; the grid's 2048 of the 6561 octets add to it.
        self.check_one_type("tiny-iq1_s.gguf", 24, "iq1_s", 0.8)  # LLAMA_FTYPE_MOSTLY_IQ1_S
        self.check_one_type("tiny-iq1_m.gguf", 31, "iq1_m", 0.8)  # LLAMA_FTYPE_MOSTLY_IQ1_M

    def test_iq2_xxs_iq2_xs_and_iq2_s(self):
        # Three magnitudes (8, 25, 43 steps), the step of each 32 (iq2_xxs) or 16 elements chosen
        # for their least squared error, which may clip the largest of them at 43 steps; only
        # 256, 512 or 1024 of the 6561 octets are entries; and iq2_xxs and iq2_xs keep seven signs
        # and their parity, so a group of eight with an odd count of negatives gives its smallest
        # element the wrong sign (and the smallest magnitude).
        self.check_one_type("tiny-iq2_xxs.gguf", 19, "iq2_xxs", 0.5)  # LLAMA_FTYPE_MOSTLY_IQ2_XXS
        self.check_one_type("tiny-iq2_xs.gguf", 20, "iq2_xs", 0.5)  # LLAMA_FTYPE_MOSTLY_IQ2_XS
        self.check_one_type("tiny-iq2_s.gguf", 28, "iq2_s", 0.5)  # LLAMA_FTYPE_MOSTLY_IQ2_S

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


def gguf_name_of(family, hf_name):
    """The llama.cpp tensor name of an HF tensor of the tiny family models, written out here per
    family (not taken from the converter) so the test checks the converter's table."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    layer, rest = hf_name[len("model.layers."):].split(".", 1)
    table = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
             "self_attn.v_proj.weight": "attn_v.weight", "self_attn.q_proj.bias": "attn_q.bias",
             "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
             "self_attn.o_proj.weight": "attn_output.weight", "self_attn.q_norm.weight": "attn_q_norm.weight",
             "self_attn.k_norm.weight": "attn_k_norm.weight", "self_attn.q_a_proj.weight": "attn_q_a.weight",
             "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight", "self_attn.q_b_proj.weight": "attn_q_b.weight",
             "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
             "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
             "mlp.gate.weight": "ffn_gate_inp.weight", "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
             "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight",
             "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight"}
    for shared in ("mlp.shared_expert.", "mlp.shared_experts."):
        for proj in ("gate", "up", "down"):
            table[shared + proj + "_proj.weight"] = "ffn_%s_shexp.weight" % proj
    if rest in table:
        return "blk.%s.%s" % (layer, table[rest])
    return None  # routed experts and kv_b_proj: checked on their own


EXPECTED_KEYS = {
    # family: (arch, {key: (type, value or config key)})
    "qwen2_moe": ("qwen2moe", {"expert_feed_forward_length": "moe_intermediate_size",
                               "expert_shared_feed_forward_length": "shared_expert_intermediate_size",
                               "expert_count": "num_experts", "attention.head_count_kv": "num_key_value_heads"}),
    "qwen3_moe": ("qwen3moe", {"expert_feed_forward_length": "moe_intermediate_size", "expert_count": "num_experts",
                               "attention.key_length": "head_dim", "attention.value_length": "head_dim",
                               "attention.head_count_kv": "num_key_value_heads"}),
    "olmoe": ("olmoe", {"expert_count": "num_experts", "attention.head_count_kv": "num_key_value_heads"}),
    "deepseek_v2": ("deepseek2", {"expert_count": "n_routed_experts", "expert_shared_count": "n_shared_experts",
                                  "leading_dense_block_count": "first_k_dense_replace",
                                  "expert_feed_forward_length": "moe_intermediate_size",
                                  "attention.kv_lora_rank": "kv_lora_rank", "rope.dimension_count": "qk_rope_head_dim",
                                  "attention.value_length_mla": "v_head_dim", "vocab_size": "vocab_size",
                                  "expert_group_count": "n_group", "expert_group_used_count": "topk_group"}),
}
EXPECTED_KEYS["deepseek_v3"] = ("deepseek2", dict(EXPECTED_KEYS["deepseek_v2"][1], **{"attention.q_lora_rank": "q_lora_rank"}))
TOKENIZER_PRE = {"qwen2_moe": "qwen2", "qwen3_moe": "qwen2", "olmoe": "olmo", "deepseek_v2": "deepseek-llm",
                 "deepseek_v3": "deepseek-v3"}


class Families(unittest.TestCase):
    """tiny-FAMILY-f32.gguf against tiny-FAMILY (f32 safetensors) for the five non-Mixtral families."""

    def load(self, family):
        directory = os.path.join(MODELS, "tiny-" + family)
        with open(os.path.join(directory, "config.json")) as f:
            config = json.load(f)
        return config, load_safetensors(os.path.join(directory, "model.safetensors")), \
            gg.read(os.path.join(MODELS, "tiny-%s-f32.gguf" % family))

    def test_hyperparameters(self):
        for family, (arch, keys) in EXPECTED_KEYS.items():
            with self.subTest(family=family):
                c, _, g = self.load(family)
                m, types = g.metadata, g.types
                self.assertEqual(m["general.architecture"], arch)
                common = {"block_count": "num_hidden_layers", "embedding_length": "hidden_size",
                          "context_length": "max_position_embeddings", "feed_forward_length": "intermediate_size",
                          "attention.head_count": "num_attention_heads", "expert_used_count": "num_experts_per_tok"}
                for key, config_key in dict(common, **keys).items():
                    self.assertEqual(m[arch + "." + key], c[config_key], key)
                    self.assertEqual(types[arch + "." + key], gg.UINT32, key)
                for key, value in (("rope.freq_base", c["rope_theta"]),
                                   ("attention.layer_norm_rms_epsilon", 1e-5 if family == "olmoe" else c["rms_norm_eps"])):
                    self.assertEqual(m[arch + "." + key], np.float32(value), key)
                    self.assertEqual(types[arch + "." + key], gg.FLOAT32, key)
                self.assertEqual(m["tokenizer.ggml.model"], "gpt2")
                self.assertEqual(m["tokenizer.ggml.pre"], TOKENIZER_PRE[family])
                self.assertEqual(len(m["tokenizer.ggml.tokens"]), c["vocab_size"])
                self.assertEqual(m["general.file_type"], 0)
                if not family.startswith("deepseek"):
                    self.assertNotIn(arch + ".expert_gating_func", m)
                    self.assertNotIn(arch + ".leading_dense_block_count", m)
                    continue
                self.assertEqual(m["deepseek2.attention.head_count_kv"], 1)  # MLA as MQA
                self.assertEqual(m["deepseek2.attention.key_length"], c["kv_lora_rank"] + c["qk_rope_head_dim"])
                self.assertEqual(m["deepseek2.attention.value_length"], c["kv_lora_rank"])
                self.assertEqual(m["deepseek2.attention.key_length_mla"], c["qk_nope_head_dim"] + c["qk_rope_head_dim"])
                self.assertEqual(m["deepseek2.expert_gating_func"], {"softmax": 1, "sigmoid": 2}[c["scoring_func"]])
                self.assertEqual(m["deepseek2.expert_weights_scale"], np.float32(c["routed_scaling_factor"]))
                self.assertEqual(types["deepseek2.expert_weights_scale"], gg.FLOAT32)
                if c["norm_topk_prob"]:
                    self.assertIs(m["deepseek2.expert_weights_norm"], True)
                    self.assertEqual(types["deepseek2.expert_weights_norm"], gg.BOOL)
                else:
                    self.assertNotIn("deepseek2.expert_weights_norm", m)
                if c["q_lora_rank"] is None:
                    self.assertNotIn("deepseek2.attention.q_lora_rank", m)
                rope = c["rope_scaling"]
                self.assertEqual(m["deepseek2.rope.scaling.type"], "yarn")
                self.assertEqual(m["deepseek2.rope.scaling.factor"], rope["factor"])
                self.assertEqual(m["deepseek2.rope.scaling.original_context_length"], rope["original_max_position_embeddings"])
                self.assertEqual(m["deepseek2.rope.scaling.yarn_beta_fast"], rope["beta_fast"])
                self.assertEqual(m["deepseek2.rope.scaling.yarn_beta_slow"], rope["beta_slow"])
                self.assertEqual(m["deepseek2.rope.scaling.yarn_log_multiplier"], np.float32(0.1 * rope["mscale_all_dim"]))

    def test_tensors_round_trip(self):
        for family in EXPECTED_KEYS:
            with self.subTest(family=family):
                c, hf, g = self.load(family)
                t = g.tensors
                expected = set()
                for hf_name, array in hf.items():
                    name = gguf_name_of(family, hf_name)
                    if name is None:
                        continue
                    expected.add(name)
                    ours = t[name].values()
                    if hf_name.endswith("shared_expert_gate.weight"):
                        self.assertEqual(t[name].dims, [c["hidden_size"], 1])  # 2-D, not squeezed
                    np.testing.assert_array_equal(ours.reshape(array.shape), array, name)
                    self.assertEqual(t[name].shape, array.shape, name)
                    self.assertEqual(t[name].type_name, "f32")
                n_expert = c.get("num_experts", c.get("n_routed_experts"))
                for layer in range(c["num_hidden_layers"]):
                    experts = "model.layers.%d.mlp.experts.%%d.%%s_proj.weight" % layer
                    if experts % (0, "gate") not in hf:
                        self.assertNotIn("blk.%d.ffn_gate_inp.weight" % layer, t)
                        continue
                    for proj in ("gate", "up", "down"):
                        name = "blk.%d.ffn_%s_exps.weight" % (layer, proj)
                        expected.add(name)
                        rows, cols = hf[experts % (0, proj)].shape
                        self.assertEqual(t[name].dims, [cols, rows, n_expert])
                        merged = t[name].values()
                        for e in range(n_expert):
                            np.testing.assert_array_equal(merged[e], hf[experts % (e, proj)])
                for layer in range(c["num_hidden_layers"]):
                    kv_b = "model.layers.%d.self_attn.kv_b_proj.weight" % layer
                    if kv_b not in hf:
                        continue
                    heads, nope, v_dim = c["num_attention_heads"], c["qk_nope_head_dim"], c["v_head_dim"]
                    k_b, v_b = "blk.%d.attn_k_b.weight" % layer, "blk.%d.attn_v_b.weight" % layer
                    expected |= {k_b, v_b}
                    self.assertEqual(t[k_b].dims, [nope, c["kv_lora_rank"], heads])
                    self.assertEqual(t[v_b].dims, [c["kv_lora_rank"], v_dim, heads])
                    for h in range(heads):
                        rows = hf[kv_b][h * (nope + v_dim):(h + 1) * (nope + v_dim)]
                        np.testing.assert_array_equal(t[k_b].values()[h], rows[:nope].T)
                        np.testing.assert_array_equal(t[v_b].values()[h], rows[nope:])
                    self.assertNotIn("blk.%d.attn_kv_b.weight" % layer, t)
                self.assertEqual(set(t), expected)

    def test_quantized_formats(self):
        for family in EXPECTED_KEYS:
            with self.subTest(family=family):
                f32 = gg.read(os.path.join(MODELS, "tiny-%s-f32.gguf" % family))
                for quant, file_type in (("q8_0", 7), ("q4_k_m", 15)):
                    q = gg.read(os.path.join(MODELS, "tiny-%s-%s.gguf" % (family, quant)))
                    self.assertEqual(q.metadata["general.file_type"], file_type)
                    self.assertEqual(set(q.tensors), set(f32.tensors))
                    for name, t in q.tensors.items():
                        keep_f32 = (len([d for d in t.dims[1:] if d != 1]) == 0 or "_norm." in name
                                    or not name.endswith(".weight") or "ffn_gate_inp" in name)
                        if keep_f32:
                            self.assertEqual(t.type_name, "f32", name)
                        else:
                            self.assertNotEqual(t.type_name, "f32", name)
                        ref = f32.tensors[name].values()
                        err = np.abs(t.values() - ref).max() / np.abs(ref).max()
                        self.assertLessEqual(err, 0.08, "%s %s (%s)" % (family, name, t.type_name))


class SplitExperts(unittest.TestCase):
    def test_legacy_per_expert_names(self):
        merged = gg.read(os.path.join(MODELS, "tiny-q8_0.gguf"))
        split = gg.read(os.path.join(MODELS, "tiny-split-experts-q8_0.gguf"))
        self.assertEqual(split.metadata["general.architecture"], "llama")
        n_expert = split.metadata["llama.expert_count"]
        seen = set()
        for name, t in merged.tensors.items():
            if "_exps." not in name:
                self.assertEqual(split.tensors[name].raw, t.raw, name)
                seen.add(name)
                continue
            _, layer, kind, _ = name.split(".")
            proj = kind[len("ffn_"):-len("_exps")]
            for e in range(n_expert):
                part = "blk.%s.ffn_%s.%d.weight" % (layer, proj, e)
                self.assertEqual(split.tensors[part].dims, t.dims[:2])
                np.testing.assert_array_equal(split.tensors[part].values(), t.values()[e])
                seen.add(part)
        self.assertEqual(set(split.tensors), seen)


class ReferenceReadsGGUF(unittest.TestCase):
    """reference.py's GGUF path (its own reader, llama.cpp layouts mapped back, hyperparameters from
    the metadata) computes what its HF path computes, for every family's f32 file."""

    def test_f32_gguf_logits_equal_hf_logits(self):
        with open(os.path.join(ROOT, "tests", "golden", "prompt-tokens.txt")) as f:
            tokens = [int(x) for x in f.read().split(",")]
        pairs = [("tiny-f32", "tiny-f32.gguf")] + [("tiny-" + f, "tiny-%s-f32.gguf" % f) for f in EXPECTED_KEYS]
        for hf_dir, gguf in pairs:
            with self.subTest(model=gguf):
                expected = reference.model_forward(*reference.load(os.path.join(MODELS, hf_dir)), tokens)
                config, weights = reference.gguf_to_hf(*reference.read_gguf(os.path.join(MODELS, gguf)))
                got = reference.model_forward(config, weights, tokens)
                self.assertLess(np.abs(got - expected).max() / np.abs(expected).max(), 1e-12)

    def test_split_experts_and_split_files_read_back(self):
        merged = reference.gguf_to_hf(*reference.read_gguf(os.path.join(MODELS, "tiny-q8_0.gguf")))[1]
        split = reference.gguf_to_hf(*reference.read_gguf(os.path.join(MODELS, "tiny-split-experts-q8_0.gguf")))[1]
        self.assertEqual(set(merged), set(split))
        for name, array in merged.items():
            np.testing.assert_array_equal(split[name], array, name)
        config, weights = reference.gguf_to_hf(*reference.read_gguf(
            os.path.join(MODELS, "tiny-bytelevel-q6_k-00001-of-00003.gguf")))
        self.assertEqual(config["num_hidden_layers"], 2)
        self.assertIn("model.layers.1.block_sparse_moe.experts.0.w2.weight", weights)


if __name__ == "__main__":
    unittest.main()
