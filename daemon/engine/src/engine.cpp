#include "moed/engine/engine.hpp"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>

#include "moed/kernels/cpu_ops.hpp"
#include "moed/kernels/cpu_threads.hpp"
#include "moed/memtier/aligned_buffer.hpp"
#include "moed/memtier/byte_size.hpp"

namespace moed::engine {

using kernels::WeightPart;
using memtier::BlockId;

// The checkpoint tensors of one layer, in the order their byte ranges are registered with
// memtier's Source (so a loaded block's ranges[i] is tensor i).
struct Engine::LayerTensors {
  static constexpr std::size_t kQ = 0, kK = 1, kV = 2, kO = 3, kRouter = 4, kAttnNorm = 5,
                               kFfnNorm = 6;
  std::array<const model::TensorInfo*, 7> dense;
  std::vector<std::array<const model::TensorInfo*, 3>> experts;  // w1, w3, w2
};

namespace {

std::vector<float> norm_to_f32(const model::TensorInfo& tensor, const std::byte* data) {
  std::vector<float> out(static_cast<std::size_t>(tensor.shape[0]));
  kernels::convert_to_f32(data, tensor.dtype, out.data(), out.size());
  return out;
}

WeightPart part(const model::TensorInfo& tensor, const std::byte* data) {
  return {data, tensor.dtype, tensor.shape[0]};
}

// Storage for weights packed once and kept (LM head, resident dense layers): on huge pages, as
// the buffer pool gives the loader's blocks.
std::shared_ptr<std::byte> allocate_resident(std::size_t bytes) {
  return {memtier::allocate_aligned(bytes), [](std::byte* memory) { std::free(memory); }};
}

std::shared_ptr<DenseWeights> pack_dense(kernels::CpuMatmul& matmul, const model::ModelSpec& spec,
                                         const std::array<const model::TensorInfo*, 7>& t,
                                         const std::array<const std::byte*, 7>& data,
                                         const kernels::PackedAllocator& allocate = {}) {
  auto w = std::make_shared<DenseWeights>();
  const std::int64_t hidden = spec.hidden_size;
  const WeightPart qkv[] = {part(*t[0], data[0]), part(*t[1], data[1]), part(*t[2], data[2])};
  w->qkv = matmul.pack(qkv, hidden, allocate);
  const WeightPart output = part(*t[3], data[3]);
  w->output = matmul.pack(std::span(&output, 1), spec.num_heads * spec.head_dim, allocate);
  const WeightPart router = part(*t[4], data[4]);
  w->router = matmul.pack(std::span(&router, 1), hidden, allocate);
  w->attention_norm = norm_to_f32(*t[5], data[5]);
  w->ffn_norm = norm_to_f32(*t[6], data[6]);
  return w;
}

std::shared_ptr<ExpertWeights> pack_expert(kernels::CpuMatmul& matmul, const model::ModelSpec& spec,
                                           const std::array<const model::TensorInfo*, 3>& t,
                                           const std::array<const std::byte*, 3>& data,
                                           const kernels::PackedAllocator& allocate) {
  auto w = std::make_shared<ExpertWeights>();
  const WeightPart gate_up[] = {part(*t[0], data[0]), part(*t[1], data[1])};
  w->gate_up = matmul.pack(gate_up, spec.hidden_size, allocate);
  const WeightPart down = part(*t[2], data[2]);
  w->down = matmul.pack(std::span(&down, 1), spec.intermediate_size, allocate);
  return w;
}

}  // namespace

std::uint64_t DenseWeights::bytes() const {
  return qkv.bytes() + output.bytes() + router.bytes() +
         (attention_norm.size() + ffn_norm.size()) * sizeof(float);
}

Engine::Engine(const std::filesystem::path& model_dir, const EngineOptions& options)
    : spec_(model::ModelSpec::from_config(model_dir)),
      checkpoint_(model_dir, spec_),
      options_(options),
      embedding_(&checkpoint_.tensor("model.embed_tokens.weight")) {
  compute_threads_ = options.threads > 0 ? options.threads : kernels::physical_core_count();
  kernels::set_compute_threads(compute_threads_);
  activations_.assign(static_cast<std::size_t>(spec_.num_layers * spec_.num_experts), 0);
  namespace mx = model::mixtral;
  const std::int64_t layers = spec_.num_layers;
  const std::int64_t hidden = spec_.hidden_size;

  std::vector<std::filesystem::path> files;
  std::map<const model::SafetensorsFile*, std::uint32_t> file_index;
  for (const auto& file : checkpoint_.files()) {
    file_index[file.get()] = static_cast<std::uint32_t>(files.size());
    files.push_back(file->path());
  }
  source_ = std::make_unique<memtier::Source>(files);
  auto range_of = [&](const model::TensorInfo* t) {
    return memtier::FileRange{file_index.at(&checkpoint_.file_of(*t)), t->file_offset, t->nbytes};
  };

  tensors_.resize(static_cast<std::size_t>(layers));
  std::uint64_t largest_dense = 0;
  for (std::int64_t l = 0; l < layers; ++l) {
    auto& lt = tensors_[static_cast<std::size_t>(l)];
    const char* names[] = {"self_attn.q_proj.weight",        "self_attn.k_proj.weight",
                           "self_attn.v_proj.weight",        "self_attn.o_proj.weight",
                           "block_sparse_moe.gate.weight",   "input_layernorm.weight",
                           "post_attention_layernorm.weight"};
    std::vector<memtier::FileRange> ranges;
    for (std::size_t i = 0; i < lt.dense.size(); ++i) {
      lt.dense[i] = &checkpoint_.tensor(mx::layer_tensor(l, names[i]));
      ranges.push_back(range_of(lt.dense[i]));
    }
    source_->add(BlockId::dense(static_cast<std::int32_t>(l)), std::move(ranges));
    const auto& q = *lt.dense[LayerTensors::kQ];
    const std::uint64_t layer_bytes =
        matmul_.packed_bytes(q.shape[0] + 2 * lt.dense[LayerTensors::kK]->shape[0], hidden,
                             q.dtype) +
        matmul_.packed_bytes(hidden, q.shape[0], q.dtype) +
        matmul_.packed_bytes(spec_.num_experts, hidden, q.dtype) + 2 * hidden * sizeof(float);
    dense_bytes_ += layer_bytes;
    largest_dense = std::max(largest_dense, layer_bytes);

    lt.experts.resize(static_cast<std::size_t>(spec_.num_experts));
    for (std::int64_t e = 0; e < spec_.num_experts; ++e) {
      auto& ex = lt.experts[static_cast<std::size_t>(e)];
      ex = {&checkpoint_.tensor(mx::expert_tensor(l, e, "w1")),
            &checkpoint_.tensor(mx::expert_tensor(l, e, "w3")),
            &checkpoint_.tensor(mx::expert_tensor(l, e, "w2"))};
      source_->add(BlockId::routed(static_cast<std::int32_t>(l), static_cast<std::int32_t>(e)),
                   {range_of(ex[0]), range_of(ex[1]), range_of(ex[2])});
    }
  }
  const auto& w1 = *tensors_.front().experts.front()[0];
  expert_block_bytes_ = matmul_.packed_bytes(2 * spec_.intermediate_size, hidden, w1.dtype) +
                        matmul_.packed_bytes(hidden, spec_.intermediate_size, w1.dtype);

  final_norm_ = norm_to_f32(checkpoint_.tensor("model.norm.weight"),
                            checkpoint_.data(checkpoint_.tensor("model.norm.weight")));
  const auto& head = checkpoint_.tensor(spec_.tie_word_embeddings ? "model.embed_tokens.weight"
                                                                  : "lm_head.weight");
  const WeightPart head_part = part(head, checkpoint_.data(head));
  lm_head_ = matmul_.pack(std::span(&head_part, 1), hidden, allocate_resident);
  if (!spec_.tie_word_embeddings)
    checkpoint_.file_of(head).file().release(head.file_offset, head.nbytes);

  // Budget: resident dense weights (or the ring's sections) and the LM head come first; experts
  // get the rest. Dense weights stay resident when they leave room for one layer's experts.
  const std::uint64_t head_bytes = lm_head_.bytes() + final_norm_.size() * sizeof(float);
  const std::uint64_t all_experts =
      expert_block_bytes_ * static_cast<std::uint64_t>(layers * spec_.num_experts);
  const std::uint64_t budget = budget_bytes(options.host_budget, head_bytes + dense_bytes_);
  budget_bytes_ = budget;
  const bool unlimited = budget == 0;
  const std::uint64_t working_set =
      static_cast<std::uint64_t>(spec_.experts_per_token) * expert_block_bytes_;
  const bool dense_resident = unlimited || head_bytes + dense_bytes_ + working_set <= budget;
  if (dense_resident) {
    fixed_bytes_ = head_bytes + dense_bytes_;
    for (auto& lt : tensors_) {
      std::array<const std::byte*, 7> data{};
      for (std::size_t i = 0; i < data.size(); ++i) data[i] = checkpoint_.data(*lt.dense[i]);
      resident_dense_.push_back(pack_dense(matmul_, spec_, lt.dense, data, allocate_resident));
      if (options.on_progress)
        options.on_progress(0.3 * static_cast<double>(resident_dense_.size()) /
                            static_cast<double>(layers));
      for (const auto* t : lt.dense)
        checkpoint_.file_of(*t).file().release(t->file_offset, t->nbytes);
    }
  } else {
    const std::size_t sections = std::min<std::size_t>(
        std::max<std::size_t>(options.ring_sections, 1), static_cast<std::size_t>(layers));
    fixed_bytes_ = head_bytes + sections * largest_dense;
    if (fixed_bytes_ > budget)
      throw std::invalid_argument("host budget " + memtier::format_byte_size(budget) +
                                  " is below this model's minimum of " +
                                  memtier::format_byte_size(fixed_bytes_) + " (LM head + " +
                                  std::to_string(sections) +
                                  " ring sections of one layer's dense weights)");
  }
  const std::uint64_t expert_budget = unlimited ? UINT64_MAX : budget - fixed_bytes_;
  expert_room_ = expert_budget;
  kv_limit_ = unlimited ? UINT64_MAX : expert_budget - std::min(expert_budget, working_set);

  host_ = std::make_unique<memtier::HostTier>(expert_budget, memtier::make_policy(options.policy));
  // Spare buffers for two experts' worth of matrices: enough that each eviction's buffers serve
  // the next load, and a fixed addition to RSS.
  pool_ = std::make_unique<memtier::BufferPool>(2 * expert_block_bytes_ + 2 * largest_dense);
  loader_ = std::make_unique<memtier::BlockLoader>(
      *source_,
      options.reader_factory ? options.reader_factory(files)
                             : memtier::make_reader(files, options.reader),
      [this](BlockId block, memtier::LoadedBlock& loaded, bool urgent) {
        return materialize(block, loaded, urgent);
      });
  store_ = std::make_unique<memtier::TieredStore>(*host_, *loader_, *source_,
                                                  static_cast<std::int32_t>(layers));
  if (!dense_resident) {
    std::vector<BlockId> schedule;
    for (std::int64_t l = 0; l < layers; ++l)
      schedule.push_back(BlockId::dense(static_cast<std::int32_t>(l)));
    ring_ = std::make_unique<memtier::SectionRing>(*loader_, std::move(schedule),
                                                   options.ring_sections);
  }

  // Streaming experts keeps the loader's thread busy reading and packing; on few cores it then
  // starves behind the compute threads, so by default it gets a core of its own (measured on 2
  // cores at 50%: decode 6.5 vs 4.7 tokens/s, disk tier 2.7 vs 1.6 GB/s).
  if (options.threads <= 0 && all_experts > expert_budget)
    compute_threads_ = std::max(1, kernels::physical_core_count() - 1);

  // When every expert fits, read them all now (many reads in flight) rather than on first use.
  if (all_experts <= expert_budget) {
    std::vector<std::pair<BlockId, std::shared_future<memtier::Payload>>> loads;
    for (std::int32_t l = 0; l < layers; ++l)
      for (std::int32_t e = 0; e < spec_.num_experts; ++e)
        loads.emplace_back(
            BlockId::routed(l, e),
            loader_->load(BlockId::routed(l, e), memtier::BlockLoader::Priority::prefetch));
    std::size_t done = 0;
    for (auto& [block, future] : loads) {
      host_->admit(block, future.get());
      if (options.on_progress)
        options.on_progress(0.3 +
                            0.7 * static_cast<double>(++done) / static_cast<double>(loads.size()));
    }
  }
}

Engine::~Engine() = default;

memtier::Payload Engine::materialize(BlockId block, memtier::LoadedBlock& loaded, bool urgent) {
  // Runs on the loader's packer thread. A prefetch packs on one OpenMP thread, so it takes at most
  // one core from compute; a demand load has compute waiting on it, so it takes them all.
  kernels::set_compute_threads(urgent ? kernels::physical_core_count() : 1);
  const auto& lt = tensors_.at(static_cast<std::size_t>(block.layer));
  const kernels::PackedAllocator allocate = [this](std::size_t bytes) {
    return pool_->allocate(bytes);
  };
  if (block.is_dense()) {
    std::array<const std::byte*, 7> data{};
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = loaded.ranges.at(i);
    return pack_dense(io_matmul_, spec_, lt.dense, data, allocate);
  }
  return pack_expert(io_matmul_, spec_, lt.experts.at(static_cast<std::size_t>(block.expert)),
                     {loaded.ranges.at(0), loaded.ranges.at(1), loaded.ranges.at(2)}, allocate);
}

KvCache Engine::new_cache(std::int64_t positions) {
  KvCache cache(spec_.num_layers, spec_.num_kv_heads, spec_.head_dim, options_.kv_dtype,
                kv_account_, positions);
  apply_kv_to_budget();
  return cache;
}

std::uint64_t Engine::kv_bytes(std::int64_t positions) const {
  return 2 *
         static_cast<std::uint64_t>(spec_.num_layers * spec_.num_kv_heads * positions *
                                    spec_.head_dim) *
         kv_element_size(options_.kv_dtype);
}

KvRoom Engine::kv_room() const {
  return {kv_account_->bytes.load(), kv_limit_.load()};
}

void Engine::apply_kv_to_budget() {
  const std::uint64_t room = expert_room_;
  const std::uint64_t kv = kv_account_->bytes;
  if (room == UINT64_MAX || kv == kv_applied_) return;
  // Only a cache grown outside the scheduler's admission (one-shot commands) can pass the
  // room; the experts then get nothing cached and are read for each use.
  host_->set_budget(room - std::min(room, kv));
  kv_applied_ = kv;
}

void Engine::record_trace(const std::optional<std::filesystem::path>& path) {
  trace_ = path ? std::make_unique<memtier::TraceWriter>(*path) : nullptr;
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
  const std::size_t row_bytes =
      static_cast<std::size_t>(hidden) * kernels::dtype_size(embedding_->dtype);
  const std::byte* base = checkpoint_.data(*embedding_);
  for (std::size_t i = 0; i < tokens.size(); ++i)
    kernels::convert_to_f32(base + static_cast<std::size_t>(tokens[i]) * row_bytes,
                            embedding_->dtype, out + i * static_cast<std::size_t>(hidden),
                            static_cast<std::size_t>(hidden));
}

const DenseWeights& Engine::dense(std::int64_t layer, memtier::Payload& hold) {
  if (!resident_dense_.empty()) return *resident_dense_[static_cast<std::size_t>(layer)];
  hold = ring_->acquire(static_cast<std::size_t>(layer));
  return static_cast<const DenseWeights&>(*hold);
}

void Engine::predict_next_layer(std::int64_t layer, const float* h, std::int64_t rows) {
  const std::int64_t next = layer + 1;
  if (!options_.prefetch || next >= spec_.num_layers) return;
  memtier::Payload hold;
  const DenseWeights* weights = nullptr;
  if (!resident_dense_.empty()) {
    weights = resident_dense_[static_cast<std::size_t>(next)].get();
  } else if ((hold = ring_->try_peek(static_cast<std::size_t>(next)))) {
    weights = static_cast<const DenseWeights*>(hold.get());
  }
  if (!weights) return;  // the next layer's router is not loaded yet: no prediction this time
  const int n_experts = static_cast<int>(spec_.num_experts);
  const int k = static_cast<int>(spec_.experts_per_token);
  std::vector<float> logits(static_cast<std::size_t>(rows * n_experts));
  matmul_.multiply(h, rows, weights->router, logits.data());
  std::vector<std::int32_t> predicted;
  std::vector<int> ids(static_cast<std::size_t>(k));
  std::vector<float> unused(static_cast<std::size_t>(k));
  for (std::int64_t r = 0; r < rows; ++r) {
    kernels::router_top_k(logits.data() + r * n_experts, n_experts, k, ids.data(), unused.data());
    for (int id : ids)
      if (std::find(predicted.begin(), predicted.end(), id) == predicted.end())
        predicted.push_back(id);
  }
  store_->predict(static_cast<std::int32_t>(next), predicted);
}

void Engine::moe(std::int64_t layer_index, const DenseWeights& weights, const float* h,
                 std::int64_t rows, float* x) {
  const std::int64_t hidden = spec_.hidden_size;
  const std::int64_t ffn = spec_.intermediate_size;
  const int k = static_cast<int>(spec_.experts_per_token);
  const int n_experts = static_cast<int>(spec_.num_experts);
  const auto layer = static_cast<std::int32_t>(layer_index);

  std::vector<float> router_logits(static_cast<std::size_t>(rows * n_experts));
  matmul_.multiply(h, rows, weights.router, router_logits.data());
  std::vector<int> chosen(static_cast<std::size_t>(rows * k));
  std::vector<float> gate_weights(static_cast<std::size_t>(rows * k));
  for (std::int64_t r = 0; r < rows; ++r)
    kernels::router_top_k(router_logits.data() + r * n_experts, n_experts, k, chosen.data() + r * k,
                          gate_weights.data() + r * k);
  for (const int e : chosen) ++activations_[static_cast<std::size_t>(layer_index * n_experts + e)];
  if (trace_)
    for (std::int64_t r = 0; r < rows; ++r)
      trace_->write(
          {trace_token_ + r, layer,
           std::vector<std::int32_t>(chosen.begin() + r * k, chosen.begin() + (r + 1) * k),
           std::vector<float>(gate_weights.begin() + r * k, gate_weights.begin() + (r + 1) * k)});

  // One token asks for its experts in routing order (as a trace lists them); a batch asks for
  // each expert once, in id order, and runs it over all rows routed to it.
  std::vector<std::int32_t> order;
  if (rows == 1) {
    order.assign(chosen.begin(), chosen.end());
  } else {
    for (int e = 0; e < n_experts; ++e)
      if (std::find(chosen.begin(), chosen.end(), e) != chosen.end()) order.push_back(e);
  }
  // Under a tight budget the next layer's prefetches would otherwise evict this layer's
  // resident experts before they are used, turning hits into demand reads. Each is let go once
  // acquired, so without prefetch eviction is exactly the policy's (as the simulator replays).
  std::vector<memtier::Payload> unacquired;
  if (options_.prefetch) unacquired = store_->hold_resident(layer, order);
  predict_next_layer(layer_index, h, rows);
  // Outputs land per (row, slot) so the weighted sum always adds in slot order, whatever order
  // the experts ran in.
  std::vector<float> slot_out(static_cast<std::size_t>(rows * k * hidden));
  std::vector<float> gathered, gate_up, activated, down;
  std::vector<std::int64_t> slots;
  for (const std::int32_t e : order) {
    slots.clear();
    for (std::int64_t s = 0; s < rows * k; ++s)
      if (chosen[static_cast<std::size_t>(s)] == e) slots.push_back(s);
    const auto m = static_cast<std::int64_t>(slots.size());
    gathered.resize(static_cast<std::size_t>(m * hidden));
    for (std::int64_t i = 0; i < m; ++i)
      std::memcpy(gathered.data() + i * hidden, h + (slots[i] / k) * hidden,
                  static_cast<std::size_t>(hidden) * sizeof(float));
    gate_up.resize(static_cast<std::size_t>(m * 2 * ffn));
    activated.resize(static_cast<std::size_t>(m * ffn));
    down.resize(static_cast<std::size_t>(m * hidden));
    const memtier::Payload payload = store_->acquire(BlockId::routed(layer, e));
    std::erase(unacquired, payload);
    const auto& expert = static_cast<const ExpertWeights&>(*payload);
    matmul_.multiply(gathered.data(), m, expert.gate_up, gate_up.data());
    kernels::silu_mul(gate_up.data(), activated.data(), m, ffn);
    matmul_.multiply(activated.data(), m, expert.down, down.data());
    for (std::int64_t i = 0; i < m; ++i)
      std::memcpy(slot_out.data() + slots[i] * hidden, down.data() + i * hidden,
                  static_cast<std::size_t>(hidden) * sizeof(float));
  }
  store_->settle(layer);
  for (std::int64_t r = 0; r < rows; ++r)
    for (int s = 0; s < k; ++s) {
      const float w = gate_weights[static_cast<std::size_t>(r * k + s)];
      const float* out = slot_out.data() + (r * k + s) * hidden;
      float* dst = x + r * hidden;
      for (std::int64_t j = 0; j < hidden; ++j) dst[j] += w * out[j];
    }
}

void Engine::forward(std::span<const std::int32_t> tokens, KvCache& cache,
                     std::vector<float>& logits, bool all_rows) {
  if (tokens.empty()) throw std::invalid_argument("forward: no tokens");
  const Segment segment{&cache, cache.length(), static_cast<std::int64_t>(tokens.size())};
  run(tokens, std::span(&segment, 1), logits, all_rows);
}

void Engine::decode(std::span<const std::int32_t> tokens, std::span<KvCache* const> caches,
                    std::vector<float>& logits) {
  if (tokens.empty() || tokens.size() != caches.size())
    throw std::invalid_argument("decode: need one cache per token");
  std::vector<Segment> segments;
  for (auto* cache : caches) segments.push_back({cache, cache->length(), 1});
  run(tokens, segments, logits, false);
}

void Engine::run(std::span<const std::int32_t> tokens, std::span<const Segment> segments,
                 std::vector<float>& logits, bool all_rows) {
  check_tokens(tokens);
  // The daemon computes on its scheduler's thread, not the one that built the engine.
  kernels::set_compute_threads(compute_threads_);
  last_step_threads_ = kernels::compute_threads();
  const auto n = static_cast<std::int64_t>(tokens.size());
  for (const auto& seg : segments)
    if (seg.first + seg.rows > spec_.max_position_embeddings)
      throw std::length_error("sequence of " + std::to_string(seg.first + seg.rows) +
                              " tokens exceeds the model's context of " +
                              std::to_string(spec_.max_position_embeddings));
  const std::int64_t hidden = spec_.hidden_size;
  const std::int64_t hd = spec_.head_dim;
  const std::int64_t heads = spec_.num_heads;
  const std::int64_t kv_heads = spec_.num_kv_heads;
  const std::int64_t qkv_width = (heads + 2 * kv_heads) * hd;
  for (const auto& seg : segments) {
    if (seg.cache->dtype() != options_.kv_dtype)
      throw std::invalid_argument(std::string("a ") + to_string(seg.cache->dtype()) +
                                  " KV cache given to an engine with kv_dtype " +
                                  to_string(options_.kv_dtype));
    seg.cache->reserve_more(seg.rows);
  }
  apply_kv_to_budget();

  std::vector<float> x(static_cast<std::size_t>(n * hidden));
  std::vector<float> h(x.size());
  std::vector<float> qkv(static_cast<std::size_t>(n * qkv_width));
  std::vector<float> q(static_cast<std::size_t>(n * heads * hd));
  std::vector<float> k(static_cast<std::size_t>(n * kv_heads * hd));
  std::vector<float> attn(q.size());
  std::vector<float> projected(x.size());
  std::vector<std::int64_t> positions;
  for (const auto& seg : segments)
    for (std::int64_t i = 0; i < seg.rows; ++i) positions.push_back(seg.first + i);
  embed(tokens, x.data());

  const float eps = static_cast<float>(spec_.rms_norm_eps);
  for (std::int64_t l = 0; l < spec_.num_layers; ++l) {
    memtier::Payload hold;
    const DenseWeights& layer = dense(l, hold);
    kernels::rms_norm(x.data(), layer.attention_norm.data(), h.data(), n, hidden, eps);
    matmul_.multiply(h.data(), n, layer.qkv, qkv.data());
    for (std::int64_t i = 0; i < n; ++i) {
      const float* row = qkv.data() + i * qkv_width;
      std::memcpy(q.data() + i * heads * hd, row,
                  static_cast<std::size_t>(heads * hd) * sizeof(float));
      std::memcpy(k.data() + i * kv_heads * hd, row + heads * hd,
                  static_cast<std::size_t>(kv_heads * hd) * sizeof(float));
    }
    kernels::rope_rotate_half(q.data(), n, heads, hd, positions.data(), spec_.rope_theta);
    kernels::rope_rotate_half(k.data(), n, kv_heads, hd, positions.data(), spec_.rope_theta);
    std::int64_t row0 = 0;
    for (const auto& seg : segments) {
      const std::int64_t cap = seg.cache->capacity();
      const bool bf16 = seg.cache->dtype() == KvDtype::bf16;
      const std::size_t element = kv_element_size(seg.cache->dtype());
      std::byte* key_cache = seg.cache->keys(l);
      std::byte* value_cache = seg.cache->values(l);
      auto store = [&](std::byte* dst, const float* src) {
        if (bf16)
          kernels::convert_f32_to_bf16(src, reinterpret_cast<std::uint16_t*>(dst),
                                       static_cast<std::size_t>(hd));
        else
          std::memcpy(dst, src, static_cast<std::size_t>(hd) * sizeof(float));
      };
      for (std::int64_t i = 0; i < seg.rows; ++i)
        for (std::int64_t g = 0; g < kv_heads; ++g) {
          const std::int64_t row = row0 + i;
          const std::size_t at = static_cast<std::size_t>((g * cap + seg.first + i) * hd) * element;
          store(key_cache + at, k.data() + (row * kv_heads + g) * hd);
          store(value_cache + at, qkv.data() + row * qkv_width + (heads + kv_heads + g) * hd);
        }
      const kernels::AttentionShape shape{seg.rows, heads, kv_heads, hd, cap, seg.first};
      float* out = attn.data() + row0 * heads * hd;
      if (bf16)
        kernels::attention(q.data() + row0 * heads * hd,
                           reinterpret_cast<const std::uint16_t*>(key_cache),
                           reinterpret_cast<const std::uint16_t*>(value_cache), out, shape);
      else
        kernels::attention(q.data() + row0 * heads * hd, reinterpret_cast<const float*>(key_cache),
                           reinterpret_cast<const float*>(value_cache), out, shape);
      row0 += seg.rows;
    }
    matmul_.multiply(attn.data(), n, layer.output, projected.data());
    kernels::add_in_place(x.data(), projected.data(), n * hidden);

    kernels::rms_norm(x.data(), layer.ffn_norm.data(), h.data(), n, hidden, eps);
    moe(l, layer, h.data(), n, x.data());
    if (ring_) ring_->release(static_cast<std::size_t>(l));
  }
  for (const auto& seg : segments) seg.cache->advance(seg.rows);
  trace_token_ += n;

  // Rows whose logits are wanted: all, or the last of each segment.
  std::vector<std::int64_t> out_rows;
  std::int64_t row0 = 0;
  for (const auto& seg : segments) {
    for (std::int64_t i = all_rows ? 0 : seg.rows - 1; i < seg.rows; ++i)
      out_rows.push_back(row0 + i);
    row0 += seg.rows;
  }
  const auto m = static_cast<std::int64_t>(out_rows.size());
  for (std::int64_t i = 0; i < m; ++i)
    kernels::rms_norm(x.data() + out_rows[i] * hidden, final_norm_.data(), h.data() + i * hidden, 1,
                      hidden, eps);
  logits.resize(static_cast<std::size_t>(m * spec_.vocab_size));
  matmul_.multiply(h.data(), m, lm_head_, logits.data());
}

std::vector<std::int32_t> Engine::generate(
    std::span<const std::int32_t> prompt, std::int64_t max_new, const SamplingParams& params,
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
  return lm_head_.bytes() + dense_bytes_ +
         static_cast<std::size_t>(spec_.num_layers * spec_.experts_per_token) *
             expert_block_bytes_ +
         static_cast<std::size_t>(2 * spec_.num_layers * spec_.num_kv_heads * context_length *
                                  spec_.head_dim) *
             kv_element_size(options_.kv_dtype);
}

MemoryStats Engine::memory_stats() const {
  MemoryStats s;
  s.reader = loader_->counters().engine;
  s.dense_streamed = ring_ != nullptr;
  s.budget_bytes = budget_bytes_.load();
  s.fixed_bytes = fixed_bytes_;
  s.expert_bytes_total =
      expert_block_bytes_ * static_cast<std::uint64_t>(spec_.num_layers * spec_.num_experts);
  s.host = host_->counters();
  s.disk = loader_->counters();
  s.pool = pool_->counters();
  if (ring_) s.ring = ring_->counters();
  s.layers = store_->layer_counters();
  s.compute_threads = last_step_threads_;
  s.kv_dtype = to_string(options_.kv_dtype);
  const KvRoom kv = kv_room();
  s.kv_bytes = kv.used;
  s.kv_limit_bytes = kv.limit == UINT64_MAX ? 0 : kv.limit;
  return s;
}

void Engine::reset_memory_stats() {
  store_->reset_counters();
}

HostBudget HostBudget::parse(std::string_view text) {
  HostBudget budget;
  if (text.empty()) return budget;
  if (text.back() == '%') {
    const std::string number(text.substr(0, text.size() - 1));
    std::size_t used = 0;
    double percent = -1;
    try {
      percent = std::stod(number, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != number.size() || !(percent > 0 && percent <= 100))
      throw std::invalid_argument("'" + std::string(text) + "' is not a share in (0%, 100%]");
    budget.expert_share = percent / 100.0;
    return budget;
  }
  budget.bytes = memtier::parse_byte_size(text);
  if (budget.bytes == 0)
    throw std::invalid_argument("'" + std::string(text) + "' must be a positive size");
  return budget;
}

std::uint64_t Engine::budget_bytes(const HostBudget& budget, std::uint64_t fixed) const {
  if (budget.expert_share <= 0) return budget.bytes;
  const double all = static_cast<double>(expert_block_bytes_) *
                     static_cast<double>(spec_.num_layers * spec_.num_experts);
  // Never below one layer's experts, which must be in memory together to compute.
  return fixed +
         std::max(static_cast<std::uint64_t>(budget.expert_share * all),
                  static_cast<std::uint64_t>(spec_.experts_per_token) * expert_block_bytes_);
}

void Engine::set_host_budget(const HostBudget& budget) {
  const std::uint64_t bytes = budget_bytes(budget, fixed_bytes_);
  if (bytes == 0)
    throw std::invalid_argument("host budget: an unlimited budget can only be set at start");
  if (bytes < fixed_bytes_)
    throw std::invalid_argument(
        "host budget " + memtier::format_byte_size(bytes) + " is below the fixed part of " +
        memtier::format_byte_size(fixed_bytes_) +
        " (dense weights or ring sections, LM head); restart to change that");
  const std::uint64_t room = bytes - fixed_bytes_;
  const std::uint64_t kv = kv_account_->bytes;
  if (room < kv)
    throw std::invalid_argument(
        "host budget " + memtier::format_byte_size(bytes) + " leaves " +
        memtier::format_byte_size(room) + " after the fixed part, below the " +
        memtier::format_byte_size(kv) + " the running sequences' KV caches hold");
  const std::uint64_t working_set =
      static_cast<std::uint64_t>(spec_.experts_per_token) * expert_block_bytes_;
  expert_room_ = room;
  kv_limit_ = room - std::min(room, working_set);
  host_->set_budget(room - kv);
  kv_applied_ = kv;
  budget_bytes_ = bytes;
}

void Engine::set_policy(const std::string& policy) {
  host_->set_policy(memtier::make_policy(policy));
}

std::vector<std::vector<std::uint64_t>> Engine::activation_counts() const {
  std::vector<std::vector<std::uint64_t>> out(static_cast<std::size_t>(spec_.num_layers));
  for (std::int64_t l = 0; l < spec_.num_layers; ++l)
    out[static_cast<std::size_t>(l)].assign(activations_.begin() + l * spec_.num_experts,
                                            activations_.begin() + (l + 1) * spec_.num_experts);
  return out;
}

std::string Engine::matmul_implementation() {
  return matmul_.implementation(1, lm_head_) + ", experts packed by " +
         matmul_.packing(2 * spec_.intermediate_size, spec_.hidden_size,
                         tensors_.front().experts.front()[0]->dtype);
}

}  // namespace moed::engine
