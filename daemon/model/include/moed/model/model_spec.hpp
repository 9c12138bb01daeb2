#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace moed::model {

// Throws std::runtime_error naming the path when it is not an existing directory, so that a
// mistyped --model is reported as such, not as the first file missing from it.
void require_model_dir(const std::filesystem::path& model_dir);

// The architecture hyper-parameters of a checkpoint, read from its config.json.
struct ModelSpec {
  std::string model_type;  // "mixtral"
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;  // per expert
  std::int64_t num_layers = 0;
  std::int64_t num_heads = 0;
  std::int64_t num_kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t num_experts = 0;
  std::int64_t experts_per_token = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 1e6;
  std::int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  std::int64_t bos_token_id = -1;
  std::vector<std::int64_t> eos_token_ids;

  // Reads and validates DIR/config.json; throws std::runtime_error naming the file and key.
  static ModelSpec from_config(const std::filesystem::path& model_dir);
};

}  // namespace moed::model
