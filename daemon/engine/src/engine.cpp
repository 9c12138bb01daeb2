#include "moed/engine/engine.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "moed/kernels/cpu_ops.hpp"
#include "moed/kernels/cpu_threads.hpp"

namespace moed::engine {
namespace {

using kernels::WeightPart;

std::vector<float> to_f32(const model::Checkpoint& checkpoint, const model::TensorInfo& tensor) {
  std::size_t count = 1;
  for (auto d : tensor.shape) count *= static_cast<std::size_t>(d);
  std::vector<float> out(count);
  kernels::convert_to_f32(checkpoint.data(tensor), tensor.dtype, out.data(), count);
  return out;
}

}  // namespace

Engine::Engine(const std::filesystem::path& model_dir, const EngineOptions& options)
    : spec_(model::ModelSpec::from_config(model_dir)),
      checkpoint_(model_dir, spec_),
      embedding_(&checkpoint_.tensor("model.embed_tokens.weight")) {
  kernels::set_compute_threads(options.threads > 0 ? options.threads
                                                   : kernels::physical_core_count());
  namespace mx = model::mixtral;
  auto part = [&](const std::string& name) {
    const auto& t = checkpoint_.tensor(name);
    return WeightPart{checkpoint_.data(t), t.dtype, t.shape[0]};
  };
  auto pack = [&](std::initializer_list<std::string> names, std::int64_t cols) {
    std::vector<WeightPart> parts;
    for (const auto& name : names) parts.push_back(part(name));
    auto packed = matmul_.pack(parts, cols);
    for (const auto& name : names) {
      const auto& t = checkpoint_.tensor(name);
      checkpoint_.file_of(t).file().release(t.file_offset, t.nbytes);
    }
    return packed;
  };

  const std::int64_t hidden = spec_.hidden_size;
  layers_.resize(static_cast<std::size_t>(spec_.num_layers));
  for (std::int64_t l = 0; l < spec_.num_layers; ++l) {
    auto& layer = layers_[static_cast<std::size_t>(l)];
    layer.attention_norm =
        to_f32(checkpoint_, checkpoint_.tensor(mx::layer_tensor(l, "input_layernorm.weight")));
    layer.ffn_norm = to_f32(checkpoint_,
                            checkpoint_.tensor(mx::layer_tensor(l, "post_attention_layernorm.weight")));
    layer.qkv = pack({mx::layer_tensor(l, "self_attn.q_proj.weight"),
                      mx::layer_tensor(l, "self_attn.k_proj.weight"),
                      mx::layer_tensor(l, "self_attn.v_proj.weight")},
                     hidden);
    layer.output = pack({mx::layer_tensor(l, "self_attn.o_proj.weight")},
                        spec_.num_heads * spec_.head_dim);
    layer.router = pack({mx::layer_tensor(l, "block_sparse_moe.gate.weight")}, hidden);
    layer.experts.resize(static_cast<std::size_t>(spec_.num_experts));
    for (std::int64_t e = 0; e < spec_.num_experts; ++e) {
      auto& expert = layer.experts[static_cast<std::size_t>(e)];
      expert.gate_up = pack({mx::expert_tensor(l, e, "w1"), mx::expert_tensor(l, e, "w3")}, hidden);
      expert.down = pack({mx::expert_tensor(l, e, "w2")}, spec_.intermediate_size);
    }
  }
  final_norm_ = to_f32(checkpoint_, checkpoint_.tensor("model.norm.weight"));
  const auto& head = checkpoint_.tensor(spec_.tie_word_embeddings ? "model.embed_tokens.weight"
                                                                  : "lm_head.weight");
  lm_head_ = matmul_.pack(std::vector{WeightPart{checkpoint_.data(head), head.dtype, head.shape[0]}},
                          hidden);
}

KvCache Engine::new_cache() const {
  return KvCache(spec_.num_layers, spec_.num_kv_heads, spec_.head_dim);
}

void Engine::check_tokens(std::span<const std::int32_t> tokens) const {
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= spec_.vocab_size)
      throw std::out_of_range("token " + std::to_string(i) + " has id " +
                              std::to_string(tokens[i]) + ", outside the vocabulary [0, " +
                              std::to_string(spec_.vocab_size) + ")");
}

void Engine::embed(std::span<const std::int32_t> tokens, float* out) const {
  const std::int64_t hidden = spec_.hidden_size;
  const std::size_t row_bytes = static_cast<std::size_t>(hidden) * kernels::dtype_size(embedding_->dtype);
  const std::byte* base = checkpoint_.data(*embedding_);
  for (std::size_t i = 0; i < tokens.size(); ++i)
    kernels::convert_to_f32(base + static_cast<std::size_t>(tokens[i]) * row_bytes,
                            embedding_->dtype, out + i * static_cast<std::size_t>(hidden),
                            static_cast<std::size_t>(hidden));
}

void Engine::moe(std::int64_t layer_index, const float* h, std::int64_t rows, float* x) {
  const auto& layer = layers_[static_cast<std::size_t>(layer_index)];
  const std::int64_t hidden = spec_.hidden_size;
  const std::int64_t ffn = spec_.intermediate_size;
  const int k = static_cast<int>(spec_.experts_per_token);
  const int n_experts = static_cast<int>(spec_.num_experts);

  std::vector<float> router_logits(static_cast<std::size_t>(rows * n_experts));
  matmul_.multiply(h, rows, layer.router, router_logits.data());
  std::vector<int> chosen(static_cast<std::size_t>(rows * k));
  std::vector<float> weights(static_cast<std::size_t>(rows * k));
  for (std::int64_t r = 0; r < rows; ++r)
    kernels::router_top_k(router_logits.data() + r * n_experts, n_experts, k,
                          chosen.data() + r * k, weights.data() + r * k);

  // Each expert runs once over all rows routed to it; outputs land per (row, slot) so the
  // weighted sum below always adds in slot order, whatever order the experts ran in.
  std::vector<float> slot_out(static_cast<std::size_t>(rows * k * hidden));
  std::vector<float> gathered, gate_up, activated, down;
  std::vector<std::int64_t> slots;
  for (int e = 0; e < n_experts; ++e) {
    slots.clear();
    for (std::int64_t s = 0; s < rows * k; ++s)
      if (chosen[static_cast<std::size_t>(s)] == e) slots.push_back(s);
    if (slots.empty()) continue;
    const auto m = static_cast<std::int64_t>(slots.size());
    gathered.resize(static_cast<std::size_t>(m * hidden));
    for (std::int64_t i = 0; i < m; ++i)
      std::memcpy(gathered.data() + i * hidden, h + (slots[i] / k) * hidden,
                  static_cast<std::size_t>(hidden) * sizeof(float));
    gate_up.resize(static_cast<std::size_t>(m * 2 * ffn));
    activated.resize(static_cast<std::size_t>(m * ffn));
    down.resize(static_cast<std::size_t>(m * hidden));
    const auto& expert = layer.experts[static_cast<std::size_t>(e)];
    matmul_.multiply(gathered.data(), m, expert.gate_up, gate_up.data());
    kernels::silu_mul(gate_up.data(), activated.data(), m, ffn);
    matmul_.multiply(activated.data(), m, expert.down, down.data());
    for (std::int64_t i = 0; i < m; ++i)
      std::memcpy(slot_out.data() + slots[i] * hidden, down.data() + i * hidden,
                  static_cast<std::size_t>(hidden) * sizeof(float));
  }
  for (std::int64_t r = 0; r < rows; ++r)
    for (int s = 0; s < k; ++s) {
      const float w = weights[static_cast<std::size_t>(r * k + s)];
      const float* out = slot_out.data() + (r * k + s) * hidden;
      float* dst = x + r * hidden;
      for (std::int64_t j = 0; j < hidden; ++j) dst[j] += w * out[j];
    }
}

void Engine::forward(std::span<const std::int32_t> tokens, KvCache& cache,
                     std::vector<float>& logits, bool all_rows) {
  if (tokens.empty()) throw std::invalid_argument("forward: no tokens");
  check_tokens(tokens);
  const auto n = static_cast<std::int64_t>(tokens.size());
  const std::int64_t first = cache.length();
  if (first + n > spec_.max_position_embeddings)
    throw std::length_error("sequence of " + std::to_string(first + n) +
                            " tokens exceeds the model's context of " +
                            std::to_string(spec_.max_position_embeddings));
  const std::int64_t hidden = spec_.hidden_size;
  const std::int64_t hd = spec_.head_dim;
  const std::int64_t heads = spec_.num_heads;
  const std::int64_t kv_heads = spec_.num_kv_heads;
  const std::int64_t qkv_width = (heads + 2 * kv_heads) * hd;
  cache.reserve_more(n);

  std::vector<float> x(static_cast<std::size_t>(n * hidden));
  std::vector<float> h(x.size());
  std::vector<float> qkv(static_cast<std::size_t>(n * qkv_width));
  std::vector<float> q(static_cast<std::size_t>(n * heads * hd));
  std::vector<float> k(static_cast<std::size_t>(n * kv_heads * hd));
  std::vector<float> attn(q.size());
  std::vector<float> projected(x.size());
  std::vector<std::int64_t> positions(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) positions[i] = first + i;
  embed(tokens, x.data());

  const float eps = static_cast<float>(spec_.rms_norm_eps);
  for (std::int64_t l = 0; l < spec_.num_layers; ++l) {
    auto& layer = layers_[static_cast<std::size_t>(l)];
    kernels::rms_norm(x.data(), layer.attention_norm.data(), h.data(), n, hidden, eps);
    matmul_.multiply(h.data(), n, layer.qkv, qkv.data());
    for (std::int64_t i = 0; i < n; ++i) {
      const float* row = qkv.data() + i * qkv_width;
      std::memcpy(q.data() + i * heads * hd, row, static_cast<std::size_t>(heads * hd) * sizeof(float));
      std::memcpy(k.data() + i * kv_heads * hd, row + heads * hd,
                  static_cast<std::size_t>(kv_heads * hd) * sizeof(float));
    }
    kernels::rope_rotate_half(q.data(), n, heads, hd, positions.data(), spec_.rope_theta);
    kernels::rope_rotate_half(k.data(), n, kv_heads, hd, positions.data(), spec_.rope_theta);
    float* key_cache = cache.keys(l);
    float* value_cache = cache.values(l);
    const std::int64_t cap = cache.capacity();
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t g = 0; g < kv_heads; ++g) {
        std::memcpy(key_cache + (g * cap + first + i) * hd, k.data() + (i * kv_heads + g) * hd,
                    static_cast<std::size_t>(hd) * sizeof(float));
        std::memcpy(value_cache + (g * cap + first + i) * hd,
                    qkv.data() + i * qkv_width + (heads + kv_heads + g) * hd,
                    static_cast<std::size_t>(hd) * sizeof(float));
      }
    kernels::attention(q.data(), key_cache, value_cache, attn.data(),
                       {n, heads, kv_heads, hd, cap, first});
    matmul_.multiply(attn.data(), n, layer.output, projected.data());
    kernels::add_in_place(x.data(), projected.data(), n * hidden);

    kernels::rms_norm(x.data(), layer.ffn_norm.data(), h.data(), n, hidden, eps);
    moe(l, h.data(), n, x.data());
  }
  cache.advance(n);

  const std::int64_t out_rows = all_rows ? n : 1;
  const float* last = x.data() + (n - out_rows) * hidden;
  kernels::rms_norm(last, final_norm_.data(), h.data(), out_rows, hidden, eps);
  logits.resize(static_cast<std::size_t>(out_rows * spec_.vocab_size));
  matmul_.multiply(h.data(), out_rows, lm_head_, logits.data());
}

std::vector<std::int32_t> Engine::generate(std::span<const std::int32_t> prompt,
                                           std::int64_t max_new, const SamplingParams& params,
                                           const std::function<bool(const SampledToken&)>& on_token) {
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt has no tokens");
  Sampler sampler(params);
  KvCache cache = new_cache();
  std::vector<float> logits;
  std::vector<std::int32_t> out;
  forward(prompt, cache, logits, false);
  for (std::int64_t step = 0; step < max_new; ++step) {
    const SampledToken token = sampler.sample(logits.data(), spec_.vocab_size);
    out.push_back(token.id);
    if (on_token && !on_token(token)) break;
    if (std::find(spec_.eos_token_ids.begin(), spec_.eos_token_ids.end(), token.id) !=
        spec_.eos_token_ids.end())
      break;
    if (step + 1 == max_new || cache.length() + 1 > spec_.max_position_embeddings) break;
    forward(std::span(&out.back(), 1), cache, logits, false);
  }
  return out;
}

std::size_t Engine::bytes_per_decode_token(std::int64_t context_length) const {
  std::size_t total = lm_head_.bytes() +
                      static_cast<std::size_t>(2 * spec_.num_layers * spec_.num_kv_heads *
                                               context_length * spec_.head_dim) * sizeof(float);
  for (const auto& layer : layers_)
    total += layer.dense_bytes() +
             static_cast<std::size_t>(spec_.experts_per_token) * layer.experts.front().bytes();
  return total;
}

std::size_t Engine::packed_bytes() const {
  std::size_t total = lm_head_.bytes();
  for (const auto& layer : layers_) {
    total += layer.dense_bytes();
    for (const auto& e : layer.experts) total += e.bytes();
  }
  return total;
}

std::string Engine::matmul_implementation() {
  return matmul_.implementation(1, layers_.front().experts.front().gate_up);
}

}  // namespace moed::engine
