#include "moed/model/tensor_names.hpp"

namespace moed::model {
namespace {

std::string layer_prefix(std::int64_t layer) {
  return "model.layers." + std::to_string(layer) + ".";
}

// Mixtral keeps its MoE under block_sparse_moe with w1/w3/w2; the others under mlp with
// gate/up/down projections.
std::string moe_prefix(const ModelSpec& spec, std::int64_t layer) {
  return layer_prefix(layer) + (spec.family == Family::mixtral ? "block_sparse_moe." : "mlp.");
}

}  // namespace

std::vector<LayerTensor> dense_tensors(const ModelSpec& s, std::int64_t layer) {
  using R = DenseRole;
  const auto& a = s.attention;
  const std::int64_t hidden = s.hidden_size;
  const std::string p = layer_prefix(layer);
  const std::string attn = p + "self_attn.";
  std::vector<LayerTensor> out{{R::attention_norm, p + "input_layernorm.weight", {hidden}},
                               {R::ffn_norm, p + "post_attention_layernorm.weight", {hidden}}};
  if (a.kind == AttentionKind::gqa) {
    const std::int64_t q_rows = a.heads * a.head_dim;
    const std::int64_t kv_rows = a.kv_heads * a.head_dim;
    out.push_back({R::q, attn + "q_proj.weight", {q_rows, hidden}});
    out.push_back({R::k, attn + "k_proj.weight", {kv_rows, hidden}});
    out.push_back({R::v, attn + "v_proj.weight", {kv_rows, hidden}});
    if (a.qkv_bias) {
      out.push_back({R::q_bias, attn + "q_proj.bias", {q_rows}});
      out.push_back({R::k_bias, attn + "k_proj.bias", {kv_rows}});
      out.push_back({R::v_bias, attn + "v_proj.bias", {kv_rows}});
    }
    if (a.qk_norm == QkNorm::per_head) {
      out.push_back({R::q_norm, attn + "q_norm.weight", {a.head_dim}});
      out.push_back({R::k_norm, attn + "k_norm.weight", {a.head_dim}});
    } else if (a.qk_norm == QkNorm::whole) {
      out.push_back({R::q_norm, attn + "q_norm.weight", {q_rows}});
      out.push_back({R::k_norm, attn + "k_norm.weight", {kv_rows}});
    }
  } else {
    const std::int64_t q_rows = a.query_width();
    if (a.q_lora_rank == 0) {
      out.push_back({R::q, attn + "q_proj.weight", {q_rows, hidden}});
    } else {
      out.push_back({R::q_a, attn + "q_a_proj.weight", {a.q_lora_rank, hidden}});
      out.push_back({R::q_a_norm, attn + "q_a_layernorm.weight", {a.q_lora_rank}});
      out.push_back({R::q_b, attn + "q_b_proj.weight", {q_rows, a.q_lora_rank}});
    }
    out.push_back({R::kv_a,
                   attn + "kv_a_proj_with_mqa.weight",
                   {a.kv_lora_rank + a.qk_rope_head_dim, hidden}});
    out.push_back({R::kv_a_norm, attn + "kv_a_layernorm.weight", {a.kv_lora_rank}});
    if (a.split_kv_b) {
      out.push_back(
          {R::k_b, attn + "k_b_proj.weight", {a.heads, a.kv_lora_rank, a.qk_nope_head_dim}});
      out.push_back({R::v_b, attn + "v_b_proj.weight", {a.heads, a.v_head_dim, a.kv_lora_rank}});
    } else {
      out.push_back({R::kv_b,
                     attn + "kv_b_proj.weight",
                     {a.heads * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank}});
    }
  }
  out.push_back({R::o, attn + "o_proj.weight", {hidden, a.output_width()}});

  auto mlp = [&](const std::string& prefix, std::int64_t width) {
    out.push_back({R::mlp_gate, prefix + "gate_proj.weight", {width, hidden}});
    out.push_back({R::mlp_up, prefix + "up_proj.weight", {width, hidden}});
    out.push_back({R::mlp_down, prefix + "down_proj.weight", {hidden, width}});
  };
  if (!s.has_experts(layer)) {
    mlp(p + "mlp.", s.dense_intermediate_size);
    return out;
  }
  const std::string moe = moe_prefix(s, layer);
  out.push_back({R::router, moe + "gate.weight", {s.num_experts, hidden}});
  if (s.router.correction_bias)
    out.push_back({R::router_bias, moe + "gate.e_score_correction_bias", {s.num_experts}});
  if (s.shared_intermediate_size > 0) {
    const bool deepseek = s.family == Family::deepseek_v2 || s.family == Family::deepseek_v3;
    mlp(moe + (deepseek ? "shared_experts." : "shared_expert."), s.shared_intermediate_size);
    if (s.shared_expert_gate)
      out.push_back({R::shared_expert_gate, moe + "shared_expert_gate.weight", {1, hidden}});
  }
  return out;
}

std::string expert_tensor(const ModelSpec& spec, std::int64_t layer, std::int64_t expert,
                          ExpertMatrix matrix) {
  static const char* const kMixtral[] = {"w1", "w3", "w2"};
  static const char* const kProjections[] = {"gate_proj", "up_proj", "down_proj"};
  const auto index = static_cast<std::size_t>(matrix);
  return moe_prefix(spec, layer) + "experts." + std::to_string(expert) + "." +
         (spec.family == Family::mixtral ? kMixtral : kProjections)[index] + ".weight";
}

std::vector<std::int64_t> expert_shape(const ModelSpec& spec, ExpertMatrix matrix) {
  if (matrix == ExpertMatrix::down) return {spec.hidden_size, spec.intermediate_size};
  return {spec.intermediate_size, spec.hidden_size};
}

std::string embedding_tensor() {
  return "model.embed_tokens.weight";
}

std::string final_norm_tensor() {
  return "model.norm.weight";
}

std::string lm_head_tensor(const ModelSpec& spec) {
  return spec.tie_word_embeddings ? embedding_tensor() : "lm_head.weight";
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::map<std::string, std::vector<std::int64_t>> expected_tensors(const ModelSpec& s) {
  std::map<std::string, std::vector<std::int64_t>> out{
      {embedding_tensor(), {s.vocab_size, s.hidden_size}},
      {final_norm_tensor(), {s.hidden_size}},
  };
  if (!s.tie_word_embeddings) out["lm_head.weight"] = {s.vocab_size, s.hidden_size};
  for (std::int64_t l = 0; l < s.num_layers; ++l) {
    for (auto& t : dense_tensors(s, l)) out[t.name] = t.shape;
    if (!s.has_experts(l)) continue;
    for (std::int64_t e = 0; e < s.num_experts; ++e)
      for (const auto m : {ExpertMatrix::gate, ExpertMatrix::up, ExpertMatrix::down})
        out[expert_tensor(s, l, e, m)] = expert_shape(s, m);
  }
  return out;
}

bool ignored_tensor(const ModelSpec& spec, const std::string& name) {
  if (name.ends_with("rotary_emb.inv_freq")) return true;
  if (spec.family != Family::deepseek_v3) return false;
  const std::string prefix = "model.layers.";
  if (!name.starts_with(prefix)) return false;
  std::int64_t layer = 0;
  std::size_t i = prefix.size();
  if (i >= name.size() || name[i] < '0' || name[i] > '9') return false;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && layer < (1 << 20); ++i)
    layer = layer * 10 + (name[i] - '0');
  return layer >= spec.num_layers && i < name.size() && name[i] == '.';
}

}  // namespace moed::model
