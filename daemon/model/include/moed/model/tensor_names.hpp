#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "moed/model/model_spec.hpp"

namespace moed::model {

// The tensors of a layer's dense block: everything but its routed experts (norms, attention,
// router, and the dense MLP or the shared experts).
enum class DenseRole {
  attention_norm,
  ffn_norm,
  q,  // GQA q_proj, or MLA's q_proj when q_lora_rank is null
  k,
  v,
  q_bias,
  k_bias,
  v_bias,
  q_norm,
  k_norm,
  q_a,
  q_a_norm,
  q_b,
  kv_a,  // kv_a_proj_with_mqa: [latent | rope key]
  kv_a_norm,
  kv_b,
  // kv_b as llama.cpp's GGUF files split it: per head, the key part transposed
  // [kv_lora, nope] and the value part [v_head_dim, kv_lora] (AttentionSpec::split_kv_b).
  k_b,
  v_b,
  o,
  router,
  router_bias,  // e_score_correction_bias
  mlp_gate,     // the dense MLP of a dense layer, or the shared experts of a MoE layer
  mlp_up,
  mlp_down,
  shared_expert_gate,
};
constexpr std::size_t kDenseRoles = static_cast<std::size_t>(DenseRole::shared_expert_gate) + 1;

enum class ExpertMatrix { gate, up, down };

struct LayerTensor {
  DenseRole role;
  std::string name;
  std::vector<std::int64_t> shape;
};

// The Hugging Face tensor names of each family, with the shapes config.json implies.
// A layer's dense-block tensors, in the order the engine registers them with memtier.
std::vector<LayerTensor> dense_tensors(const ModelSpec& spec, std::int64_t layer);
std::string expert_tensor(const ModelSpec& spec, std::int64_t layer, std::int64_t expert,
                          ExpertMatrix matrix);
std::vector<std::int64_t> expert_shape(const ModelSpec& spec, ExpertMatrix matrix);
std::string embedding_tensor();
std::string final_norm_tensor();
// lm_head.weight, or the embedding when tied.
std::string lm_head_tensor(const ModelSpec& spec);
// "[4096, 14336]", for errors.
std::string shape_string(const std::vector<std::int64_t>& shape);
// Every tensor the plan needs, with its shape.
std::map<std::string, std::vector<std::int64_t>> expected_tensors(const ModelSpec& spec);
// Tensors a checkpoint may carry that the forward pass does not use: RoPE caches of old exports,
// DeepSeek-V3's multi-token-prediction layer (numbered after the last layer).
bool ignored_tensor(const ModelSpec& spec, const std::string& name);

}  // namespace moed::model
