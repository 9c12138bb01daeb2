#include "moed/engine/engine.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "moed/engine/router.hpp"
#include "moed/kernels/cpu_ops.hpp"
#include "moed/kernels/cpu_threads.hpp"
#include "moed/kernels/quant.hpp"
#include "moed/kernels/quant_tiles.hpp"
#include "moed/memtier/aligned_buffer.hpp"
#include "moed/memtier/byte_size.hpp"

namespace moed::engine {

using kernels::WeightPart;
using memtier::BlockId;
using model::DenseRole;

// The checkpoint tensors of one layer, in the order their byte ranges are registered with
// memtier's Source (so a loaded block's ranges[i] is tensor i).
struct Engine::LayerTensors {
  std::vector<model::LayerTensor> dense;  // the layer's dense block, in registration order
  std::vector<const model::TensorInfo*> dense_infos;
  std::array<int, model::kDenseRoles> position{};  // role -> index in dense, -1 when absent
  // role -> index in dense_infos of its block scales (an f8_e4m3 weight), -1 when it has none;
  // they follow the roles' tensors in the dense block's ranges.
  std::array<int, model::kDenseRoles> scale_position{};
  std::vector<std::array<const model::TensorInfo*, 3>> experts;  // gate, up, down; none if dense
  // Each expert's matrices' block scales (null where a matrix has none); in its block's ranges,
  // those it has follow gate, up and down, in that order.
  std::vector<std::array<const model::TensorInfo*, 3>> expert_scales;
  std::uint64_t packed_expert_bytes = 0;  // an expert repacked (make_expert)
  // An expert computed as the file stores it (CpuMatmul::stored_rows): the memory its reads land
  // in, the most any expert of the layer's reads cover (memtier::aligned_read_bytes), alike for
  // all so that the buffer pool reuses it; 0 where the layer's formats are repacked on this CPU.
  std::uint64_t stored_expert_bytes = 0;
  // An expert rewritten in its row-tile format and computed from there as stored rows
  // (CpuMatmul::rewritten_rows: q3_K, iq3_s, iq3_xxs, iq1_s and iq1_m as q6_K, iq4_nl as q8_0),
  // where the file's format is not computed as stored but that one is; 0 elsewhere.
  std::uint64_t rewritten_expert_bytes = 0;
  // Experts stream from disk and are computed as stored, in the memory they were read into.
  bool streams_stored = false;
  // Experts stream from disk and are rewritten (rewritten_expert_bytes) rather than packed.
  bool streams_rewritten = false;
};

namespace {

// RMSNorm eps of MLA's q_a_layernorm and kv_a_layernorm: transformers builds them without an eps
// argument, so they keep the class default whatever rms_norm_eps says.
constexpr float kLatentNormEps = 1e-6f;

std::vector<float> to_f32(const model::TensorInfo& tensor, const std::byte* data) {
  std::size_t count = 1;
  for (const auto d : tensor.shape) count *= static_cast<std::size_t>(d);
  std::vector<float> out(count);
  kernels::convert_to_f32(data, tensor.dtype, out.data(), out.size());
  return out;
}

// A checkpoint tensor as a matmul part: its bytes, and for an f8_e4m3 weight its block scales
// (`scales`, whose bytes are at scale_data) in blocks of the config's weight_block_size.
WeightPart part(const model::TensorInfo& tensor, const std::byte* data,
                const model::TensorInfo* scales = nullptr, const std::byte* scale_data = nullptr,
                const model::ModelSpec* spec = nullptr) {
  WeightPart weight{data, tensor.dtype, tensor.shape[0]};
  if (scales == nullptr) return weight;
  weight.scales = {scale_data, scales->dtype, spec->fp8_block_rows, spec->fp8_block_cols};
  // A corrupt scale would turn its whole block into NaN or infinity: refused where a weight is
  // made from the bytes (a block packed at load or when read from disk, the embedding at load),
  // naming the tensor.
  const std::int64_t count = scales->shape[0] * scales->shape[1];
  std::vector<float> grid(static_cast<std::size_t>(count));
  kernels::convert_to_f32(scale_data, scales->dtype, grid.data(), grid.size());
  for (std::int64_t i = 0; i < count; ++i)
    if (!std::isfinite(grid[static_cast<std::size_t>(i)]))
      throw std::runtime_error("tensor '" + scales->name + "' holds a scale of " +
                               std::to_string(grid[static_cast<std::size_t>(i)]) + " at [" +
                               std::to_string(i / scales->shape[1]) + ", " +
                               std::to_string(i % scales->shape[1]) + "]");
  return weight;
}

// A tensor as a part to size (CpuMatmul::packed_bytes): its dtype and rows, and for an f8_e4m3
// weight its block geometry, which decides how it is held (FP8 rows or bf16).
WeightPart sizing_part(const model::TensorInfo& tensor, const model::ModelSpec& spec) {
  WeightPart weight{nullptr, tensor.dtype, tensor.shape[0]};
  if (tensor.dtype == kernels::DType::f8_e4m3)
    weight.scales = {nullptr, kernels::DType::f32, spec.fp8_block_rows, spec.fp8_block_cols};
  return weight;
}

// A tensor's elements in f32: an f8_e4m3 weight times its block scales.
std::vector<float> to_f32(const model::TensorInfo& tensor, const WeightPart& weight) {
  if (tensor.dtype != kernels::DType::f8_e4m3)
    return to_f32(tensor, static_cast<const std::byte*>(weight.data));
  std::vector<float> out(static_cast<std::size_t>(tensor.shape[0] * tensor.shape[1]));
  kernels::dequantize_f8_e4m3(weight.data, weight.scales, tensor.shape[0], tensor.shape[1],
                              out.data());
  return out;
}

// `count` floats of a workspace buffer, grown (never shrunk) to fit; contents are whatever the
// last use left.
float* take(std::vector<float>& buffer, std::int64_t count) {
  if (buffer.size() < static_cast<std::size_t>(count))
    buffer.resize(static_cast<std::size_t>(count));
  return buffer.data();
}

// Storage for weights packed once and kept (LM head, resident dense layers): on huge pages, as
// the buffer pool gives the loader's blocks.
std::shared_ptr<std::byte> allocate_resident(std::size_t bytes) {
  return {memtier::allocate_aligned(bytes), [](std::byte* memory) { std::free(memory); }};
}

// Where each packed matrix of a block starts in the block's one buffer.
constexpr std::size_t kPieceAlignment = 64;

std::size_t piece_bytes(std::size_t bytes) {
  return (bytes + kPieceAlignment - 1) / kPieceAlignment * kPieceAlignment;
}

// The packed matrices of one block (an expert, a layer's dense weights) in one buffer, handed
// out in order. With an allocation per matrix, each one's last partial huge page stayed in 4 KiB
// pages: 29% of the bench model's Q8_0 weights, against 12% now. A Q8_0 expert region on two
// threads went from a median of 52 to 56 GB/s (six alternated bench runs each; Q4_K_M, whose
// tails were smaller, measured the same).
class BlockBuffer {
 public:
  BlockBuffer(const kernels::PackedAllocator& allocate, std::size_t capacity)
      : buffer_(allocate(capacity)), capacity_(capacity) {}
  BlockBuffer(const BlockBuffer&) = delete;
  BlockBuffer& operator=(const BlockBuffer&) = delete;

  // Once every piece is handed out: the sizes computed ahead must be the sizes packed.
  void check_filled() const {
    if (used_ != capacity_)
      throw std::logic_error("block buffer: " + std::to_string(used_) + " of its " +
                             std::to_string(capacity_) +
                             " bytes used (the block's packed sizes were computed wrong)");
  }

  // Pieces share the buffer's ownership: the block's memory goes when its last matrix does.
  kernels::PackedAllocator pieces() {
    return [this](std::size_t bytes) {
      if (used_ + piece_bytes(bytes) > capacity_)
        throw std::logic_error("block buffer: a piece of " + std::to_string(bytes) +
                               " bytes at offset " + std::to_string(used_) +
                               " passes its capacity of " + std::to_string(capacity_) +
                               " (the block's packed sizes were computed wrong)");
      std::shared_ptr<std::byte> piece(buffer_, buffer_.get() + used_);
      used_ += piece_bytes(bytes);
      return piece;
    };
  }

 private:
  std::shared_ptr<std::byte> buffer_;
  std::size_t capacity_;
  std::size_t used_ = 0;
};

// A layer's dense-block tensors by role, over the bytes a loaded block (or the mapped file) has.
class DenseTensors {
 public:
  // position and scale_position as in Engine::LayerTensors: role -> index into infos and data.
  DenseTensors(const model::ModelSpec& spec, const std::vector<const model::TensorInfo*>& infos,
               const std::array<int, model::kDenseRoles>& position,
               const std::array<int, model::kDenseRoles>& scale_position,
               std::span<const std::byte* const> data)
      : spec_(spec),
        infos_(infos),
        position_(position),
        scale_position_(scale_position),
        data_(data) {}

  bool has(DenseRole role) const { return position_[slot(role)] >= 0; }
  const model::TensorInfo& info(DenseRole role) const { return *infos_[index(position_, role)]; }
  const std::byte* data(DenseRole role) const { return data_[index(position_, role)]; }
  WeightPart weight(DenseRole role) const {
    if (scale_position_[slot(role)] < 0) return part(info(role), data(role));
    const std::size_t scales = index(scale_position_, role);
    return part(info(role), data(role), infos_[scales], data_[scales], &spec_);
  }
  std::vector<float> floats(DenseRole role) const { return to_f32(info(role), weight(role)); }

 private:
  static std::size_t slot(DenseRole role) { return static_cast<std::size_t>(role); }
  static std::size_t index(const std::array<int, model::kDenseRoles>& positions, DenseRole role) {
    return static_cast<std::size_t>(positions[slot(role)]);
  }
  const model::ModelSpec& spec_;
  const std::vector<const model::TensorInfo*>& infos_;
  const std::array<int, model::kDenseRoles>& position_;
  const std::array<int, model::kDenseRoles>& scale_position_;
  std::span<const std::byte* const> data_;
};

// An f32 router (as llama.cpp's converter writes every ffn_gate_inp) and DeepSeek's, whose logits
// transformers computes in f32 from any dtype, are computed from plain f32 rows by
// kernels::f32_rows: a call to oneDNN's f32 matmul cost 18 us a row, about 4% of a Q8_0 bench
// decode step with three router calls per layer (its own and two predictions).
bool router_in_f32(const model::ModelSpec& spec, const DenseTensors& t) {
  return spec.router.fp32_logits || t.info(DenseRole::router).dtype == kernels::DType::f32;
}

// The dtype MLA's kv_b has when its heads are packed: a quantized one (a legacy GGUF) is widened
// to f32 first, its blocks running along the rows the key part's transposed packing cuts across;
// an FP8 one is its bf16 dequantization (as every FP8 weight is computed), whose scale blocks
// also span heads.
kernels::DType absorbed_dtype(kernels::DType dtype) {
  if (kernels::is_quantized(dtype)) return kernels::DType::f32;
  return dtype == kernels::DType::f8_e4m3 ? kernels::DType::bf16 : dtype;
}

// What pack_dense allocates for a layer's matrices in its block buffer, known before any data is
// read.
std::uint64_t dense_matrix_bytes(kernels::CpuMatmul& matmul, const model::ModelSpec& spec,
                                 const DenseTensors& t) {
  const std::int64_t hidden = spec.hidden_size;
  const auto& a = spec.attention;
  // What pack() allocates for the roles the layer has, stacked as pack_dense stacks them.
  auto stack = [&](std::initializer_list<DenseRole> roles, std::int64_t cols) -> std::uint64_t {
    std::vector<WeightPart> parts;
    for (const auto role : roles)
      if (t.has(role)) parts.push_back(sizing_part(t.info(role), spec));
    return parts.empty() ? 0 : piece_bytes(matmul.packed_bytes(parts, cols));
  };
  std::uint64_t total =
      stack({DenseRole::q, DenseRole::k, DenseRole::v, DenseRole::q_a, DenseRole::kv_a}, hidden) +
      stack({DenseRole::q_b}, a.q_lora_rank) + stack({DenseRole::o}, a.output_width()) +
      stack({DenseRole::mlp_gate, DenseRole::mlp_up}, hidden) +
      stack({DenseRole::shared_expert_gate}, hidden);
  if (t.has(DenseRole::mlp_down))
    total += stack({DenseRole::mlp_down}, t.info(DenseRole::mlp_down).shape[1]);
  if (t.has(DenseRole::router) && !router_in_f32(spec, t))
    total += stack({DenseRole::router}, hidden);
  if (a.kind == model::AttentionKind::mla) {
    const bool split = t.has(DenseRole::k_b);
    const kernels::DType keys =
        split ? t.info(DenseRole::k_b).dtype : absorbed_dtype(t.info(DenseRole::kv_b).dtype);
    const kernels::DType values =
        split ? t.info(DenseRole::v_b).dtype : absorbed_dtype(t.info(DenseRole::kv_b).dtype);
    total += piece_bytes(matmul.packed_bytes(a.heads, a.kv_lora_rank, a.qk_nope_head_dim, keys)) +
             piece_bytes(matmul.packed_bytes(a.heads, a.v_head_dim, a.kv_lora_rank, values));
  }
  return total;
}

std::shared_ptr<DenseWeights> pack_dense(kernels::CpuMatmul& matmul, const model::ModelSpec& spec,
                                         const DenseTensors& t,
                                         const kernels::PackedAllocator& block_allocate) {
  auto w = std::make_shared<DenseWeights>();
  const std::int64_t hidden = spec.hidden_size;
  const auto& a = spec.attention;
  BlockBuffer block(block_allocate, dense_matrix_bytes(matmul, spec, t));
  const kernels::PackedAllocator allocate = block.pieces();
  auto pack = [&](std::initializer_list<WeightPart> parts, std::int64_t cols) {
    return matmul.pack(std::span(parts.begin(), parts.size()), cols, allocate);
  };
  w->attention_norm = t.floats(DenseRole::attention_norm);
  w->ffn_norm = t.floats(DenseRole::ffn_norm);
  if (a.kind == model::AttentionKind::gqa) {
    w->input_projection =
        pack({t.weight(DenseRole::q), t.weight(DenseRole::k), t.weight(DenseRole::v)}, hidden);
    if (t.has(DenseRole::q_bias))
      for (const auto role : {DenseRole::q_bias, DenseRole::k_bias, DenseRole::v_bias}) {
        const auto bias = t.floats(role);
        w->qkv_bias.insert(w->qkv_bias.end(), bias.begin(), bias.end());
      }
    if (t.has(DenseRole::q_norm)) {
      w->q_norm = t.floats(DenseRole::q_norm);
      w->k_norm = t.floats(DenseRole::k_norm);
    }
  } else {
    const DenseRole query = a.q_lora_rank > 0 ? DenseRole::q_a : DenseRole::q;
    w->input_projection = pack({t.weight(query), t.weight(DenseRole::kv_a)}, hidden);
    if (a.q_lora_rank > 0) {
      w->q_norm = t.floats(DenseRole::q_a_norm);
      w->q_b = pack({t.weight(DenseRole::q_b)}, a.q_lora_rank);
    }
    w->k_norm = t.floats(DenseRole::kv_a_norm);
    if (t.has(DenseRole::k_b)) {
      // llama.cpp's split kv_b: per head, k_b is the key part already transposed
      // [kv_lora, nope] and v_b the value part [v_head_dim, kv_lora], used as they are stored.
      const auto k_b = t.weight(DenseRole::k_b);
      const auto v_b = t.weight(DenseRole::v_b);
      const std::size_t key_head = kernels::row_bytes(k_b.dtype, a.qk_nope_head_dim) *
                                   static_cast<std::size_t>(a.kv_lora_rank);
      const std::size_t value_head =
          kernels::row_bytes(v_b.dtype, a.kv_lora_rank) * static_cast<std::size_t>(a.v_head_dim);
      std::vector<WeightPart> keys, values;
      for (std::int64_t h = 0; h < a.heads; ++h) {
        keys.push_back(
            {static_cast<const std::byte*>(k_b.data) + h * key_head, k_b.dtype, a.kv_lora_rank});
        values.push_back(
            {static_cast<const std::byte*>(v_b.data) + h * value_head, v_b.dtype, a.v_head_dim});
      }
      w->absorb_keys = matmul.pack_batched(keys, a.qk_nope_head_dim, allocate);
      w->absorb_values = matmul.pack_batched(values, a.kv_lora_rank, allocate);
    } else {
      // kv_b holds per head [key nope rows | value rows] over the latent. The key part lies
      // [nope, kv_lora]: the transpose of the [kv_lora, nope] matrix the absorbed form applies,
      // packed as it lies, in absorbed_dtype.
      const auto& kv_b = t.info(DenseRole::kv_b);
      const kernels::DType dtype = absorbed_dtype(kv_b.dtype);
      std::vector<float> widened;
      std::vector<std::uint16_t> dequantized;
      const std::byte* kv_b_data = t.data(DenseRole::kv_b);
      if (kv_b.dtype == kernels::DType::f8_e4m3) {
        dequantized.resize(static_cast<std::size_t>(kv_b.shape[0] * kv_b.shape[1]));
        kernels::f8_e4m3_to_bf16(kv_b_data, t.weight(DenseRole::kv_b).scales, kv_b.shape[0],
                                 kv_b.shape[1], dequantized.data());
        kv_b_data = reinterpret_cast<const std::byte*>(dequantized.data());
      } else if (dtype != kv_b.dtype) {
        widened = t.floats(DenseRole::kv_b);
        kv_b_data = reinterpret_cast<const std::byte*>(widened.data());
      }
      const std::int64_t head_rows = a.qk_nope_head_dim + a.v_head_dim;
      const std::size_t row_bytes = kernels::row_bytes(dtype, a.kv_lora_rank);
      std::vector<WeightPart> keys, values;
      for (std::int64_t h = 0; h < a.heads; ++h) {
        const std::byte* head = kv_b_data + static_cast<std::size_t>(h * head_rows) * row_bytes;
        keys.push_back({head, dtype, a.kv_lora_rank});
        values.push_back(
            {head + static_cast<std::size_t>(a.qk_nope_head_dim) * row_bytes, dtype, a.v_head_dim});
      }
      w->absorb_keys =
          matmul.pack_batched(keys, a.qk_nope_head_dim, allocate, kernels::MatrixOrder::cols_first);
      w->absorb_values = matmul.pack_batched(values, a.kv_lora_rank, allocate);
    }
  }
  w->output = pack({t.weight(DenseRole::o)}, a.output_width());
  if (t.has(DenseRole::router)) {
    if (router_in_f32(spec, t))
      w->router_f32 = t.floats(DenseRole::router);
    else
      w->router = pack({t.weight(DenseRole::router)}, hidden);
  }
  if (t.has(DenseRole::router_bias)) w->router_bias = t.floats(DenseRole::router_bias);
  if (t.has(DenseRole::mlp_gate)) {
    w->mlp_gate_up = pack({t.weight(DenseRole::mlp_gate), t.weight(DenseRole::mlp_up)}, hidden);
    const auto& down = t.info(DenseRole::mlp_down);
    w->mlp_down = pack({t.weight(DenseRole::mlp_down)}, down.shape[1]);
  }
  if (t.has(DenseRole::shared_expert_gate))
    w->shared_expert_gate = pack({t.weight(DenseRole::shared_expert_gate)}, hidden);
  block.check_filled();
  return w;
}

// How an expert not computed where its reads landed is made in its block buffer: packed
// (CpuMatmul::pack), or, streamed in a format computed as another's rows (q3_K, iq3_s, iq3_xxs,
// iq1_s, iq1_m, iq4_nl), rewritten in that format's blocks and computed as stored
// (CpuMatmul::rewritten_rows).
enum class ExpertMaking { packed, rewritten };

std::size_t matrix_bytes(kernels::CpuMatmul& matmul, ExpertMaking making,
                         std::span<const WeightPart> parts, std::int64_t cols) {
  return making == ExpertMaking::packed ? matmul.packed_bytes(parts, cols)
                                        : kernels::CpuMatmul::rewritten_rows_bytes(parts, cols);
}

// What make_expert allocates for an expert in its block buffer.
std::uint64_t expert_matrix_bytes(kernels::CpuMatmul& matmul, const model::ModelSpec& spec,
                                  std::span<const WeightPart> gate_up, const WeightPart& down,
                                  ExpertMaking making) {
  return piece_bytes(matrix_bytes(matmul, making, gate_up, spec.hidden_size)) +
         piece_bytes(matrix_bytes(matmul, making, std::span(&down, 1), spec.intermediate_size));
}

// An expert computed where its reads landed (`memory`, of memory_bytes): no copy, no repacking.
std::shared_ptr<ExpertWeights> stored_expert(const model::ModelSpec& spec,
                                             const std::array<const model::TensorInfo*, 3>& t,
                                             const std::array<const std::byte*, 3>& data,
                                             std::shared_ptr<std::byte> memory,
                                             std::uint64_t memory_bytes) {
  auto w = std::make_shared<ExpertWeights>();
  const WeightPart gate_up[] = {part(*t[0], data[0]), part(*t[1], data[1])};
  const WeightPart down = part(*t[2], data[2]);
  w->gate_up = kernels::CpuMatmul::stored_rows(gate_up, spec.hidden_size, memory);
  w->down = kernels::CpuMatmul::stored_rows(std::span(&down, 1), spec.intermediate_size,
                                            std::move(memory));
  w->memory_bytes = memory_bytes;
  return w;
}

// An expert's gate, up and down as parts, over its block's bytes (`data`, in the order of its
// ranges: the three matrices, then the block scales of those that have them).
std::array<WeightPart, 3> expert_parts(const model::ModelSpec& spec,
                                       const std::array<const model::TensorInfo*, 3>& t,
                                       const std::array<const model::TensorInfo*, 3>& scales,
                                       std::span<const std::byte* const> data) {
  std::array<WeightPart, 3> parts;
  std::size_t next_scales = 3;
  for (std::size_t m = 0; m < 3; ++m)
    parts[m] = scales[m] == nullptr ? part(*t[m], data[m])
                                    : part(*t[m], data[m], scales[m], data[next_scales++], &spec);
  return parts;
}

std::shared_ptr<ExpertWeights> make_expert(kernels::CpuMatmul& matmul, const model::ModelSpec& spec,
                                           const std::array<const model::TensorInfo*, 3>& t,
                                           const std::array<const model::TensorInfo*, 3>& scales,
                                           std::span<const std::byte* const> data,
                                           const kernels::PackedAllocator& allocate,
                                           ExpertMaking making) {
  auto w = std::make_shared<ExpertWeights>();
  const auto parts = expert_parts(spec, t, scales, data);
  const WeightPart gate_up[] = {parts[0], parts[1]};
  const WeightPart down = parts[2];
  BlockBuffer block(allocate, expert_matrix_bytes(matmul, spec, gate_up, down, making));
  const auto matrix = [&](std::span<const WeightPart> parts, std::int64_t cols) {
    return making == ExpertMaking::packed
               ? matmul.pack(parts, cols, block.pieces())
               : kernels::CpuMatmul::rewritten_rows(parts, cols, block.pieces());
  };
  w->gate_up = matrix(gate_up, spec.hidden_size);
  w->down = matrix(std::span(&down, 1), spec.intermediate_size);
  block.check_filled();
  return w;
}

// What pack_dense will allocate for a layer, known before any data is read.
std::uint64_t dense_packed_bytes(kernels::CpuMatmul& matmul, const model::ModelSpec& spec,
                                 const DenseTensors& t) {
  std::uint64_t total = dense_matrix_bytes(matmul, spec, t);
  if (t.has(DenseRole::router) && router_in_f32(spec, t))
    total += static_cast<std::uint64_t>(spec.num_experts * spec.hidden_size) * sizeof(float);
  for (const auto role :
       {DenseRole::attention_norm, DenseRole::ffn_norm, DenseRole::q_bias, DenseRole::k_bias,
        DenseRole::v_bias, DenseRole::q_norm, DenseRole::k_norm, DenseRole::q_a_norm,
        DenseRole::kv_a_norm, DenseRole::router_bias})
    if (t.has(role)) total += static_cast<std::uint64_t>(t.info(role).shape[0]) * sizeof(float);
  return total;
}

}  // namespace

std::uint64_t DenseWeights::bytes() const {
  std::uint64_t total = input_projection.bytes() + q_b.bytes() + absorb_keys.bytes() +
                        absorb_values.bytes() + output.bytes() + router.bytes() +
                        mlp_gate_up.bytes() + mlp_down.bytes() + shared_expert_gate.bytes();
  for (const auto* v :
       {&attention_norm, &ffn_norm, &qkv_bias, &q_norm, &k_norm, &router_f32, &router_bias})
    total += v->size() * sizeof(float);
  return total;
}

int demand_pack_threads(int requested_threads, int physical_cores) {
  // A user who gives moed 4 of 32 cores means all of its computing, packing included.
  const int all_but_one = std::max(1, physical_cores - 1);
  return requested_threads > 0 ? std::min(all_but_one, requested_threads) : all_but_one;
}

bool team_awake_in_load_waits(int compute_threads, int demand_pack_threads, int physical_cores) {
  return compute_threads > 1 && compute_threads - 1 + demand_pack_threads <= physical_cores;
}

Engine::Engine(const std::filesystem::path& model, const EngineOptions& options)
    : gguf_(model::open_gguf(model)),
      spec_(gguf_ ? model::spec_from_gguf(*gguf_) : model::ModelSpec::from_config(model)),
      checkpoint_(gguf_ ? model::Checkpoint(gguf_, spec_) : model::Checkpoint(model, spec_)),
      options_(options),
      embedding_(&checkpoint_.tensor(model::embedding_tensor())) {
  compute_threads_ = options.threads > 0 ? options.threads : kernels::physical_core_count();
  kernels::set_compute_threads(compute_threads_);
  demand_pack_threads_ = demand_pack_threads(options.threads, kernels::physical_core_count());
  // On a CPU without AVX512-BF16, FP8 weights kept at one byte a weight in moed's panels decode
  // slower than widened to bf16 (bench-size Qwen3-MoE, all resident: 50 against 62 tokens/s on
  // the AVX-512 path, 39 against 66 on AVX2): they are kept so under a host budget that caps
  // memory, where every byte counts, and widened under none.
  matmul_.hold_fp8_in_panels(options.host_budget.caps_memory());
  io_matmul_.hold_fp8_in_panels(options.host_budget.caps_memory());
  activations_.assign(static_cast<std::size_t>(spec_.num_layers * spec_.num_experts), 0);
  rope_frequencies_ = spec_.rope.inverse_frequencies();
  const std::int64_t layers = spec_.num_layers;
  const std::int64_t hidden = spec_.hidden_size;

  const std::vector<std::filesystem::path>& files = checkpoint_.paths();
  source_ = std::make_unique<memtier::Source>(files);
  auto range_of = [](const model::TensorInfo* t) {
    return memtier::FileRange{t->file, t->file_offset, t->nbytes};
  };

  tensors_.resize(static_cast<std::size_t>(layers));
  std::uint64_t largest_dense = 0;
  for (std::int64_t l = 0; l < layers; ++l) {
    auto& lt = tensors_[static_cast<std::size_t>(l)];
    lt.dense = model::dense_tensors(spec_, l);
    lt.position.fill(-1);
    lt.scale_position.fill(-1);
    std::vector<memtier::FileRange> ranges;
    for (const auto& t : lt.dense) {
      lt.position[static_cast<std::size_t>(t.role)] = static_cast<int>(lt.dense_infos.size());
      lt.dense_infos.push_back(&checkpoint_.tensor(t.name));
      ranges.push_back(range_of(lt.dense_infos.back()));
    }
    for (const auto& t : lt.dense)
      if (const auto* scales = checkpoint_.block_scales(*lt.dense_infos[static_cast<std::size_t>(
              lt.position[static_cast<std::size_t>(t.role)])])) {
        lt.scale_position[static_cast<std::size_t>(t.role)] =
            static_cast<int>(lt.dense_infos.size());
        lt.dense_infos.push_back(scales);
        ranges.push_back(range_of(scales));
      }
    source_->add(BlockId::dense(static_cast<std::int32_t>(l)), std::move(ranges));
    std::vector<const std::byte*> mapped;
    for (const auto* info : lt.dense_infos) mapped.push_back(checkpoint_.data(*info));
    const std::uint64_t layer_bytes = dense_packed_bytes(
        matmul_, spec_,
        DenseTensors(spec_, lt.dense_infos, lt.position, lt.scale_position, mapped));
    dense_bytes_ += layer_bytes;
    largest_dense = std::max(largest_dense, layer_bytes);

    if (!spec_.has_experts(l)) continue;
    lt.experts.resize(static_cast<std::size_t>(spec_.num_experts));
    lt.expert_scales.resize(static_cast<std::size_t>(spec_.num_experts));
    std::uint64_t read_bytes = 0;  // the most one expert's reads cover
    for (std::int64_t e = 0; e < spec_.num_experts; ++e) {
      auto& ex = lt.experts[static_cast<std::size_t>(e)];
      auto& scales = lt.expert_scales[static_cast<std::size_t>(e)];
      for (const auto m :
           {model::ExpertMatrix::gate, model::ExpertMatrix::up, model::ExpertMatrix::down}) {
        ex[static_cast<std::size_t>(m)] = &checkpoint_.tensor(model::expert_tensor(spec_, l, e, m));
        scales[static_cast<std::size_t>(m)] =
            checkpoint_.block_scales(*ex[static_cast<std::size_t>(m)]);
      }
      std::vector<memtier::FileRange> ranges{range_of(ex[0]), range_of(ex[1]), range_of(ex[2])};
      for (const auto* matrix_scales : scales)
        if (matrix_scales != nullptr) ranges.push_back(range_of(matrix_scales));
      read_bytes = std::max(read_bytes, memtier::aligned_read_bytes(ranges));
      source_->add(BlockId::routed(static_cast<std::int32_t>(l), static_cast<std::int32_t>(e)),
                   std::move(ranges));
    }
    // Quantized files may give some layers' experts more bits (llama-quantize's q4_K_M).
    const auto& first = lt.experts.front();
    const WeightPart gate_up[] = {sizing_part(*first[0], spec_), sizing_part(*first[1], spec_)};
    const WeightPart down = sizing_part(*first[2], spec_);
    lt.packed_expert_bytes =
        expert_matrix_bytes(matmul_, spec_, gate_up, down, ExpertMaking::packed);
    const WeightPart all_three[] = {gate_up[0], gate_up[1], down};
    if (kernels::CpuMatmul::computes_stored_rows(all_three))
      lt.stored_expert_bytes = read_bytes;
    else if (kernels::CpuMatmul::computes_rewritten_rows(all_three))
      lt.rewritten_expert_bytes =
          expert_matrix_bytes(matmul_, spec_, gate_up, down, ExpertMaking::rewritten);
    // Planned at the largest: whether experts stream is known only from the budget (the
    // starting one: a budget changed at run time keeps the layout chosen here).
    const std::uint64_t block =
        std::max({lt.packed_expert_bytes, lt.stored_expert_bytes, lt.rewritten_expert_bytes});
    expert_block_bytes_ = std::max(expert_block_bytes_, block);
    all_expert_bytes_ += block * static_cast<std::uint64_t>(spec_.num_experts);
  }

  // An FP8 embedding's scales, checked once: rows are widened as tokens come.
  if (const auto* scales = checkpoint_.block_scales(*embedding_))
    embedding_scales_ =
        part(*embedding_, checkpoint_.data(*embedding_), scales, checkpoint_.data(*scales), &spec_)
            .scales;
  const auto& final_norm = checkpoint_.tensor(model::final_norm_tensor());
  final_norm_ = to_f32(final_norm, checkpoint_.data(final_norm));
  const auto& head = checkpoint_.tensor(model::lm_head_tensor(spec_));
  const auto* head_scales = checkpoint_.block_scales(head);
  const WeightPart head_part = part(head, checkpoint_.data(head), head_scales,
                                    head_scales ? checkpoint_.data(*head_scales) : nullptr, &spec_);
  lm_head_ = matmul_.pack(std::span(&head_part, 1), hidden, allocate_resident);
  if (!spec_.tie_word_embeddings) {
    checkpoint_.file_of(head).release(head.file_offset, head.nbytes);
    if (head_scales != nullptr)
      checkpoint_.file_of(*head_scales).release(head_scales->file_offset, head_scales->nbytes);
  }

  // Budget: resident dense weights (or the ring's sections) and the LM head come first; experts
  // get the rest. Dense weights stay resident when they leave room for one layer's experts.
  const std::uint64_t head_bytes = lm_head_.bytes() + final_norm_.size() * sizeof(float);
  const std::uint64_t all_experts = all_expert_bytes_;
  const std::uint64_t budget = budget_bytes(options.host_budget, head_bytes + dense_bytes_);
  budget_bytes_ = budget;
  const bool unlimited = budget == 0;
  const std::uint64_t working_set =
      static_cast<std::uint64_t>(spec_.experts_per_token) * expert_block_bytes_;
  const bool dense_resident = unlimited || head_bytes + dense_bytes_ + working_set <= budget;
  if (dense_resident) {
    fixed_bytes_ = head_bytes + dense_bytes_;
    for (auto& lt : tensors_) {
      std::vector<const std::byte*> mapped;
      for (const auto* info : lt.dense_infos) mapped.push_back(checkpoint_.data(*info));
      resident_dense_.push_back(
          pack_dense(matmul_, spec_,
                     DenseTensors(spec_, lt.dense_infos, lt.position, lt.scale_position, mapped),
                     allocate_resident));
      if (options.on_progress)
        options.on_progress(0.3 * static_cast<double>(resident_dense_.size()) /
                            static_cast<double>(layers));
      for (const auto* t : lt.dense_infos)
        checkpoint_.file_of(*t).release(t->file_offset, t->nbytes);
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
  // Experts that stream are computed as the file stores them where this CPU can (every quantized
  // format, on AVX-512 VNNI or AVX2): a block read from disk is then used where it landed, with no
  // packing (a Q4_K_M demand's 0.9 ms of 3 on the 2026-12-05 VM; docs/design.md, section 4).
  const bool experts_stream = all_experts > expert_budget;
  std::set<std::uint64_t> expert_block_sizes;  // the memory an expert takes, over the layers
  bool any_stored = false;
  for (auto& lt : tensors_) {
    if (lt.experts.empty()) continue;
    lt.streams_stored = experts_stream && lt.stored_expert_bytes > 0;
    lt.streams_rewritten = experts_stream && lt.rewritten_expert_bytes > 0;
    any_stored = any_stored || lt.streams_stored;
    expert_block_sizes.insert(lt.streams_stored      ? lt.stored_expert_bytes
                              : lt.streams_rewritten ? lt.rewritten_expert_bytes
                                                     : lt.packed_expert_bytes);
  }
  // Spare buffers for four experts of each size: enough that the buffers evictions free serve
  // the next loads (prefetches run ahead of the evictions), and a fixed addition to RSS. The pool
  // reuses exact sizes only, and a quantized file may give layers different sizes (q4_K_M: some
  // ffn_down in q6_K); with room for two experts alone, q4_K_M's loads faulted in fresh pages:
  // packing ran at 1.2 GB/s, with four of each at 9.7 GB/s.
  std::uint64_t spare = 2 * largest_dense;
  for (const auto size : expert_block_sizes) spare += 4 * size;
  pool_ = std::make_unique<memtier::BufferPool>(spare);
  loader_ = std::make_unique<memtier::BlockLoader>(
      *source_,
      options.reader_factory ? options.reader_factory(files)
                             : memtier::make_reader(files, options.reader),
      [this](BlockId block, memtier::LoadedBlock& loaded, bool urgent) {
        return materialize(block, loaded, urgent);
      },
      memtier::BlockLoaderOptions{}, any_stored ? kept_reads() : memtier::KeptReads{});
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
  // A worker that sleeps in libgomp while compute waits for a read woke 0.5-1 ms late for the
  // next region on the 2-core VM: at a 25% budget, Q4_K_M's last expert of a token took 1.2-1.4
  // ms instead of 0.45 and the LM head 1.5-1.6 instead of 1.0, while the disk stood idle. The
  // spin's limit covers a read of a bench-model bf16 expert (17 MB) at 1 GB/s.
  if (team_awake_in_load_waits(compute_threads_, demand_pack_threads_,
                               kernels::physical_core_count()))
    store_->set_waiter([this](const std::shared_future<memtier::Payload>& load) {
      kernels::wait_with_team_awake([&] { load.wait(); }, std::chrono::milliseconds(20),
                                    step_rows_);
    });

  // When every expert fits, read them all now (many reads in flight) rather than on first use:
  // as demands, which the loader streams back to back and packs on demand_pack_threads_
  // (prefetches of experts it reads one at a time, as guesses).
  if (all_experts <= expert_budget) {
    std::vector<std::pair<BlockId, std::shared_future<memtier::Payload>>> loads;
    for (std::int32_t l = 0; l < layers; ++l)
      for (std::int32_t e = 0; spec_.has_experts(l) && e < spec_.num_experts; ++e)
        loads.emplace_back(
            BlockId::routed(l, e),
            loader_->load(BlockId::routed(l, e), memtier::BlockLoader::Priority::demand));
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

void Engine::add_stop_tokens(std::span<const std::int32_t> ids) {
  auto& stops = spec_.eos_token_ids;
  for (const std::int32_t id : ids)
    if (id >= 0 && id < spec_.vocab_size &&
        std::find(stops.begin(), stops.end(), id) == stops.end())
      stops.push_back(id);
}

memtier::Payload Engine::materialize(BlockId block, memtier::LoadedBlock& loaded, bool urgent) {
  // Runs on the loader's packer thread. A prefetch packs on one OpenMP thread, so it takes at most
  // one core from compute; a demand load has compute waiting on it, so it takes every core but
  // one, which the I/O thread and the reads' completions need meanwhile (and no more than
  // --threads). On the 2-core VM, a Q4_K_M demand packed on one thread took 0.51 ms against
  // 0.60 ms on two, and decode at a 25% budget gained 3-6% (bf16 3-4%).
  kernels::set_compute_threads(urgent ? demand_pack_threads_ : 1);
  const auto& lt = tensors_.at(static_cast<std::size_t>(block.layer));
  const kernels::PackedAllocator allocate = [this](std::size_t bytes) {
    return pool_->allocate(bytes);
  };
  if (block.is_dense()) {
    const std::vector<const std::byte*> data(loaded.ranges.begin(), loaded.ranges.end());
    return pack_dense(io_matmul_, spec_,
                      DenseTensors(spec_, lt.dense_infos, lt.position, lt.scale_position, data),
                      allocate);
  }
  if (loaded.kept)
    return stored_expert(spec_, lt.experts.at(static_cast<std::size_t>(block.expert)),
                         {loaded.ranges.at(0), loaded.ranges.at(1), loaded.ranges.at(2)},
                         std::move(loaded.kept), lt.stored_expert_bytes);
  const auto expert = static_cast<std::size_t>(block.expert);
  return make_expert(io_matmul_, spec_, lt.experts.at(expert), lt.expert_scales.at(expert),
                     loaded.ranges, allocate,
                     lt.streams_rewritten ? ExpertMaking::rewritten : ExpertMaking::packed);
}

memtier::KeptReads Engine::kept_reads() {
  return {[this](BlockId block) {
            return !block.is_dense() &&
                   tensors_.at(static_cast<std::size_t>(block.layer)).streams_stored;
          },
          [this](BlockId block, std::uint64_t bytes) {
            const std::uint64_t size =
                tensors_.at(static_cast<std::size_t>(block.layer)).stored_expert_bytes;
            if (bytes > size)
              throw std::logic_error(block.to_string() + " needs " + std::to_string(bytes) +
                                     " bytes to be read into, more than its layer's " +
                                     std::to_string(size));
            return pool_->allocate(size);
          }};
}

KvCache Engine::new_cache(std::int64_t positions) {
  const auto& a = spec_.attention;
  KvCache cache = a.kind == model::AttentionKind::gqa
                      ? KvCache(spec_.num_layers, a.kv_heads, a.head_dim, options_.kv_dtype,
                                kv_account_, positions)
                      : KvCache(spec_.num_layers, 1, a.cache_elements(), options_.kv_dtype,
                                kv_account_, positions, KvLayout::shared);
  apply_kv_to_budget();
  return cache;
}

std::uint64_t Engine::kv_bytes(std::int64_t positions) const {
  return static_cast<std::uint64_t>(spec_.num_layers * spec_.attention.cache_elements() *
                                    positions) *
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
  const std::size_t row_bytes = kernels::row_bytes(embedding_->dtype, hidden);
  const std::byte* base = checkpoint_.data(*embedding_);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const std::byte* row = base + static_cast<std::size_t>(tokens[i]) * row_bytes;
    float* into = out + i * static_cast<std::size_t>(hidden);
    if (embedding_scales_.data == nullptr) {
      kernels::convert_to_f32(row, embedding_->dtype, into, static_cast<std::size_t>(hidden));
    } else {
      kernels::BlockScales row_scales = embedding_scales_;
      row_scales.first_row = tokens[i];
      kernels::dequantize_f8_e4m3(row, row_scales, 1, hidden, into);
    }
  }
}

const DenseWeights& Engine::dense(std::int64_t layer, memtier::Payload& hold) {
  if (!resident_dense_.empty()) return *resident_dense_[static_cast<std::size_t>(layer)];
  hold = ring_->acquire(static_cast<std::size_t>(layer));
  return static_cast<const DenseWeights&>(*hold);
}

void Engine::predict_ahead(std::int64_t layer, const float* h, std::int64_t rows) {
  if (!options_.prefetch) return;
  // Horizon 1 first, so its reads queue ahead of the farther layer's.
  for (int horizon = 1; horizon <= options_.prefetch_horizon; ++horizon) {
    const std::int64_t target = layer + horizon;
    if (target >= spec_.num_layers || !spec_.has_experts(target)) continue;
    memtier::Payload hold;
    const DenseWeights* weights = nullptr;
    if (!resident_dense_.empty()) {
      weights = resident_dense_[static_cast<std::size_t>(target)].get();
    } else if ((hold = ring_->try_peek(static_cast<std::size_t>(target)))) {
      weights = static_cast<const DenseWeights*>(hold.get());
    }
    if (!weights) continue;  // that layer's router is not loaded yet: no prediction this time
    const int n_experts = static_cast<int>(spec_.num_experts);
    const int k = static_cast<int>(spec_.experts_per_token);
    std::vector<float> logits(static_cast<std::size_t>(rows * n_experts));
    router_logits_of(*weights, h, rows, logits.data());
    std::vector<std::int32_t> predicted;
    std::vector<int> ids(static_cast<std::size_t>(k));
    std::vector<float> unused(static_cast<std::size_t>(k));
    const float* bias = weights->router_bias.empty() ? nullptr : weights->router_bias.data();
    for (std::int64_t r = 0; r < rows; ++r) {
      route(spec_.router, logits.data() + r * n_experts, bias, n_experts, k, ids.data(),
            unused.data());
      for (int id : ids)
        if (std::find(predicted.begin(), predicted.end(), id) == predicted.end())
          predicted.push_back(id);
    }
    store_->prefetch(static_cast<std::int32_t>(target), predicted, horizon);
  }
}

void Engine::router_logits_of(const DenseWeights& weights, const float* h, std::int64_t rows,
                              float* logits) {
  if (weights.router_f32.empty())
    matmul_.multiply(h, rows, weights.router, logits);
  else
    kernels::f32_rows(weights.router_f32.data(), spec_.num_experts, spec_.hidden_size, h, rows,
                      logits);
}

void Engine::gated_mlp(const kernels::PackedWeight& gate_up, const kernels::PackedWeight& down,
                       const float* h, std::int64_t rows, float* out) {
  const std::int64_t ffn = down.cols();
  float* projected = take(work_.mlp_projected, rows * 2 * ffn);
  float* activated = take(work_.mlp_activated, rows * ffn);
  matmul_.multiply(h, rows, gate_up, projected);
  kernels::silu_mul(projected, activated, rows, ffn);
  matmul_.multiply(activated, rows, down, out);
}

// A layer's experts for the rows routed to them, each acquired in turn (its read, if it misses,
// overlapping the expert before) and run over every row routed to it. With prefetch, the experts
// resident now run first, while the first missing one is read: moe() holds what was resident
// when it began, and prefetches cannot evict a held block, so the tier's requests (acquired in
// `order` all the same) and hits are those of the order as given. Without prefetch a miss may
// evict a later expert of the same layer, as the simulator replays it, so `order` is kept.
void Engine::experts_one_by_one(std::int32_t layer, std::span<const std::int32_t> order,
                                std::span<const int> chosen, const float* h, std::int64_t rows,
                                float* slot_out, std::vector<memtier::Payload>& unacquired) {
  const std::int64_t hidden = spec_.hidden_size;
  const std::int64_t ffn = spec_.intermediate_size;
  const auto k = static_cast<std::int64_t>(spec_.experts_per_token);
  std::vector<std::int64_t> slots;
  const auto run_expert = [&](std::int32_t e, const ExpertWeights& expert) {
    slots.clear();
    for (std::int64_t s = 0; s < rows * k; ++s)
      if (chosen[static_cast<std::size_t>(s)] == e) slots.push_back(s);
    const auto m = static_cast<std::int64_t>(slots.size());
    float* gathered = take(work_.gathered, m * hidden);
    for (std::int64_t j = 0; j < m; ++j)
      std::memcpy(gathered + j * hidden, h + (slots[j] / k) * hidden,
                  static_cast<std::size_t>(hidden) * sizeof(float));
    float* gate_up = take(work_.expert_gate_up, m * 2 * ffn);
    float* activated = take(work_.expert_activated, m * ffn);
    float* down = take(work_.expert_down, m * hidden);
    matmul_.multiply(gathered, m, expert.gate_up, gate_up);
    kernels::silu_mul(gate_up, activated, m, ffn);
    matmul_.multiply(activated, m, expert.down, down);
    for (std::int64_t j = 0; j < m; ++j)
      std::memcpy(slot_out + slots[j] * hidden, down + j * hidden,
                  static_cast<std::size_t>(hidden) * sizeof(float));
  };

  std::vector<bool> ran(order.size(), false);
  // Held until each is acquired in turn below. Looked up again rather than taken from
  // `unacquired`: a prefetch may have landed since moe() began.
  std::vector<memtier::Payload> resident;
  if (options_.prefetch) {
    resident = store_->hold_resident(layer, order);
    const auto first_missing = static_cast<std::size_t>(
        std::find(resident.begin(), resident.end(), nullptr) - resident.begin());
    if (first_missing < order.size()) {
      store_->expect(BlockId::routed(layer, order[first_missing]));
      for (std::size_t i = 0; i < order.size(); ++i)
        if (resident[i]) {
          run_expert(order[i], static_cast<const ExpertWeights&>(*resident[i]));
          ran[i] = true;
          if (i > first_missing) ++experts_run_ahead_;
        }
    }
  }
  for (std::size_t i = 0; i < order.size(); ++i) {
    const std::int32_t e = order[i];
    // The next expert still to run has its read (if it misses) overlap this one's packing and
    // compute; this one's, started first, keeps its place ahead of it.
    store_->expect(BlockId::routed(layer, e));
    std::size_t next = i + 1;
    while (next < order.size() && ran[next]) ++next;
    if (next < order.size()) store_->expect(BlockId::routed(layer, order[next]));
    const memtier::Payload payload = store_->acquire(BlockId::routed(layer, e));
    std::erase(unacquired, payload);
    if (!ran[i]) run_expert(e, static_cast<const ExpertWeights&>(*payload));
  }
}

// One token's experts when every one is resident: acquired with the expect / acquire calls
// experts_one_by_one makes, in its order (the tier sees the same requests: expect starts nothing
// for a resident block), then computed in one parallel region, each owned by one thread and its
// last tiles taken by any thread that is done (CpuMatmul::expert_ffns), rather than in two
// regions per expert. The k payloads stay held through the compute, where the one-by-one path lets
// each go after its own; a prefetch admitted meanwhile can only evict other blocks. Slot i is
// order[i] (one row: routing order). False, having acquired nothing, where that does not apply.
bool Engine::experts_in_one_region(std::int32_t layer, std::span<const std::int32_t> order,
                                   const float* h, float* slot_out,
                                   std::vector<memtier::Payload>& unacquired) {
  if (kernels::compute_threads() < 2) return false;
  const std::vector<memtier::Payload> resident = store_->hold_resident(layer, order);
  if (std::find(resident.begin(), resident.end(), nullptr) != resident.end()) return false;
  std::vector<kernels::CpuMatmul::ExpertFfn> jobs;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto& expert = static_cast<const ExpertWeights&>(*resident[i]);
    jobs.push_back({&expert.gate_up, &expert.down, h,
                    slot_out + static_cast<std::int64_t>(i) * spec_.hidden_size});
  }
  if (!kernels::CpuMatmul::can_run_expert_ffns(jobs)) return false;
  for (std::size_t i = 0; i < order.size(); ++i) {
    store_->expect(BlockId::routed(layer, order[i]));
    if (i + 1 < order.size()) store_->expect(BlockId::routed(layer, order[i + 1]));
    std::erase(unacquired, store_->acquire(BlockId::routed(layer, order[i])));
  }
  kernels::CpuMatmul::expert_ffns(jobs);
  return true;
}

void Engine::moe(std::int64_t layer_index, const DenseWeights& weights, const float* h,
                 std::int64_t rows, float* out) {
  const std::int64_t hidden = spec_.hidden_size;
  const int k = static_cast<int>(spec_.experts_per_token);
  const int n_experts = static_cast<int>(spec_.num_experts);
  const auto layer = static_cast<std::int32_t>(layer_index);

  std::vector<float> router_logits(static_cast<std::size_t>(rows * n_experts));
  router_logits_of(weights, h, rows, router_logits.data());
  std::vector<int> chosen(static_cast<std::size_t>(rows * k));
  std::vector<float> gate_weights(static_cast<std::size_t>(rows * k));
  const float* bias = weights.router_bias.empty() ? nullptr : weights.router_bias.data();
  for (std::int64_t r = 0; r < rows; ++r)
    route(spec_.router, router_logits.data() + r * n_experts, bias, n_experts, k,
          chosen.data() + r * k, gate_weights.data() + r * k);
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
  predict_ahead(layer_index, h, rows);
  // Outputs land per (row, slot) so the weighted sum always adds in slot order, whatever order
  // the experts ran in.
  float* slot_out = take(work_.slot_out, rows * k * hidden);
  if (rows != 1 || !experts_in_one_region(layer, order, h, slot_out, unacquired))
    experts_one_by_one(layer, order, chosen, h, rows, slot_out, unacquired);
  store_->settle(layer);
  std::fill(out, out + rows * hidden, 0.0f);
  for (std::int64_t r = 0; r < rows; ++r)
    for (int s = 0; s < k; ++s) {
      const float w = gate_weights[static_cast<std::size_t>(r * k + s)];
      const float* expert_out = slot_out + (r * k + s) * hidden;
      float* dst = out + r * hidden;
      for (std::int64_t j = 0; j < hidden; ++j) dst[j] += w * expert_out[j];
    }
  if (weights.mlp_gate_up.empty()) return;
  // Shared experts see every token; Qwen2-MoE scales them by sigmoid(shared_expert_gate . h).
  float* shared = take(work_.shared, rows * hidden);
  gated_mlp(weights.mlp_gate_up, weights.mlp_down, h, rows, shared);
  std::vector<float> gate(static_cast<std::size_t>(rows));
  if (!weights.shared_expert_gate.empty())
    matmul_.multiply(h, rows, weights.shared_expert_gate, gate.data());
  for (std::int64_t r = 0; r < rows; ++r) {
    const float scale =
        weights.shared_expert_gate.empty()
            ? 1.0f
            : static_cast<float>(
                  1.0 / (1.0 + std::exp(-static_cast<double>(gate[static_cast<std::size_t>(r)]))));
    for (std::int64_t j = 0; j < hidden; ++j) out[r * hidden + j] += scale * shared[r * hidden + j];
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

namespace {

// Writes one position's cache vector of `width` elements, rounding to bf16 for a bf16 cache.
void store_kv(std::byte* dst, const float* src, std::int64_t width, bool bf16) {
  if (bf16)
    kernels::convert_f32_to_bf16(src, reinterpret_cast<std::uint16_t*>(dst),
                                 static_cast<std::size_t>(width));
  else
    std::memcpy(dst, src, static_cast<std::size_t>(width) * sizeof(float));
}

// Causal attention of a segment's queries over its cache, of either element type.
void attend(KvCache& cache, std::int64_t layer, const float* q, float* out,
            const kernels::AttentionShape& shape) {
  if (cache.dtype() == KvDtype::bf16)
    kernels::attention(q, reinterpret_cast<const std::uint16_t*>(cache.keys(layer)),
                       reinterpret_cast<const std::uint16_t*>(cache.values(layer)), out, shape);
  else
    kernels::attention(q, reinterpret_cast<const float*>(cache.keys(layer)),
                       reinterpret_cast<const float*>(cache.values(layer)), out, shape);
}

void clamp(float* x, std::int64_t n, double limit) {
  const auto l = static_cast<float>(limit);
  for (std::int64_t i = 0; i < n; ++i) x[i] = std::clamp(x[i], -l, l);
}

}  // namespace

void Engine::attention(std::int64_t layer, const DenseWeights& weights, const float* h,
                       std::span<const Segment> segments, const std::int64_t* positions,
                       std::int64_t rows, float* out) {
  float* attn = take(work_.attn, rows * spec_.attention.output_width());
  if (spec_.attention.kind == model::AttentionKind::gqa)
    gqa_attention(layer, weights, h, segments, positions, rows, attn);
  else
    mla_attention(layer, weights, h, segments, positions, rows, attn);
  matmul_.multiply(attn, rows, weights.output, out);
}

void Engine::gqa_attention(std::int64_t layer, const DenseWeights& weights, const float* h,
                           std::span<const Segment> segments, const std::int64_t* positions,
                           std::int64_t n, float* attn) {
  const auto& a = spec_.attention;
  const std::int64_t hd = a.head_dim;
  const std::int64_t q_width = a.heads * hd;
  const std::int64_t kv_width = a.kv_heads * hd;
  const std::int64_t qkv_width = q_width + 2 * kv_width;
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  float* qkv = take(work_.qkv, n * qkv_width);
  matmul_.multiply(h, n, weights.input_projection, qkv);
  float* q = take(work_.q, n * q_width);
  float* k = take(work_.k, n * kv_width);
  float* v = take(work_.v, n * kv_width);
  for (std::int64_t i = 0; i < n; ++i) {
    float* row = qkv + i * qkv_width;
    if (!weights.qkv_bias.empty()) kernels::add_in_place(row, weights.qkv_bias.data(), qkv_width);
    std::memcpy(q + i * q_width, row, static_cast<std::size_t>(q_width) * sizeof(float));
    std::memcpy(k + i * kv_width, row + q_width,
                static_cast<std::size_t>(kv_width) * sizeof(float));
    std::memcpy(v + i * kv_width, row + q_width + kv_width,
                static_cast<std::size_t>(kv_width) * sizeof(float));
  }
  if (a.qk_norm == model::QkNorm::whole) {
    kernels::rms_norm(q, weights.q_norm.data(), q, n, q_width, eps);
    kernels::rms_norm(k, weights.k_norm.data(), k, n, kv_width, eps);
  } else if (a.qk_norm == model::QkNorm::per_head) {
    kernels::rms_norm(q, weights.q_norm.data(), q, n * a.heads, hd, eps);
    kernels::rms_norm(k, weights.k_norm.data(), k, n * a.kv_heads, hd, eps);
  }
  if (a.clip_qkv > 0) {
    clamp(q, n * q_width, a.clip_qkv);
    clamp(k, n * kv_width, a.clip_qkv);
    clamp(v, n * kv_width, a.clip_qkv);
  }
  const auto pairs = spec_.rope.style == model::RopeStyle::half ? kernels::RopePairs::half
                                                                : kernels::RopePairs::adjacent;
  kernels::rope(q, {n, a.heads, hd, 0, spec_.rope.dim, pairs}, positions, rope_frequencies_.data(),
                spec_.rope.attention_factor);
  kernels::rope(k, {n, a.kv_heads, hd, 0, spec_.rope.dim, pairs}, positions,
                rope_frequencies_.data(), spec_.rope.attention_factor);
  std::int64_t row0 = 0;
  for (const auto& seg : segments) {
    const std::int64_t cap = seg.cache->capacity();
    const bool bf16 = seg.cache->dtype() == KvDtype::bf16;
    const std::size_t element = kv_element_size(seg.cache->dtype());
    for (std::int64_t i = 0; i < seg.rows; ++i)
      for (std::int64_t g = 0; g < a.kv_heads; ++g) {
        const std::int64_t row = row0 + i;
        const std::size_t at = static_cast<std::size_t>((g * cap + seg.first + i) * hd) * element;
        store_kv(seg.cache->keys(layer) + at, k + (row * a.kv_heads + g) * hd, hd, bf16);
        store_kv(seg.cache->values(layer) + at, v + (row * a.kv_heads + g) * hd, hd, bf16);
      }
    attend(*seg.cache, layer, q + row0 * q_width, attn + row0 * q_width,
           {seg.rows, a.heads, a.kv_heads, hd, cap, seg.first, a.softmax_scale});
    row0 += seg.rows;
  }
}

// Multi-head latent attention in its absorbed form: the cache holds, per position, the normed
// latent and the rotated rope key; each head's query is taken into latent space by its key
// up-projection, so scores and the weighted sum run over the latent, and the value
// up-projection is applied once to the result. Equal to expanding keys and values per head.
void Engine::mla_attention(std::int64_t layer, const DenseWeights& weights, const float* h,
                           std::span<const Segment> segments, const std::int64_t* positions,
                           std::int64_t n, float* attn) {
  const auto& a = spec_.attention;
  const std::int64_t nope = a.qk_nope_head_dim;
  const std::int64_t rope = a.qk_rope_head_dim;
  const std::int64_t lora = a.kv_lora_rank;
  const std::int64_t q_head = nope + rope;
  const std::int64_t q_width = a.heads * q_head;
  const std::int64_t entry = lora + rope;  // one cache position
  const std::int64_t q_in = a.q_lora_rank > 0 ? a.q_lora_rank : q_width;
  const std::int64_t projected_width = q_in + entry;
  float* projected = take(work_.mla_projected, n * projected_width);
  matmul_.multiply(h, n, weights.input_projection, projected);

  float* latent = take(work_.mla_latent, n * entry);
  float* q_low = take(work_.mla_q_low, n * q_in);
  for (std::int64_t i = 0; i < n; ++i) {
    const float* row = projected + i * projected_width;
    std::memcpy(q_low + i * q_in, row, static_cast<std::size_t>(q_in) * sizeof(float));
    std::memcpy(latent + i * entry, row + q_in, static_cast<std::size_t>(entry) * sizeof(float));
  }
  // Without q_lora_rank the projection gave the query itself.
  float* q = q_low;
  if (a.q_lora_rank > 0) {
    kernels::rms_norm(q_low, weights.q_norm.data(), q_low, n, q_in, kLatentNormEps);
    q = take(work_.mla_q, n * q_width);
    matmul_.multiply(q_low, n, weights.q_b, q);
  }
  // The latent is normed; the rope key after it is not.
  for (std::int64_t i = 0; i < n; ++i)
    kernels::rms_norm(latent + i * entry, weights.k_norm.data(), latent + i * entry, 1, lora,
                      kLatentNormEps);
  const auto pairs = spec_.rope.style == model::RopeStyle::half ? kernels::RopePairs::half
                                                                : kernels::RopePairs::adjacent;
  kernels::rope(q, {n, a.heads, q_head, nope, rope, pairs}, positions, rope_frequencies_.data(),
                spec_.rope.attention_factor);
  kernels::rope(latent, {n, 1, entry, lora, rope, pairs}, positions, rope_frequencies_.data(),
                spec_.rope.attention_factor);

  // Queries in latent space: [n, heads, lora | rope]. The absorbed key up-projections take
  // every head's nope part, gathered head-major, in one batched multiply.
  float* head_in = take(work_.heads_in, a.heads * n * std::max(nope, lora));
  float* head_out = take(work_.heads_out, a.heads * n * std::max(lora, a.v_head_dim));
  for (std::int64_t hh = 0; hh < a.heads; ++hh)
    for (std::int64_t i = 0; i < n; ++i)
      std::memcpy(head_in + (hh * n + i) * nope, q + i * q_width + hh * q_head,
                  static_cast<std::size_t>(nope) * sizeof(float));
  matmul_.multiply(head_in, n, weights.absorb_keys, head_out);
  float* q_latent = take(work_.q_latent, n * a.heads * entry);
  for (std::int64_t hh = 0; hh < a.heads; ++hh)
    for (std::int64_t i = 0; i < n; ++i) {
      float* dst = q_latent + (i * a.heads + hh) * entry;
      std::memcpy(dst, head_out + (hh * n + i) * lora,
                  static_cast<std::size_t>(lora) * sizeof(float));
      std::memcpy(dst + lora, q + i * q_width + hh * q_head + nope,
                  static_cast<std::size_t>(rope) * sizeof(float));
    }

  float* context = take(work_.context, n * a.heads * entry);
  std::int64_t row0 = 0;
  for (const auto& seg : segments) {
    const bool bf16 = seg.cache->dtype() == KvDtype::bf16;
    const std::size_t element = kv_element_size(seg.cache->dtype());
    for (std::int64_t i = 0; i < seg.rows; ++i)
      store_kv(seg.cache->keys(layer) + static_cast<std::size_t>((seg.first + i) * entry) * element,
               latent + (row0 + i) * entry, entry, bf16);
    attend(*seg.cache, layer, q_latent + row0 * a.heads * entry, context + row0 * a.heads * entry,
           {seg.rows, a.heads, 1, entry, seg.cache->capacity(), seg.first, a.softmax_scale});
    row0 += seg.rows;
  }
  // Each head's latent context (its rope part is not a value) up to the value dimension, all
  // heads in one batched multiply.
  for (std::int64_t hh = 0; hh < a.heads; ++hh)
    for (std::int64_t i = 0; i < n; ++i)
      std::memcpy(head_in + (hh * n + i) * lora, context + (i * a.heads + hh) * entry,
                  static_cast<std::size_t>(lora) * sizeof(float));
  matmul_.multiply(head_in, n, weights.absorb_values, head_out);
  for (std::int64_t hh = 0; hh < a.heads; ++hh)
    for (std::int64_t i = 0; i < n; ++i)
      std::memcpy(attn + (i * a.heads + hh) * a.v_head_dim, head_out + (hh * n + i) * a.v_head_dim,
                  static_cast<std::size_t>(a.v_head_dim) * sizeof(float));
}

void Engine::run(std::span<const std::int32_t> tokens, std::span<const Segment> segments,
                 std::vector<float>& logits, bool all_rows) {
  check_tokens(tokens);
  // The daemon computes on its scheduler's thread, not the one that built the engine.
  kernels::set_compute_threads(compute_threads_);
  last_step_threads_ = kernels::compute_threads();
  const auto n = static_cast<std::int64_t>(tokens.size());
  step_rows_ = n;
  for (const auto& seg : segments)
    if (seg.first + seg.rows > spec_.max_position_embeddings)
      throw std::length_error("sequence of " + std::to_string(seg.first + seg.rows) +
                              " tokens exceeds the model's context of " +
                              std::to_string(spec_.max_position_embeddings));
  const std::int64_t hidden = spec_.hidden_size;
  for (const auto& seg : segments) {
    if (seg.cache->dtype() != options_.kv_dtype)
      throw std::invalid_argument(std::string("a ") + to_string(seg.cache->dtype()) +
                                  " KV cache given to an engine with kv_dtype " +
                                  to_string(options_.kv_dtype));
    seg.cache->reserve_more(seg.rows);
  }
  apply_kv_to_budget();

  float* x = take(work_.x, n * hidden);
  float* h = take(work_.h, n * hidden);
  float* block_out = take(work_.block_out, n * hidden);
  std::vector<std::int64_t> positions;
  for (const auto& seg : segments)
    for (std::int64_t i = 0; i < seg.rows; ++i) positions.push_back(seg.first + i);
  embed(tokens, x);

  const float eps = static_cast<float>(spec_.rms_norm_eps);
  try {
    for (std::int64_t l = 0; l < spec_.num_layers; ++l) {
      memtier::Payload hold;
      const DenseWeights& layer = dense(l, hold);
      if (l == 0) {
        // Layer 0's experts (and layer 1's, two ahead) are predicted from the embedding, normed
        // as layer 0's MoE input will be, so that their reads overlap layer 0's attention; no
        // layer before it could predict them.
        kernels::rms_norm(x, layer.ffn_norm.data(), h, n, hidden, eps);
        predict_ahead(-1, h, n);
      }
      kernels::rms_norm(x, layer.attention_norm.data(), h, n, hidden, eps);
      attention(l, layer, h, segments, positions.data(), n, block_out);
      kernels::add_in_place(x, block_out, n * hidden);

      kernels::rms_norm(x, layer.ffn_norm.data(), h, n, hidden, eps);
      if (spec_.has_experts(l)) {
        moe(l, layer, h, n, block_out);
      } else {
        // MoE layers after a dense one are predicted from here, as moe() does for those after.
        predict_ahead(l, h, n);
        gated_mlp(layer.mlp_gate_up, layer.mlp_down, h, n, block_out);
      }
      kernels::add_in_place(x, block_out, n * hidden);
      if (ring_) ring_->release(static_cast<std::size_t>(l));
    }
  } catch (...) {
    // A read failed mid-pass: the layers not reached leave no predictions for the next pass.
    // The pass's own error is the one reported, whatever abandoning might throw.
    try {
      store_->abandon();
    } catch (...) {
    }
    throw;
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
    kernels::rms_norm(x + out_rows[i] * hidden, final_norm_.data(), h + i * hidden, 1, hidden, eps);
  logits.resize(static_cast<std::size_t>(m * spec_.vocab_size));
  matmul_.multiply(h, m, lm_head_, logits.data());
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
  const std::uint64_t experts_per_token =
      spec_.num_experts > 0 ? all_expert_bytes_ / static_cast<std::uint64_t>(spec_.num_experts) *
                                  static_cast<std::uint64_t>(spec_.experts_per_token)
                            : 0;
  return lm_head_.bytes() + dense_bytes_ + experts_per_token + kv_bytes(context_length);
}

MemoryStats Engine::memory_stats() const {
  MemoryStats s;
  s.reader = loader_->counters().engine;
  s.dense_streamed = ring_ != nullptr;
  s.budget_bytes = budget_bytes_.load();
  s.fixed_bytes = fixed_bytes_;
  s.expert_bytes_total = all_expert_bytes_;
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
  s.experts_run_ahead = experts_run_ahead_.load();
  return s;
}

void Engine::reset_memory_stats() {
  store_->reset_counters();
  experts_run_ahead_ = 0;
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

std::uint64_t HostBudget::total(std::uint64_t fixed, std::uint64_t all_experts,
                                std::uint64_t working_set) const {
  if (expert_share <= 0) return bytes;
  // Never below one layer's experts, which must be in memory together to compute.
  return fixed +
         std::max(static_cast<std::uint64_t>(expert_share * static_cast<double>(all_experts)),
                  working_set);
}

std::uint64_t Engine::budget_bytes(const HostBudget& budget, std::uint64_t fixed) const {
  return budget.total(fixed, all_expert_bytes_,
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
  // Decode and prefill may differ: moed computes a few bf16 rows itself, oneDNN the rest.
  const std::string decode = matmul_.implementation(1, lm_head_);
  const std::string prefill = matmul_.implementation(256, lm_head_);
  std::string text = decode == prefill ? decode : decode + " (decode), " + prefill + " (prefill)";
  if (const model::TensorInfo* gate = first_expert_gate())
    text += ", experts packed by " +
            matmul_.packing(2 * spec_.intermediate_size, spec_.hidden_size, gate->dtype);
  if (computes_streamed_experts_as_stored())
    text += "; experts read from disk computed as stored rows";
  // Each format a streamed expert is rewritten from, and into (row_tile_format).
  std::set<std::string> rewrites;
  for (const auto& lt : tensors_)
    if (lt.streams_rewritten)
      for (const model::TensorInfo* matrix : lt.experts.front()) {
        const kernels::GgmlType from = kernels::ggml_type_of(matrix->dtype);
        const kernels::GgmlType into = kernels::row_tile_format(from);
        if (into != from)
          rewrites.insert(std::string(kernels::ggml_type_name(from)) + " as " +
                          std::string(kernels::ggml_type_name(into)));
      }
  if (!rewrites.empty()) {
    std::string list;
    for (const auto& rewrite : rewrites) list += (list.empty() ? "" : ", ") + rewrite;
    text += "; experts read from disk rewritten (" + list + ") and computed as stored rows";
  }
  return text;
}

bool Engine::computes_streamed_experts_as_stored() const {
  return std::any_of(tensors_.begin(), tensors_.end(),
                     [](const LayerTensors& lt) { return lt.streams_stored; });
}

const model::TensorInfo* Engine::first_expert_gate() const {
  for (const auto& lt : tensors_)
    if (!lt.experts.empty()) return lt.experts.front()[0];
  return nullptr;
}

}  // namespace moed::engine
