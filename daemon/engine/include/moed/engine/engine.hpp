#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moed/engine/kv_cache.hpp"
#include "moed/engine/sampler.hpp"
#include "moed/kernels/cpu_matmul.hpp"
#include "moed/memtier/block_loader.hpp"
#include "moed/memtier/buffer_pool.hpp"
#include "moed/memtier/host_tier.hpp"
#include "moed/memtier/reader.hpp"
#include "moed/memtier/tiered_store.hpp"
#include "moed/memtier/trace.hpp"
#include "moed/model/checkpoint.hpp"
#include "moed/model/gguf_model.hpp"
#include "moed/model/model_spec.hpp"

namespace moed::engine {

// A host budget as users write it: "" (everything resident), a size ("48GiB": dense weights plus
// cached experts), or a share of the routed experts cached on top of the dense part ("25%").
struct HostBudget {
  std::uint64_t bytes = 0;  // the size form; 0 (with no share) means unlimited
  double expert_share = 0;  // the share form, in (0, 1]
  // Throws std::invalid_argument quoting the text when it is neither form.
  static HostBudget parse(std::string_view text);
  // The total host bytes this budget means for a model whose fixed part (dense weights or ring
  // sections, LM head) takes `fixed` and whose routed experts take `all_experts`; a share never
  // leaves less than `working_set` (one token's experts of a layer). 0: unlimited.
  std::uint64_t total(std::uint64_t fixed, std::uint64_t all_experts,
                      std::uint64_t working_set) const;
  // Whether it caps host RAM below every weight: a size, or a share under 100%. Decides at load
  // how FP8 weights are held where they would go to moed's panels (CpuMatmul::hold_fp8_in_panels):
  // at one byte a weight under a cap, widened to bf16 (faster there) without one. A budget
  // changed at run time keeps the load's choice.
  bool caps_memory() const { return bytes > 0 || (expert_share > 0 && expert_share < 1); }
};

// The OpenMP threads that pack a block compute waits on: every core but one (left to the disk
// tier's I/O thread and the reads' completions), and no more than the user's thread count
// (`requested_threads`, 0: none given).
int demand_pack_threads(int requested_threads, int physical_cores);
// Whether compute's other threads spin while it waits for a block being read, so that they are
// awake for the next parallel region: only where they and the packer's team fit on the cores
// together (they spin while the packer packs the very block waited for).
bool team_awake_in_load_waits(int compute_threads, int demand_pack_threads, int physical_cores);

struct EngineOptions {
  // Compute threads, and the most that pack a demand load; 0: one per physical core (hwloc),
  // less one for the disk tier when experts stream from disk.
  int threads = 0;
  HostBudget host_budget;          // host RAM for weights; default: everything resident
  std::string policy = "tinylfu";  // the host tier's: memtier::kDefaultPolicy
  memtier::ReaderOptions reader;   // disk tier: io_uring (or pread), queue depth, chunk
  // Builds the disk tier's reader over the model files; default memtier::make_reader. Tests
  // pass a fault-injecting one.
  std::function<std::unique_ptr<memtier::Reader>(std::vector<std::filesystem::path>)>
      reader_factory;
  bool prefetch = true;  // predict the next layers' experts while layer l computes
  // How many layers ahead to predict and prefetch (1 or 2); horizon 2 reads at a lower priority.
  // 2 by default: at 12.5-50% budgets it raised host hits by 3-8 points on the bench model (bf16
  // and Q4_K_M), and decode by about 10% at 50%; at 12.5% and 25% decode moved either way.
  int prefetch_horizon = 2;
  std::size_t ring_sections = 2;  // sections of the dense-layer ring when it streams
  // Keys and values in bf16 (half the memory of f32) keep the golden tests' greedy tokens;
  // f32 stays for exact comparisons with an f32 reference.
  KvDtype kv_dtype = KvDtype::bf16;
  std::function<void(double)> on_progress;  // loading progress in [0, 1]
};

// Weights of one routed expert, packed for oneDNN: gate stacked over up, and down.
struct ExpertWeights final : memtier::BlockPayload {
  kernels::PackedWeight gate_up;  // [2*ffn, hidden]
  kernels::PackedWeight down;     // [hidden, ffn]
  // Computed as stored (CpuMatmul::stored_rows) in the memory its reads landed in: that memory's
  // size, which the host tier counts; 0 where packed.
  std::uint64_t memory_bytes = 0;
  std::uint64_t bytes() const override {
    return memory_bytes ? memory_bytes : gate_up.bytes() + down.bytes();
  }
};

// One layer's dense block: everything but its routed experts, packed. Which members are filled
// depends on the layer's kinds in the plan.
struct DenseWeights final : memtier::BlockPayload {
  std::vector<float> attention_norm;  // f32 [hidden]
  std::vector<float> ffn_norm;        // f32 [hidden]
  // Every projection of the normed input, stacked: GQA q|k|v; MLA q (or q_a)|kv_a.
  kernels::PackedWeight input_projection;
  std::vector<float> qkv_bias;  // GQA q|k|v biases, or empty
  // GQA: q_norm and k_norm. MLA: q_a_layernorm (empty without q_lora_rank) and kv_a_layernorm.
  std::vector<float> q_norm, k_norm;
  kernels::PackedWeight q_b;  // MLA with q_lora_rank
  // MLA's absorbed form, batched over heads: per head kv_b's key part transposed
  // [kv_lora, nope], which takes a query into latent space, and its value part
  // [v_head_dim, kv_lora].
  kernels::PackedWeight absorb_keys, absorb_values;
  kernels::PackedWeight output;
  // MoE layers: [experts, hidden]; an f32 router (every GGUF file's, and DeepSeek's, whose
  // logits are f32) as plain rows for kernels::f32_rows, any other packed.
  kernels::PackedWeight router;
  std::vector<float> router_f32;
  std::vector<float> router_bias;
  // The dense MLP of a dense layer, or the shared experts of a MoE layer: gate over up, down.
  kernels::PackedWeight mlp_gate_up, mlp_down;
  kernels::PackedWeight shared_expert_gate;  // Qwen2-MoE: [1, hidden]
  std::uint64_t bytes() const override;
};

// What memtier and the engine did, for `moed bench`, the daemon's stats and tests.
struct MemoryStats {
  std::string reader;              // io_uring or pread
  bool dense_streamed = false;     // dense layers stream through the ring
  std::uint64_t budget_bytes = 0;  // 0: unlimited
  std::uint64_t fixed_bytes =
      0;  // budget share of resident dense weights or ring sections + LM head
  std::uint64_t expert_bytes_total = 0;  // all routed experts, packed
  memtier::HostTier::Counters host;
  memtier::BlockLoader::Counters disk;
  memtier::BufferPool::Counters pool;
  memtier::SectionRing::Counters ring;
  std::vector<memtier::LayerCounters> layers;
  int compute_threads = 0;           // OpenMP threads the last forward pass ran with (0: none yet)
  std::string kv_dtype;              // bf16 or f32
  std::uint64_t kv_bytes = 0;        // KV capacity held by live caches, within the budget
  std::uint64_t kv_limit_bytes = 0;  // most the budget lets KV hold (0: unlimited)
  // Resident experts computed while one routed before them in the layer was still being read.
  std::uint64_t experts_run_ahead = 0;
};

// KV memory against the host budget: what caches hold, and the most they may hold while the
// experts keep room for one layer's working set. limit is UINT64_MAX without a budget.
struct KvRoom {
  std::uint64_t used = 0;
  std::uint64_t limit = 0;
  std::uint64_t free() const { return used < limit ? limit - used : 0; }
};

// The CPU forward pass of a MoE model run as its layer plan (model::ModelSpec): prefill and
// decode over a KV cache, each layer's attention and FFN computed by the module of its kind.
// Dense weights are packed once from the mapped checkpoint (or stream through a ring of
// sections when the host budget is too small for them); routed experts come through memtier:
// host RAM under a budget, the disk tier (O_DIRECT reads) for the rest, prefetched one layer
// ahead. Where a block was read from never changes the result.
class Engine {
 public:
  // `model`: a Hugging Face model directory, or a GGUF file (the first of its splits).
  Engine(const std::filesystem::path& model, const EngineOptions& options);
  ~Engine();

  const model::ModelSpec& spec() const { return spec_; }
  // Generation also ends after these ids (the tokenizer's end-of-generation set: a GGUF file
  // carries no generation_config.json, and llama.cpp stops a Qwen chat at <|im_end|> beside
  // EOS). Ids outside the vocabulary are ignored. Call before generating.
  void add_stop_tokens(std::span<const std::int32_t> ids);
  // A cache for this model, its capacity allocated for `positions` (0: grows as it is used).
  // Its bytes count in the host budget from now until it is destroyed.
  KvCache new_cache(std::int64_t positions = 0);
  // Bytes of keys and values a sequence of `positions` positions holds.
  std::uint64_t kv_bytes(std::int64_t positions) const;
  // Thread-safe: the scheduler admits by it from the clients' threads.
  KvRoom kv_room() const;
  KvDtype kv_dtype() const { return options_.kv_dtype; }

  // Runs `tokens` at positions cache.length().. and appends them to the cache. Writes f32 logits
  // [tokens.size(), vocab] when all_rows, else only the last row's [vocab]. Read errors of the
  // disk tier surface here as exceptions; the engine stays usable.
  void forward(std::span<const std::int32_t> tokens, KvCache& cache, std::vector<float>& logits,
               bool all_rows);

  // One decode step for several sequences at once: row i is tokens[i] appended to caches[i].
  // Rows routed to the same expert share one pass over its weights. Writes logits
  // [tokens.size(), vocab]. Each row's result is bit-identical to decoding it alone.
  void decode(std::span<const std::int32_t> tokens, std::span<KvCache* const> caches,
              std::vector<float>& logits);

  // Prefill then decode up to max_new tokens, stopping after an EOS id. on_token may return
  // false to stop early. Returns the generated ids.
  std::vector<std::int32_t> generate(std::span<const std::int32_t> prompt, std::int64_t max_new,
                                     const SamplingParams& params,
                                     const std::function<bool(const SampledToken&)>& on_token);

  // Records every routing decision as JSON Lines to `path` (nullopt stops recording).
  void record_trace(const std::optional<std::filesystem::path>& path);

  // Bytes one decode step reads at a given context length: dense parts of every layer,
  // experts_per_token experts per layer, the LM head, and the keys and values of the context.
  std::size_t bytes_per_decode_token(std::int64_t context_length) const;
  // One routed expert's packed bytes (the largest, where layers differ in format).
  std::uint64_t expert_block_bytes() const { return expert_block_bytes_; }
  // The checkpoint's shard files, as the disk tier reads them.
  const std::vector<std::filesystem::path>& model_files() const { return source_->files(); }
  // Safe to call from any thread while another computes (the daemon's /metrics does).
  MemoryStats memory_stats() const;
  void reset_memory_stats();
  memtier::HostTier& host_tier() { return *host_; }
  // Live changes (call between steps). The total budget keeps the fixed part (dense weights or
  // ring sections, LM head); throws std::invalid_argument naming the value when it does not fit.
  void set_host_budget(const HostBudget& budget);
  void set_policy(const std::string& policy);
  // Tokens routed to each expert so far: [layer][expert].
  std::vector<std::vector<std::uint64_t>> activation_counts() const;
  // The matmul kernels for decode and prefill and how expert weights are packed, for logs.
  std::string matmul_implementation();
  // Whether experts read from disk are computed where they landed, as stored rows, rather than
  // packed (decided at startup: experts streamed under the starting budget, in formats this CPU
  // computes so).
  bool computes_streamed_experts_as_stored() const;
  // OpenMP threads every forward pass runs with, on whichever thread calls it.
  int compute_threads() const { return compute_threads_; }

 private:
  struct LayerTensors;
  // Consecutive rows that extend one cache from position `first`.
  struct Segment {
    KvCache* cache;
    std::int64_t first;
    std::int64_t rows;
  };
  // Runs rows through the model; logits for every row (all_rows) or each segment's last row.
  void run(std::span<const std::int32_t> tokens, std::span<const Segment> segments,
           std::vector<float>& logits, bool all_rows);
  void check_tokens(std::span<const std::int32_t> tokens) const;
  void embed(std::span<const std::int32_t> tokens, float* out) const;
  const DenseWeights& dense(std::int64_t layer, memtier::Payload& hold);
  // The attention of one layer over the rows' segments: h (normed) -> out [rows, hidden].
  void attention(std::int64_t layer, const DenseWeights& weights, const float* h,
                 std::span<const Segment> segments, const std::int64_t* positions,
                 std::int64_t rows, float* out);
  void gqa_attention(std::int64_t layer, const DenseWeights& weights, const float* h,
                     std::span<const Segment> segments, const std::int64_t* positions,
                     std::int64_t rows, float* attn);
  void mla_attention(std::int64_t layer, const DenseWeights& weights, const float* h,
                     std::span<const Segment> segments, const std::int64_t* positions,
                     std::int64_t rows, float* attn);
  // Router logits [rows, experts] of a MoE layer's dense block.
  void router_logits_of(const DenseWeights& weights, const float* h, std::int64_t rows,
                        float* logits);
  // A gated MLP (silu(gate) * up, then down) over rows, written to out.
  void gated_mlp(const kernels::PackedWeight& gate_up, const kernels::PackedWeight& down,
                 const float* h, std::int64_t rows, float* out);
  // A layer's routed experts (order: as moe() asks memtier for them), written per (row, slot)
  // to slot_out [rows * k, hidden]: one expert at a time, or for one token, when every expert is
  // resident and they split evenly over the threads, all in one parallel region (false: not so).
  void experts_one_by_one(std::int32_t layer, std::span<const std::int32_t> order,
                          std::span<const int> chosen, const float* h, std::int64_t rows,
                          float* slot_out, std::vector<memtier::Payload>& unacquired);
  bool experts_in_one_region(std::int32_t layer, std::span<const std::int32_t> order,
                             const float* h, float* slot_out,
                             std::vector<memtier::Payload>& unacquired);
  // Routed experts plus the shared experts of a MoE layer: h -> out [rows, hidden].
  void moe(std::int64_t layer, const DenseWeights& weights, const float* h, std::int64_t rows,
           float* out);
  // Applies the routers of the next prefetch_horizon layers to this layer's hidden state and
  // asks memtier to read the experts they choose (horizon 1: the next layer).
  void predict_ahead(std::int64_t layer, const float* h, std::int64_t rows);
  // The gate matrix of the first routed expert (its dtype is the experts'), or null.
  const model::TensorInfo* first_expert_gate() const;
  // The total budget a HostBudget means for this model, given the fixed part.
  std::uint64_t budget_bytes(const HostBudget& budget, std::uint64_t fixed) const;
  // Gives the host tier what the budget leaves after the fixed part and the KV caches.
  void apply_kv_to_budget();
  memtier::Payload materialize(memtier::BlockId block, memtier::LoadedBlock& loaded, bool urgent);
  // Which blocks the loader reads into memory kept as their weights, and that memory.
  memtier::KeptReads kept_reads();

  std::shared_ptr<const model::GgufFile> gguf_;  // null for a Hugging Face directory
  model::ModelSpec spec_;
  model::Checkpoint checkpoint_;
  EngineOptions options_;
  const model::TensorInfo* embedding_;       // [vocab, hidden], read in place
  kernels::BlockScales embedding_scales_{};  // an FP8 embedding's, over the mapped file
  std::vector<LayerTensors> tensors_;
  std::vector<double> rope_frequencies_;  // [rope dim / 2]
  // A step's temporaries, kept between steps and grown as needed. main.cpp has glibc map every
  // allocation from 1 MiB up afresh (so evicted weight blocks go back to the system), so a
  // prefill's per-layer buffers would fault in every page on every layer: 115000 of a 512-token
  // Mixtral prefill's faults, and 27000 more for MLA's head-major copies. The daemon prefills in
  // chunks, which bounds them.
  struct Workspace {
    std::vector<float> x, h, block_out, attn;                        // run, attention
    std::vector<float> qkv, q, k, v;                                 // GQA
    std::vector<float> mla_projected, mla_q_low, mla_q, mla_latent;  // MLA
    std::vector<float> heads_in, heads_out, q_latent, context;       // MLA's absorbed form
    std::vector<float> slot_out, gathered, expert_gate_up, expert_activated, expert_down;  // MoE
    std::vector<float> shared, mlp_projected, mlp_activated;  // shared experts, gated MLP
  } work_;
  kernels::CpuMatmul matmul_;      // compute thread
  kernels::CpuMatmul io_matmul_;   // the loader's I/O thread packs with its own instance
  std::vector<float> final_norm_;  // f32 [hidden]
  kernels::PackedWeight lm_head_;  // [vocab, hidden]
  std::vector<std::shared_ptr<const DenseWeights>> resident_dense_;  // empty when streamed
  std::uint64_t dense_bytes_ = 0;
  std::uint64_t fixed_bytes_ = 0;
  std::atomic<std::uint64_t> budget_bytes_ = 0;  // read by memory_stats() on any thread
  // The largest layer's expert, and every routed expert of every layer: packed, or computed as
  // stored (LayerTensors::stored_expert_bytes) where that takes more.
  std::uint64_t expert_block_bytes_ = 0;
  std::uint64_t all_expert_bytes_ = 0;
  int compute_threads_ = 1;
  int demand_pack_threads_ = 1;  // OpenMP threads that pack a block compute waits on
  std::int64_t step_rows_ = 1;   // rows of the step computing: a load wait keeps their team awake
  std::atomic<int> last_step_threads_{0};
  std::atomic<std::uint64_t> experts_run_ahead_{0};  // MemoryStats::experts_run_ahead
  // The host budget is split: fixed part, then expert_room_ shared by the host tier and KV
  // caches. KV bytes come out of the experts' share (evicting them), so fixed + experts + KV
  // stays within the budget; kv_limit_ keeps one layer's experts' worth for the host tier.
  std::atomic<std::uint64_t> expert_room_{0};  // UINT64_MAX: unlimited
  std::atomic<std::uint64_t> kv_limit_{0};     // UINT64_MAX: unlimited
  std::shared_ptr<KvAccount> kv_account_ = std::make_shared<KvAccount>();
  std::uint64_t kv_applied_ = 0;  // the KV bytes the host tier's budget last left room for

  std::unique_ptr<memtier::BufferPool> pool_;  // storage of blocks packed by the loader
  std::unique_ptr<memtier::Source> source_;
  std::unique_ptr<memtier::HostTier> host_;
  std::unique_ptr<memtier::TieredStore> store_;
  std::unique_ptr<memtier::SectionRing> ring_;
  std::unique_ptr<memtier::TraceWriter> trace_;
  std::int64_t trace_token_ = 0;
  std::vector<std::uint64_t> activations_;  // u64 [layers * experts]
  // Declared last so it is destroyed first: its threads run materialize() and on_loaded
  // callbacks (prefetches still in flight) that use the pool, the host tier, the store and the
  // tensors above, until its destructor has joined them.
  std::unique_ptr<memtier::BlockLoader> loader_;
};

}  // namespace moed::engine
