#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "moed/engine/kv_cache.hpp"
#include "moed/engine/sampler.hpp"
#include "moed/kernels/cpu_matmul.hpp"
#include "moed/model/checkpoint.hpp"
#include "moed/model/model_spec.hpp"

namespace moed::engine {

struct EngineOptions {
  int threads = 0;  // compute threads; 0: one per physical core (hwloc)
};

// Weights of one routed expert, packed for oneDNN: w1 stacked over w3, and w2.
struct ExpertWeights {
  kernels::PackedWeight gate_up;  // [2*ffn, hidden]
  kernels::PackedWeight down;     // [hidden, ffn]
  std::size_t bytes() const { return gate_up.bytes() + down.bytes(); }
};

struct LayerWeights {
  std::vector<float> attention_norm;  // f32 [hidden]
  std::vector<float> ffn_norm;        // f32 [hidden]
  kernels::PackedWeight qkv;          // [(heads + 2*kv_heads) * head_dim, hidden]
  kernels::PackedWeight output;       // [hidden, heads * head_dim]
  kernels::PackedWeight router;       // [experts, hidden]
  std::vector<ExpertWeights> experts;
  std::size_t dense_bytes() const { return qkv.bytes() + output.bytes() + router.bytes(); }
};

// The CPU forward pass of a Mixtral-architecture model: prefill and decode over a KV cache,
// weights read in place from the checkpoint and packed once for oneDNN.
class Engine {
 public:
  Engine(const std::filesystem::path& model_dir, const EngineOptions& options);

  const model::ModelSpec& spec() const { return spec_; }
  KvCache new_cache() const;

  // Runs `tokens` at positions cache.length().. and appends them to the cache. Writes f32 logits
  // [tokens.size(), vocab] when all_rows, else only the last row's [vocab].
  void forward(std::span<const std::int32_t> tokens, KvCache& cache, std::vector<float>& logits,
               bool all_rows);

  // Prefill then decode up to max_new tokens, stopping after an EOS id. on_token may return
  // false to stop early. Returns the generated ids.
  std::vector<std::int32_t> generate(std::span<const std::int32_t> prompt, std::int64_t max_new,
                                     const SamplingParams& params,
                                     const std::function<bool(const SampledToken&)>& on_token);

  // Bytes one decode step reads at a given context length: dense parts of every layer,
  // experts_per_token experts per layer, the LM head, and the keys and values of the context.
  std::size_t bytes_per_decode_token(std::int64_t context_length) const;
  std::size_t packed_bytes() const;
  std::string matmul_implementation();

 private:
  void check_tokens(std::span<const std::int32_t> tokens) const;
  void embed(std::span<const std::int32_t> tokens, float* out) const;
  void moe(std::int64_t layer, const float* h, std::int64_t rows, float* x);

  model::ModelSpec spec_;
  model::Checkpoint checkpoint_;
  const model::TensorInfo* embedding_;  // [vocab, hidden], read in place
  kernels::CpuMatmul matmul_;
  std::vector<LayerWeights> layers_;
  std::vector<float> final_norm_;  // f32 [hidden]
  kernels::PackedWeight lm_head_;  // [vocab, hidden]
};

}  // namespace moed::engine
