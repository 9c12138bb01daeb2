#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace moed::model {

// Throws std::runtime_error naming the path when it is not an existing directory, so that a
// mistyped --model is reported as such, not as the first file missing from it.
void require_model_dir(const std::filesystem::path& model_dir);

// The model families moed computes, by their Hugging Face model_type.
enum class Family { mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3 };
const char* to_string(Family family);

// Grouped-query attention (every family but DeepSeek) or multi-head latent attention (DeepSeek:
// keys and values come up from a cached latent vector).
enum class AttentionKind { gqa, mla };
// A dense gated MLP, or routed experts (plus shared experts, if the family has them).
enum class FfnKind { dense, moe };
const char* to_string(AttentionKind kind);
const char* to_string(FfnKind kind);

// RMSNorm of queries and keys before RoPE: per head over head_dim (Qwen3) or over the whole
// projection (OLMoE).
enum class QkNorm { none, per_head, whole };

// NeoX "rotate half" (element i pairs with i + d/2) or GPT-J pairs (2i, 2i+1), as DeepSeek does.
enum class RopeStyle { half, interleaved };

struct RopeSpec {
  RopeStyle style = RopeStyle::half;
  std::int64_t dim = 0;  // rotated elements per head
  double theta = 1e6;
  // YaRN (rope_scaling type "yarn"); factor 0 means plain RoPE.
  double yarn_factor = 0;
  double yarn_original_max_positions = 0;
  double yarn_beta_fast = 32;
  double yarn_beta_slow = 1;
  double attention_factor = 1;  // cos and sin are multiplied by it
  // [dim / 2] rotation frequencies, as transformers computes them for this rope type.
  std::vector<double> inverse_frequencies() const;
};

struct AttentionSpec {
  AttentionKind kind = AttentionKind::gqa;
  std::int64_t heads = 0;
  // GQA
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  bool qkv_bias = false;
  QkNorm qk_norm = QkNorm::none;
  double clip_qkv = 0;  // OLMoE: clamp q, k, v to [-clip, clip] after the norm; 0: no clamp
  // MLA
  std::int64_t q_lora_rank = 0;  // 0: a plain q_proj (DeepSeek-V2-Lite)
  std::int64_t kv_lora_rank = 0;
  std::int64_t qk_nope_head_dim = 0;
  std::int64_t qk_rope_head_dim = 0;
  std::int64_t v_head_dim = 0;
  double softmax_scale = 0;  // the scale of q.k
  // kv_b comes split per head into k_b and v_b (llama.cpp's GGUF files), not as kv_b_proj.
  bool split_kv_b = false;
  // Elements of one position's cache entry per layer: keys and values of every KV head, or
  // MLA's latent plus its rope key (shared by all heads).
  std::int64_t cache_elements() const;
  std::int64_t query_width() const;   // q_proj rows
  std::int64_t output_width() const;  // o_proj columns
};

enum class Scoring { softmax, sigmoid };

// How routed experts are chosen and weighted.
struct RouterSpec {
  Scoring scoring = Scoring::softmax;
  bool correction_bias = false;  // DeepSeek-V3: a bias added to scores for the choice only
  // Group-limited choice: experts split into n_group groups, only the best topk_group groups'
  // experts may be chosen. Group score: max (DeepSeek-V2) or sum of its top two (V3).
  std::int64_t n_group = 1;
  std::int64_t topk_group = 1;
  bool group_top2_sum = false;
  // The score the experts of groups not kept get before the top-k: transformers masks with 0.0,
  // llama.cpp (GGUF files) with -inf; they differ when a kept expert's biased score is negative.
  float masked_group_score = 0.0f;
  bool normalize = true;  // top-k weights renormalised to sum to 1
  // llama.cpp divides by the top-k sum clamped below at 2^-14 (fp16's smallest normal);
  // transformers adds 1e-20 to it for sigmoid scores and nothing for softmax.
  bool clamp_weight_sum = false;
  double scaling = 1.0;      // routed_scaling_factor, applied last
  bool fp32_logits = false;  // the router Linear runs in f32 even for bf16 weights (DeepSeek)
};

struct LayerKinds {
  AttentionKind attention = AttentionKind::gqa;
  FfnKind ffn = FfnKind::moe;
};

// The architecture of a checkpoint as a layer plan: model-wide shapes, then per layer the kinds
// of its attention and FFN. Read from config.json (Hugging Face directories) or from a GGUF
// file's metadata (gguf_model.hpp).
struct ModelSpec {
  std::string model_type;
  Family family = Family::mixtral;
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t num_layers = 0;
  AttentionSpec attention;
  RopeSpec rope;
  RouterSpec router;
  std::int64_t num_experts = 0;
  std::int64_t experts_per_token = 0;
  std::int64_t intermediate_size = 0;         // per routed expert
  std::int64_t dense_intermediate_size = 0;   // dense layers' MLP
  std::int64_t shared_intermediate_size = 0;  // shared experts of a MoE layer, stacked; 0: none
  bool shared_expert_gate = false;            // Qwen2-MoE: sigmoid(gate . x) scales them
  std::vector<LayerKinds> layers;
  double rms_norm_eps = 1e-5;
  std::int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  std::int64_t bos_token_id = -1;
  std::vector<std::int64_t> eos_token_ids;
  // A fine-grained FP8 checkpoint (quantization_config with quant_method "fp8"): the blocks of
  // [rows, cols] elements that each scale of an f8_e4m3 weight covers (weight_block_size); 0
  // where config.json names no quantization.
  std::int64_t fp8_block_rows = 0;
  std::int64_t fp8_block_cols = 0;

  std::int64_t moe_layer_count() const;
  bool has_experts(std::int64_t layer) const {
    return layers[static_cast<std::size_t>(layer)].ffn == FfnKind::moe;
  }

  // Reads and validates DIR/config.json; throws std::runtime_error naming the file and key.
  static ModelSpec from_config(const std::filesystem::path& model_dir);
};

}  // namespace moed::model
