#include "moed/kernels/cpu_matmul.hpp"

#include <cpuid.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "bf16_rows.hpp"
#include "blocked_pack.hpp"
#include "f8_rows.hpp"
#include "moed/kernels/cpu_ops.hpp"
#include "moed/kernels/cpu_threads.hpp"
#include "moed/kernels/panel_matmul.hpp"
#include "moed/kernels/quant_tiles.hpp"
#include "row_tile_units.hpp"
#include "stolen_ranges.hpp"

namespace moed::kernels {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

dt to_dnnl(DType dtype) {
  return dtype == DType::bf16 ? dt::bf16 : dt::f32;
}

// Units (tile groups or N blocks) an owner takes from its own run at a time, and a thread from
// another's once its own are done (detail::StolenRanges). With single tiles as units, a thief's
// tile read a quarter of each of its group's chunks and left the owner the rest: the Q8_0
// expert region streamed 46-49 GB/s against 51-52 with whole groups (three alternated runs).
constexpr std::uint32_t kOwnUnits = 2;
constexpr std::uint32_t kStolenUnits = 1;

// Bytes at the front of its run a thread asks into its L2 before the quantization and barrier
// that precede the run, so that the wait fills the cache rather than leaving memory idle and the
// run starts on lines already near. On Mixtral-shaped experts (Q4_K_M, 2 threads, one expert
// each, alternated runs) the gate_up and down phases took 5-8% less time; 192 KiB did no better.
// Only a thread's first job is warmed: the lines of a later one would be evicted before use.
constexpr std::size_t kWarmBytes = std::size_t{64} << 10;

// Shapes seen by prefill vary with prompt length; past this many cached primitives we start over
// rather than grow without bound (each entry is a few KiB plus JIT code).
constexpr std::size_t kMaxCachedPrimitives = 512;

// Rows of x up to which moed's bf16 rows compute a bf16 weight rather than oneDNN: decode steps
// and small decode batches, where a primitive call and its region cost most. Beyond, oneDNN's
// brgemm reuses each weight line over more rows; the bits are the same either way.
constexpr std::int64_t kBf16RowsAtMost = 4;

// Rows of a tile group: the unit in which quantized rows are shared out.
constexpr std::int64_t kGroupRows = kTileRows * kGroupTiles;

// Multiplies columns [first, last) of m rows of y (`stride` apart) by `scale` (a rewritten
// format's rewrite_scale) where it is not 1.
void scale_rows(float* y, std::int64_t m, std::int64_t stride, std::int64_t first,
                std::int64_t last, float scale) {
  if (scale == 1.0f) return;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t r = first; r < last; ++r) y[i * stride + r] *= scale;
}

// Bytes of `rows` quantized rows as CpuMatmul keeps them: in row tiles.
std::size_t quantized_bytes(DType dtype, std::int64_t rows, std::int64_t cols) {
  return row_tile_bytes(ggml_type_of(dtype), rows, cols);
}

// The format of the row tiles that hold a quantized dtype's rows (q6_K for q3_K), which the
// kernels are given.
DType tile_dtype(DType stored) {
  return *dtype_of(row_tile_format(ggml_type_of(stored)));
}

// On a CPU with AMX, oneDNN computes a bf16 matmul of more than 4 rows with AMX tiles
// (brg:avx512_core_amx_bf16) and one of 4 rows or fewer with avx512_core_bf16, and the two round
// differently: a row's logits would depend on how many rows shared its step (a decode batch, a
// prefill chunk), and moed's bf16 rows, which equal the avx512_core_bf16 path, would differ from
// a batch's. Capped at avx512_core_bf16, every row count takes one path. The cost is AMX's
// prefill speed (bf16 bench prefill 850 against 400 tokens/s on a 2-core VM whose CPU has AMX).
// A user's own ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) is kept. oneDNN fixes its ISA at the
// first primitive or ISA query of the process; CpuMatmul makes all of moed's, so a refusal
// means another component used oneDNN first, and is reported once.
dnnl::engine cpu_engine_without_amx() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("ONEDNN_MAX_CPU_ISA") != nullptr || std::getenv("DNNL_MAX_CPU_ISA") != nullptr)
      return;
    if (dnnl::set_max_cpu_isa(dnnl::cpu_isa::avx512_core_bf16) != dnnl::status::success)
      std::fprintf(stderr,
                   "moed: oneDNN refused to stay off AMX (it was used before moed's first "
                   "matmul): on an AMX CPU, bf16 rows batched together may differ in their last "
                   "bits from rows computed alone\n");
  });
  return dnnl::engine(dnnl::engine::kind::cpu, 0);
}

// Whether the CPU has F16C (vcvtph2ps), which FP8 panels widen with: every AVX2 CPU has, but a
// VM may hide it. Asked through cpuid: clang 16's __builtin_cpu_supports does not know it.
bool cpu_has_f16c() {
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
  }();
  return has;
}

// Bytes of an f8_e4m3 matrix in panels: its codes, then its PanelScales table.
std::size_t fp8_panel_bytes(std::int64_t rows, std::int64_t cols, std::int64_t block_cols) {
  return panel_bytes(DType::f8_e4m3, rows, cols) +
         panel_scale_count(rows, cols, block_cols) * sizeof(float);
}

// A packed weight's memory: the caller's allocator's, or the heap's.
std::shared_ptr<std::byte> storage(const PackedAllocator& allocate, std::size_t bytes) {
  if (allocate) return allocate(bytes);
  return {new std::byte[bytes], std::default_delete<std::byte[]>()};
}

// Whether oneDNN multiplies this plain dtype with its brgemm kernels (brg:avx512_core for f32,
// brg:avx512_core_bf16 for bf16), whose rows do not depend on the rows computed with them: asked
// once per dtype, after the ISA cap above, at a decode and a prefill shape. Below those ISAs,
// oneDNN 2.6 has no bf16 matmul at all on AVX2 and computes bf16 on AVX-512 without AVX512-BF16,
// and f32 on AVX2, with gemm:jit, whose rows change with their batch.
bool onednn_brgemm(DType dtype) {
  const auto asks = [](DType asked) {
    const dnnl::engine engine = cpu_engine_without_amx();
    for (const std::int64_t m : {1, 16}) {
      try {
        const dnnl::memory::desc src({m, 256}, to_dnnl(asked), tag::ab);
        const dnnl::memory::desc weights({256, 256}, to_dnnl(asked), tag::any);
        const dnnl::memory::desc dst({m, 256}, dt::f32, tag::ab);
        const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, dst), engine);
        if (!std::string_view(pd.impl_info_str()).starts_with("brg:")) return false;
      } catch (const dnnl::error&) {
        return false;
      }
    }
    return true;
  };
  static const bool f32 = asks(DType::f32), bf16 = asks(DType::bf16);
  return dtype == DType::bf16 ? bf16 : f32;
}

}  // namespace

bool CpuMatmul::plain_in_panels(DType compute) {
  if (is_quantized(compute) || onednn_brgemm(compute)) return false;
  // bf16 has no other path; f32 keeps oneDNN's gemm where the panels would run their generic
  // C++ (no AVX2 and FMA), many times slower.
  return compute == DType::bf16 || best_panel_path() != PanelPath::generic;
}

CpuMatmul::CpuMatmul() : engine_(cpu_engine_without_amx()), stream_(engine_) {}

DType CpuMatmul::compute_dtype(DType weight_dtype) {
  if (is_quantized(weight_dtype)) return weight_dtype;
  return weight_dtype == DType::bf16 || weight_dtype == DType::f8_e4m3 ? DType::bf16 : DType::f32;
}

namespace {

// Consecutive parts in one format: pack() makes each run one segment of the packed weight.
struct FormatRun {
  DType dtype;
  std::int64_t rows;
  std::span<const WeightPart> parts;
};

std::vector<FormatRun> format_runs(std::span<const WeightPart> parts) {
  std::vector<FormatRun> runs;
  for (std::size_t first = 0; first < parts.size();) {
    std::size_t last = first;
    std::int64_t rows = 0;
    for (; last < parts.size() && parts[last].dtype == parts[first].dtype; ++last)
      rows += parts[last].rows;
    runs.push_back({parts[first].dtype, rows, parts.subspan(first, last - first)});
    first = last;
  }
  return runs;
}

}  // namespace

dnnl::memory::desc CpuMatmul::packed_desc(std::int64_t rows, std::int64_t cols, DType dtype) {
  const ShapeKey key{1, rows, cols, dtype};
  if (auto it = packed_descs_.find(key); it != packed_descs_.end()) return it->second;
  dnnl::memory::desc src({1, cols}, to_dnnl(dtype), tag::ab);
  dnnl::memory::desc weights({cols, rows}, to_dnnl(dtype), tag::any);
  dnnl::memory::desc dst({1, rows}, dt::f32, tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, dst), engine_);
  return packed_descs_.emplace(key, pd.weights_desc()).first->second;
}

DType CpuMatmul::compute_dtype(std::span<const WeightPart> parts) {
  const DType first = parts.front().dtype;
  bool same = true, all_quantized = true;
  for (const auto& part : parts) {
    same = same && part.dtype == first;
    all_quantized = all_quantized && is_quantized(part.dtype);
  }
  if (same) return compute_dtype(first);
  return all_quantized ? first : DType::f32;
}

std::size_t CpuMatmul::packed_bytes(std::int64_t rows, std::int64_t cols, DType source_dtype) {
  if (is_quantized(source_dtype)) return quantized_bytes(source_dtype, rows, cols);
  const DType compute = compute_dtype(source_dtype);
  if (CpuMatmul::plain_in_panels(compute)) return panel_bytes(compute, rows, cols);
  return packed_desc(rows, cols, compute).get_size();
}

std::size_t CpuMatmul::packed_bytes(std::int64_t batch, std::int64_t rows, std::int64_t cols,
                                    DType source_dtype) {
  const DType compute = compute_dtype(source_dtype);
  return static_cast<std::size_t>(batch) * (is_quantized(compute)
                                                ? quantized_bytes(compute, rows, cols)
                                                : panel_bytes(compute, rows, cols));
}

std::size_t CpuMatmul::packed_bytes(std::span<const WeightPart> parts, std::int64_t cols) {
  if (parts.empty()) return 0;
  if (const auto layout = fp8_rows_layout(parts, cols)) return layout->bytes();
  if (keeps_fp8_panels(parts)) {
    std::int64_t rows = 0;
    for (const auto& part : parts) rows += part.rows;
    return fp8_panel_bytes(rows, cols, parts.front().scales.block_cols);
  }
  const DType compute = compute_dtype(parts);
  std::int64_t rows = 0;
  for (const auto& part : parts) rows += part.rows;
  if (!is_quantized(compute)) return packed_bytes(rows, cols, compute);
  std::size_t quantized = 0;
  for (const auto& run : format_runs(parts))
    quantized += quantized_bytes(run.dtype, run.rows, cols);
  return quantized;
}

std::string CpuMatmul::packing(std::int64_t rows, std::int64_t cols, DType source_dtype) {
  if (is_quantized(source_dtype)) {
    const DType tiles = tile_dtype(source_dtype);
    return "ggml " + std::string(dtype_name(source_dtype)) + " blocks" +
           (tiles == source_dtype ? "" : " as " + std::string(dtype_name(tiles))) +
           " in 16-row tiles";
  }
  // FP8 as DeepSeek's and Qwen's checkpoints block it: how an FP8 weight is held depends on the
  // blocks only through their width's parity.
  const WeightPart fp8{nullptr, DType::f8_e4m3, rows, {nullptr, DType::f32, 128, 128}};
  if (source_dtype == DType::f8_e4m3 && keeps_fp8_panels(std::span(&fp8, 1)))
    return "moed fp8 panels (one byte a weight; oneDNN has no bf16 brgemm here)";
  if (source_dtype == DType::f8_e4m3 && fp8_rows_layout(std::span(&fp8, 1), cols))
    return "moed fp8 rows (one byte a weight, in oneDNN's bf16 N blocks)";
  if (CpuMatmul::plain_in_panels(compute_dtype(source_dtype)))
    return "moed panels (oneDNN has no brgemm for it here)";
  return detail::blocked_layout(packed_desc(rows, cols, compute_dtype(source_dtype)))
             ? "moed avx512 transpose"
             : "oneDNN reorder";
}

detail::F8RowsLayout PackedWeight::f8_rows_layout() const {
  return {cols_, rows_, bf16_rows_n_block_, f8_block_cols_};
}

std::optional<detail::F8RowsLayout> CpuMatmul::fp8_rows_layout(std::span<const WeightPart> parts,
                                                               std::int64_t cols) {
  if (parts.empty() || !detail::cpu_has_bf16_dot() || plain_in_panels(DType::bf16))
    return std::nullopt;
  std::int64_t rows = 0;
  for (const auto& part : parts) {
    if (part.dtype != DType::f8_e4m3 || part.scales.block_cols <= 0 ||
        part.scales.block_cols % 2 != 0 || part.scales.block_rows <= 0 ||
        part.scales.block_cols != parts.front().scales.block_cols ||
        part.scales.block_rows != parts.front().scales.block_rows)
      return std::nullopt;
    rows += part.rows;
  }
  const auto layout = detail::blocked_layout(packed_desc(rows, cols, DType::bf16));
  if (!layout || layout->n_block > detail::kF8RowsMaxNBlock) return std::nullopt;
  return detail::F8RowsLayout{cols, rows, layout->n_block, parts.front().scales.block_cols};
}

bool CpuMatmul::keeps_fp8_rows(std::span<const WeightPart> parts, std::int64_t cols) {
  return fp8_rows_layout(parts, cols).has_value();
}

bool CpuMatmul::computes_stored_rows(std::span<const WeightPart> parts) {
  return !parts.empty() && std::all_of(parts.begin(), parts.end(), [](const WeightPart& part) {
    return is_quantized(part.dtype) && kernels::computes_stored_rows(ggml_type_of(part.dtype));
  });
}

bool CpuMatmul::computes_rewritten_rows(std::span<const WeightPart> parts) {
  return !parts.empty() && std::all_of(parts.begin(), parts.end(), [](const WeightPart& part) {
    return is_quantized(part.dtype) &&
           kernels::computes_stored_rows(row_tile_format(ggml_type_of(part.dtype)));
  });
}

std::size_t CpuMatmul::rewritten_rows_bytes(std::span<const WeightPart> parts, std::int64_t cols) {
  std::size_t bytes = 0;
  for (const auto& part : parts)
    bytes += row_bytes(tile_dtype(part.dtype), cols) * static_cast<std::size_t>(part.rows);
  return bytes;
}

PackedWeight CpuMatmul::rewritten_rows(std::span<const WeightPart> parts, std::int64_t cols,
                                       const PackedAllocator& allocate) {
  if (!computes_rewritten_rows(parts))
    throw std::invalid_argument(
        "CpuMatmul::rewritten_rows: a part's format is not computed from stored rows on this CPU");
  std::shared_ptr<std::byte> memory = storage(allocate, rewritten_rows_bytes(parts, cols));
  std::vector<WeightPart> rewritten;
  std::byte* at = memory.get();
  for (const auto& part : parts) {
    const DType dtype = tile_dtype(part.dtype);
    const auto* from = static_cast<const std::byte*>(part.data);
    const std::size_t from_row = row_bytes(part.dtype, cols), to_row = row_bytes(dtype, cols);
    if (dtype != part.dtype) {
      const GgmlType type = ggml_type_of(part.dtype);
      const auto blocks = static_cast<std::int64_t>(cols / ggml_type_traits(type).block_size);
      const QuantIsa isa = best_quant_isa();
      // Rows over OpenMP's threads, as pack_row_tiles spreads tiles: a demand has compute
      // waiting on it.
#pragma omp parallel for schedule(static)
      for (std::int64_t r = 0; r < part.rows; ++r)
        rewrite_blocks(type, from + static_cast<std::size_t>(r) * from_row,
                       at + static_cast<std::size_t>(r) * to_row, blocks, isa);
    } else {
      std::memcpy(at, from, from_row * static_cast<std::size_t>(part.rows));
    }
    rewritten.push_back({at, dtype, part.rows});
    at += to_row * static_cast<std::size_t>(part.rows);
  }
  PackedWeight weight = stored_rows(rewritten, cols, std::move(memory));
  for (std::size_t p = 0; p < parts.size(); ++p)  // stored_rows: a segment per part
    weight.segments_[p].scale = rewrite_scale(ggml_type_of(parts[p].dtype));
  return weight;
}

PackedWeight CpuMatmul::stored_rows(std::span<const WeightPart> parts, std::int64_t cols,
                                    std::shared_ptr<std::byte> memory) {
  if (!computes_stored_rows(parts))
    throw std::invalid_argument(
        "CpuMatmul::stored_rows: a part's format is not computed from stored rows on this CPU");
  PackedWeight weight;
  weight.cols_ = cols;
  weight.dtype_ = compute_dtype(parts);
  // One segment per part: the parts need not lie next to each other.
  for (const auto& part : parts) {
    const auto* data = static_cast<const std::byte*>(part.data);
    if (data < memory.get())
      throw std::invalid_argument("CpuMatmul::stored_rows: a part lies before its memory");
    weight.segments_.push_back(
        {part.dtype, part.rows, static_cast<std::size_t>(data - memory.get()), true});
    weight.rows_ += part.rows;
    weight.storage_bytes_ += row_bytes(part.dtype, cols) * static_cast<std::size_t>(part.rows);
  }
  weight.storage_ = std::move(memory);
  return weight;
}

PackedWeight CpuMatmul::pack(std::span<const WeightPart> parts, std::int64_t cols,
                             const PackedAllocator& allocate) {
  if (parts.empty() || cols <= 0) throw std::invalid_argument("CpuMatmul::pack: empty weight");
  std::int64_t rows = 0;
  bool same = true;
  for (const auto& part : parts) {
    rows += part.rows;
    same = same && part.dtype == parts.front().dtype;
  }
  const DType compute = compute_dtype(parts);
  if (const auto layout = fp8_rows_layout(parts, cols))
    return pack_f8_rows(parts, *layout, allocate);
  if (keeps_fp8_panels(parts)) return pack_f8_panels(parts, rows, cols, allocate);

  PackedWeight packed;
  packed.rows_ = rows;
  packed.cols_ = cols;
  packed.dtype_ = compute;
  if (is_quantized(compute)) {
    // One segment per run of parts in one format; the parts' row starts, for tiling.
    std::vector<std::vector<const std::byte*>> segment_rows;
    std::vector<DType> stored_dtypes;
    for (const auto& run : format_runs(parts)) {
      packed.segments_.push_back({tile_dtype(run.dtype), run.rows, packed.storage_bytes_, false,
                                  rewrite_scale(ggml_type_of(run.dtype))});
      stored_dtypes.push_back(run.dtype);
      packed.storage_bytes_ += quantized_bytes(run.dtype, run.rows, cols);
      auto& starts = segment_rows.emplace_back();
      const std::size_t stride = row_bytes(run.dtype, cols);
      for (const auto& part : run.parts) {
        const auto* row = static_cast<const std::byte*>(part.data);
        for (std::int64_t r = 0; r < part.rows; ++r, row += stride) starts.push_back(row);
      }
    }
    packed.storage_ = storage(allocate, packed.storage_bytes_);
    for (std::size_t s = 0; s < packed.segments_.size(); ++s) {
      const auto& segment = packed.segments_[s];
      pack_row_tiles(ggml_type_of(stored_dtypes[s]), segment_rows[s], cols,
                     packed.storage_.get() + segment.offset);
    }
    return packed;
  }
  // The weight's rows in the compute dtype: the parts' own where they are (an expert's gate and
  // up apart), else one converted copy, made when a packer below asks for it.
  WeightPart converted{};
  std::span<const WeightPart> converted_rows = parts;
  const auto rows_in_compute = [&] {
    if ((!same || parts.front().dtype != compute) && converted.data == nullptr) {
      converted = {stage(parts, cols, compute), compute, rows};
      converted_rows = std::span(&converted, 1);
    }
    return converted_rows;
  };
  if (CpuMatmul::plain_in_panels(compute)) {
    packed.storage_bytes_ = panel_bytes(compute, rows, cols);
    packed.storage_ = storage(allocate, packed.storage_bytes_);
    gather_row_starts(rows_in_compute(), cols, compute);
    pack_panels_rows(row_starts_, compute, cols, packed.storage_.get());
    return packed;
  }
  const auto desc = packed_desc(rows, cols, compute);
  if (allocate) {
    packed.storage_ = allocate(desc.get_size());
    packed.memory_ = dnnl::memory(desc, engine_, packed.storage_.get());
  } else {
    packed.memory_ = dnnl::memory(desc, engine_);
  }

  const auto layout = detail::blocked_layout(desc);
  if (layout && compute == DType::bf16 && detail::cpu_has_bf16_dot())
    packed.bf16_rows_n_block_ = layout->n_block;
  if (layout && reinterpret_cast<std::uintptr_t>(packed.memory_.get_data_handle()) % 64 == 0) {
    if (same && parts.front().dtype == DType::f8_e4m3) {
      pack_f8_blocked(parts, cols, *layout, packed);
    } else {
      pack_rows(rows_in_compute(), cols, *layout, packed);
    }
    return packed;
  }

  // oneDNN's reorder takes one row-major matrix.
  const auto plain_rows = rows_in_compute();
  const void* plain =
      plain_rows.size() > 1 ? stage(plain_rows, cols, compute) : plain_rows.front().data;
  // [rows][cols] row-major is the "ba" layout of a {K=cols, N=rows} weight.
  dnnl::memory::desc plain_desc({cols, rows}, to_dnnl(compute), tag::ba);
  dnnl::memory plain_memory(plain_desc, engine_, const_cast<void*>(plain));
  dnnl::reorder(plain_memory, packed.memory_).execute(stream_, plain_memory, packed.memory_);
  stream_.wait();
  return packed;
}

PackedWeight CpuMatmul::pack_batched(std::span<const WeightPart> matrices, std::int64_t cols,
                                     const PackedAllocator& allocate, MatrixOrder order) {
  if (matrices.empty() || cols <= 0)
    throw std::invalid_argument("CpuMatmul::pack_batched: empty weight");
  const WeightPart& first = matrices.front();
  for (const auto& matrix : matrices)
    if (matrix.dtype != first.dtype || matrix.rows != first.rows)
      throw std::invalid_argument(
          "CpuMatmul::pack_batched: matrices differ in dtype or rows (" +
          std::string(dtype_name(matrix.dtype)) + " [" + std::to_string(matrix.rows) + "] vs " +
          std::string(dtype_name(first.dtype)) + " [" + std::to_string(first.rows) + "])");
  const auto batch = static_cast<std::int64_t>(matrices.size());
  const DType compute = compute_dtype(first.dtype);
  const bool quantized = is_quantized(compute);
  if ((quantized || first.dtype == DType::f8_e4m3) && order == MatrixOrder::cols_first)
    throw std::invalid_argument(std::string("CpuMatmul::pack_batched: a ") +
                                std::string(dtype_name(first.dtype)) +
                                " matrix cannot be given transposed (its blocks run along rows)");
  auto pack_plain = [&, rows = first.rows](const void* source, std::byte* out) {
    if (order == MatrixOrder::cols_first) {
      pack_panels_transposed(source, compute, rows, cols, out);
    } else {
      pack_panels(source, compute, rows, cols, out);
    }
  };
  PackedWeight packed;
  packed.batch_ = batch;
  packed.rows_ = first.rows;
  packed.cols_ = cols;
  packed.dtype_ = compute;
  const std::size_t matrix_bytes = quantized ? quantized_bytes(compute, first.rows, cols)
                                             : panel_bytes(compute, first.rows, cols);
  packed.storage_bytes_ = matrix_bytes * matrices.size();
  packed.storage_ = storage(allocate, packed.storage_bytes_);
  if (quantized) {
    std::vector<const std::byte*> starts;
    const std::size_t stride = row_bytes(compute, cols);
    for (std::size_t b = 0; b < matrices.size(); ++b) {
      packed.segments_.push_back({tile_dtype(compute), first.rows, b * matrix_bytes, false,
                                  rewrite_scale(ggml_type_of(compute))});
      starts.clear();
      const auto* row = static_cast<const std::byte*>(matrices[b].data);
      for (std::int64_t r = 0; r < first.rows; ++r, row += stride) starts.push_back(row);
      pack_row_tiles(ggml_type_of(compute), starts, cols, packed.storage_.get() + b * matrix_bytes);
    }
  } else if (first.dtype == compute) {
    // Matrices over OpenMP's threads, as pack_row_tiles spreads tiles: a ring section packs
    // every dense layer it loads. Every row start is gathered first, so that nothing in the
    // region allocates (an exception may not leave it).
    if (order == MatrixOrder::rows_first) gather_row_starts(matrices, cols, compute);
    const std::span<const std::byte* const> starts = row_starts_;
#pragma omp parallel for schedule(static)
    for (std::int64_t b = 0; b < batch; ++b) {
      std::byte* out = packed.storage_.get() + static_cast<std::size_t>(b) * matrix_bytes;
      if (order == MatrixOrder::cols_first) {
        pack_panels_transposed(matrices[static_cast<std::size_t>(b)].data, compute, first.rows,
                               cols, out);
      } else {
        pack_panels_rows(starts.subspan(static_cast<std::size_t>(b * first.rows),
                                        static_cast<std::size_t>(first.rows)),
                         compute, cols, out);
      }
    }
  } else {
    // Widened element by element (FP8 by its row blocks, in row order only), so either order
    // stays as it is.
    for (std::size_t b = 0; b < matrices.size(); ++b)
      pack_plain(stage(matrices.subspan(b, 1), cols, compute),
                 packed.storage_.get() + b * matrix_bytes);
  }
  return packed;
}

const void* CpuMatmul::stage(std::span<const WeightPart> parts, std::int64_t cols, DType compute) {
  const std::size_t elem = dtype_size(compute);
  std::size_t needed = 0;
  for (const auto& part : parts) needed += static_cast<std::size_t>(part.rows * cols) * elem;
  if (staging_.size() < needed) staging_.resize(needed);
  unsigned char* out = staging_.data();
  for (const auto& part : parts) {
    const auto count = static_cast<std::size_t>(part.rows * cols);
    if (part.dtype == compute) {
      std::memcpy(out, part.data, count * elem);
    } else if (part.dtype == DType::f8_e4m3 && compute == DType::bf16) {
      stage_f8_as_bf16(part, cols, reinterpret_cast<std::uint16_t*>(out));
    } else if (part.dtype == DType::f8_e4m3) {
      dequantize_f8_e4m3(part.data, part.scales, part.rows, cols, reinterpret_cast<float*>(out));
    } else {
      convert_to_f32(part.data, part.dtype, reinterpret_cast<float*>(out), count);
    }
    out += count * elem;
  }
  return staging_.data();
}

void CpuMatmul::stage_f8_as_bf16(const WeightPart& part, std::int64_t cols, std::uint16_t* out) {
  // Rows over OpenMP's threads, as the other packers go: a streamed expert's demand has compute
  // waiting on it. The scales are checked (no rows converted) before the region, which may not
  // throw.
  f8_e4m3_to_bf16(part.data, part.scales, 0, cols, nullptr);
#pragma omp parallel for schedule(static)
  for (std::int64_t r = 0; r < part.rows; ++r) {
    BlockScales scales = part.scales;
    scales.first_row += r;
    f8_e4m3_to_bf16(static_cast<const std::uint8_t*>(part.data) + r * cols, scales, 1, cols,
                    out + r * cols);
  }
}

void CpuMatmul::pack_f8_blocked(std::span<const WeightPart> parts, std::int64_t cols,
                                const detail::BlockedLayout& layout, PackedWeight& packed) {
  // Each row's bytes and scales, and the scratch each thread widens an N block into, made before
  // the region, which may not allocate or throw (the scales are checked here too).
  f8_rows_.clear();
  f8_row_scales_.clear();
  for (const auto& part : parts) {
    f8_e4m3_to_bf16(part.data, part.scales, 0, cols, nullptr);
    for (std::int64_t r = 0; r < part.rows; ++r) {
      f8_rows_.push_back(static_cast<const std::uint8_t*>(part.data) + r * cols);
      f8_row_scales_.push_back(part.scales);
      f8_row_scales_.back().first_row += r;
    }
  }
  const int threads = omp_get_max_threads();
  const auto block_elements = static_cast<std::size_t>(layout.n_block * cols);
  f8_blocks_.resize(static_cast<std::size_t>(threads) * block_elements);
  f8_block_starts_.resize(static_cast<std::size_t>(threads * layout.n_block));
  const detail::BlockedLayout block_layout{layout.k_units, layout.n_block, layout.n_block};
  auto* destination = static_cast<std::uint32_t*>(packed.memory_.get_data_handle());
  const std::int64_t block_units = layout.n_block * layout.k_units;
  // One N block at a time: widened into a buffer that stays in L2, then packed from there. A
  // whole staged copy (2 bytes a weight, written to memory and read back) held an FP8 expert's
  // packing to 2.1 GB/s of file bytes on one core of a 2-vCPU AMD EPYC VM (AVX512-BF16). A
  // CPU without AVX512-BF16 puts bf16 into the panels, and FP8 there is widened whole first.
#pragma omp parallel for schedule(static)
  for (std::int64_t block = 0; block < layout.rows / layout.n_block; ++block) {
    const auto thread = static_cast<std::size_t>(omp_get_thread_num());
    std::uint16_t* widened = f8_blocks_.data() + thread * block_elements;
    const std::span<const std::byte*> starts(
        f8_block_starts_.data() + thread * static_cast<std::size_t>(layout.n_block),
        static_cast<std::size_t>(layout.n_block));
    for (std::int64_t i = 0; i < layout.n_block; ++i) {
      const auto row = static_cast<std::size_t>(block * layout.n_block + i);
      f8_e4m3_to_bf16(f8_rows_[row], f8_row_scales_[row], 1, cols, widened + i * cols);
      starts[static_cast<std::size_t>(i)] = reinterpret_cast<const std::byte*>(widened + i * cols);
    }
    detail::pack_blocked(block_layout, starts, destination + block * block_units);
  }
}

PackedWeight CpuMatmul::pack_f8_rows(std::span<const WeightPart> parts,
                                     const detail::F8RowsLayout& layout,
                                     const PackedAllocator& allocate) {
  PackedWeight packed;
  packed.rows_ = layout.n;
  packed.cols_ = layout.k;
  packed.dtype_ = DType::f8_e4m3;
  packed.bf16_rows_n_block_ = layout.n_block;
  packed.f8_block_cols_ = layout.block_cols;
  packed.storage_bytes_ = layout.bytes();
  packed.storage_ = storage(allocate, packed.storage_bytes_);
  const bool fast =
      fill_f8_scales(parts, layout.k, layout.n_block,
                     reinterpret_cast<float*>(packed.storage_.get() + layout.code_bytes()),
                     detail::f8_rows_fast_scale);
  auto* codes = reinterpret_cast<std::uint8_t*>(packed.storage_.get());
  int nan_codes = 0;
#pragma omp parallel for schedule(static) reduction(| : nan_codes)
  for (std::int64_t block = 0; block < layout.n / layout.n_block; ++block)
    nan_codes |= static_cast<int>(detail::pack_f8_rows_block_avx512(
        layout, f8_rows_.data() + block * layout.n_block, block, codes));
  packed.f8_careful_ = !fast || nan_codes != 0;
  return packed;
}

bool CpuMatmul::fill_f8_scales(std::span<const WeightPart> parts, std::int64_t cols,
                               std::int64_t width, float* table, bool (*fast_scale)(float)) {
  const std::int64_t col_blocks =
      (cols + parts.front().scales.block_cols - 1) / parts.front().scales.block_cols;
  bool fast = true;
  f8_rows_.clear();
  std::int64_t row = 0;
  for (const auto& part : parts) {
    f8_e4m3_to_bf16(part.data, part.scales, 0, cols, nullptr);
    const BlockScales& scales = part.scales;
    const std::int64_t first_grid_row = scales.first_row / scales.block_rows;
    const std::int64_t grid_rows =
        (scales.first_row + part.rows - 1) / scales.block_rows - first_grid_row + 1;
    f8_grid_.resize(static_cast<std::size_t>(grid_rows * col_blocks));
    convert_to_f32(
        static_cast<const std::byte*>(scales.data) +
            static_cast<std::size_t>(first_grid_row * col_blocks) * dtype_size(scales.dtype),
        scales.dtype, f8_grid_.data(), f8_grid_.size());
    for (const float scale : f8_grid_) fast = fast && fast_scale(scale);
    for (std::int64_t r = 0; r < part.rows; ++r, ++row) {
      f8_rows_.push_back(static_cast<const std::uint8_t*>(part.data) + r * cols);
      const float* grid_row =
          f8_grid_.data() +
          ((scales.first_row + r) / scales.block_rows - first_grid_row) * col_blocks;
      float* column = table + (row / width) * col_blocks * width + row % width;
      for (std::int64_t c = 0; c < col_blocks; ++c) column[c * width] = grid_row[c];
    }
  }
  return fast;
}

PackedWeight CpuMatmul::pack_f8_panels(std::span<const WeightPart> parts, std::int64_t rows,
                                       std::int64_t cols, const PackedAllocator& allocate) {
  PackedWeight packed;
  packed.rows_ = rows;
  packed.cols_ = cols;
  packed.dtype_ = DType::f8_e4m3;
  packed.f8_block_cols_ = parts.front().scales.block_cols;
  const std::size_t code_bytes = panel_bytes(DType::f8_e4m3, rows, cols);
  const std::size_t scale_count = panel_scale_count(rows, cols, packed.f8_block_cols_);
  packed.storage_bytes_ = fp8_panel_bytes(rows, cols, packed.f8_block_cols_);
  packed.storage_ = storage(allocate, packed.storage_bytes_);
  auto* table = reinterpret_cast<float*>(packed.storage_.get() + code_bytes);
  std::fill(table, table + scale_count, 0.0f);  // the lanes past the last row
  const bool fast = fill_f8_scales(parts, cols, kPanelWidth, table, panel_fast_scale);
  // A code is NaN when its seven low bits are all set: adding one carries into bit 7. Written
  // as an OR over every code, which the compiler vectorizes.
  unsigned nan_codes = 0;
#pragma omp parallel for schedule(static) reduction(| : nan_codes)
  for (std::size_t r = 0; r < f8_rows_.size(); ++r)
    for (std::int64_t k = 0; k < cols; ++k) nan_codes |= ((f8_rows_[r][k] & 0x7fu) + 1u) >> 7;
  gather_row_starts(parts, cols, DType::f8_e4m3);
  pack_panels_rows(row_starts_, DType::f8_e4m3, cols, packed.storage_.get());
  packed.f8_careful_ = !fast || nan_codes != 0;
  return packed;
}

PanelScales PackedWeight::f8_panel_scales() const {
  return {
      reinterpret_cast<const float*>(storage_.get() + panel_bytes(DType::f8_e4m3, rows_, cols_)),
      f8_block_cols_, f8_careful_};
}

bool CpuMatmul::keeps_fp8_panels(std::span<const WeightPart> parts) const {
  if (!fp8_in_panels_ || parts.empty() || !plain_in_panels(DType::bf16) ||
      best_panel_path() == PanelPath::generic || !cpu_has_f16c())
    return false;
  return std::all_of(parts.begin(), parts.end(), [&](const WeightPart& part) {
    return part.dtype == DType::f8_e4m3 && part.scales.block_cols > 0 &&
           part.scales.block_rows > 0 &&
           part.scales.block_cols == parts.front().scales.block_cols &&
           part.scales.block_rows == parts.front().scales.block_rows;
  });
}

void CpuMatmul::gather_row_starts(std::span<const WeightPart> parts, std::int64_t cols,
                                  DType dtype) {
  const std::size_t row_bytes = static_cast<std::size_t>(cols) * dtype_size(dtype);
  row_starts_.clear();
  for (const auto& part : parts) {
    const auto* row = static_cast<const std::byte*>(part.data);
    for (std::int64_t r = 0; r < part.rows; ++r, row += row_bytes) row_starts_.push_back(row);
  }
}

void CpuMatmul::pack_rows(std::span<const WeightPart> parts, std::int64_t cols,
                          const detail::BlockedLayout& layout, PackedWeight& packed) {
  gather_row_starts(parts, cols, packed.dtype_);
  detail::pack_blocked(layout, row_starts_, packed.memory_.get_data_handle());
}

dnnl::matmul& CpuMatmul::primitive(std::int64_t m, const PackedWeight& weight) {
  const ShapeKey key{m, weight.rows_, weight.cols_, weight.dtype_};
  if (auto it = primitives_.find(key); it != primitives_.end()) return it->second.first;
  if (primitives_.size() >= kMaxCachedPrimitives) primitives_.clear();
  dnnl::memory::desc src({m, weight.cols_}, to_dnnl(weight.dtype_), tag::ab);
  dnnl::memory::desc dst({m, weight.rows_}, dt::f32, tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weight.memory_.get_desc(), dst), engine_);
  auto& entry = primitives_[key];
  entry = {dnnl::matmul(pd), pd};
  return entry.first;
}

void CpuMatmul::multiply_quantized(const float* x, std::int64_t m, const PackedWeight& weight,
                                   float* y, std::vector<QuantizedActivations>& scratch) {
  quantize_rows(x, m, weight.cols_, scratch);
  for (const auto& segment : weight.segments_)
    detail::check_row_tile_activations(ggml_type_of(segment.dtype), weight.cols_, scratch.data(),
                                       m);
  // Every segment's tiles in one region: a region per segment (attention's q, k and v, where
  // llama-quantize gives v more bits) woke the other threads once for each, at 3-5 us a wake on
  // a 2-core VM, and restarted each thread's stream at every segment.
  detail::over_row_groups(units(weight), m, [&](std::uint32_t first, std::uint32_t last) {
    quantized_units(weight, scratch.data(), m, y, first, last);
  });
}

void CpuMatmul::multiply_bf16_rows(const float* x, std::int64_t m, const PackedWeight& weight,
                                   float* y, std::vector<std::uint16_t>& scratch) {
  scratch.resize(static_cast<std::size_t>(m * weight.cols_));
  convert_f32_to_bf16(x, scratch.data(), scratch.size());
  detail::bf16_rows(weight.cols_, weight.rows_, weight.bf16_rows_n_block_,
                    weight.memory_.get_data_handle(), scratch.data(), m, y);
}

void CpuMatmul::multiply_f8_rows(const float* x, std::int64_t m, const PackedWeight& weight,
                                 float* y) {
  bf16_input_.resize(static_cast<std::size_t>(m * weight.cols_));
  convert_f32_to_bf16(x, bf16_input_.data(), bf16_input_.size());
  const detail::F8RowsLayout layout = weight.f8_rows_layout();
  const auto* codes = reinterpret_cast<const std::uint8_t*>(weight.storage_.get());
  const auto* scales = reinterpret_cast<const float*>(weight.storage_.get() + layout.code_bytes());
  const std::size_t chunk = detail::f8_rows_chunk_elements(layout);
  if (m > detail::kF8RowsInRegistersAtMost)
    f8_chunks_.resize(static_cast<std::size_t>(compute_threads()) * chunk);
  detail::StolenRanges ranges(static_cast<std::size_t>(compute_threads()));
  ranges.split(static_cast<std::uint32_t>(layout.n / layout.n_block));
  detail::run_team(m, [&](const detail::Team::Member& member) {
    std::uint16_t* own_chunk =
        m > detail::kF8RowsInRegistersAtMost
            ? f8_chunks_.data() + static_cast<std::size_t>(member.self()) * chunk
            : nullptr;
    ranges.drain(member.self(), member.threads(), 1, 1,
                 [&](std::size_t, std::uint32_t first, std::uint32_t last) {
                   for (std::uint32_t b = first; b < last; ++b)
                     detail::f8_rows_block_avx512(layout, codes, scales, weight.f8_careful_, b,
                                                  bf16_input_.data(), m, y, own_chunk);
                 });
  });
}

detail::Bf16RowsShape CpuMatmul::bf16_rows_shape(const PackedWeight& weight) {
  return {weight.cols_, weight.rows_, weight.bf16_rows_n_block_, omp_get_max_threads()};
}

bool CpuMatmul::moed_computes_bf16_rows(std::int64_t m, const PackedWeight& weight) {
  if (weight.bf16_rows_n_block_ == 0 || m > kBf16RowsAtMost) return false;
  const auto shape = bf16_rows_shape(weight);
  switch (detail::bf16_rows_verdict(shape)) {
    case detail::Bf16RowsVerdict::equal:
      return true;
    case detail::Bf16RowsVerdict::differ:
      return false;
    default:
      break;
  }
  const bool equal = bf16_rows_equal_onednn(weight);
  detail::record_bf16_rows_verdict(shape, equal);
  return equal;
}

bool CpuMatmul::bf16_rows_equal_onednn(const PackedWeight& weight) {
  // Activations over many binades, with signs, so that every rounding step of a chain shows.
  std::vector<float> x(static_cast<std::size_t>(kBf16RowsAtMost * weight.cols_));
  std::uint32_t state = 12345;
  for (float& value : x) {
    state = state * 1664525u + 1013904223u;
    const float magnitude = static_cast<float>((state >> 8) & 0xFFFF) / 4096.0f + 0.01f;
    value = (state & 1) ? -magnitude : magnitude;
  }
  std::vector<float> theirs(static_cast<std::size_t>(kBf16RowsAtMost * weight.rows_)),
      ours(theirs.size());
  std::vector<std::uint16_t> scratch;
  try {
    for (std::int64_t m = 1; m <= kBf16RowsAtMost; ++m) {
      multiply_onednn(x.data(), m, weight, theirs.data());
      multiply_bf16_rows(x.data(), m, weight, ours.data(), scratch);
      const auto outputs = static_cast<std::size_t>(m * weight.rows_);
      if (std::memcmp(theirs.data(), ours.data(), outputs * sizeof(float)) != 0) return false;
    }
  } catch (const dnnl::error&) {
    return false;  // oneDNN cannot compute it at these rows: nothing to be equal to
  }
  return true;
}

bool CpuMatmul::can_run_expert_ffns(std::span<const ExpertFfn> jobs) {
  for (const auto& job : jobs) {
    for (const PackedWeight* weight : {job.gate_up, job.down})
      if (weight->empty() || weight->batch_ != 1 ||
          !(is_quantized(weight->dtype_) || weight->panels() || weight->f8_rows() ||
            (weight->bf16_rows_n_block_ != 0 && detail::bf16_rows_verdict(bf16_rows_shape(
                                                    *weight)) == detail::Bf16RowsVerdict::equal)))
        return false;
    if (job.gate_up->rows_ != 2 * job.down->cols_ || job.gate_up->cols_ != jobs[0].gate_up->cols_)
      return false;
  }
  return true;
}

std::uint32_t CpuMatmul::units(const PackedWeight& weight) {
  if (weight.panels()) return panel_units(1, weight.rows_);
  if (!is_quantized(weight.dtype_))  // bf16 rows or FP8 rows: N blocks
    return static_cast<std::uint32_t>(weight.rows_ / weight.bf16_rows_n_block_);
  std::int64_t groups = 0;
  for (const auto& segment : weight.segments_) groups += row_tile_groups(segment.rows);
  return static_cast<std::uint32_t>(groups);
}

void CpuMatmul::warm_front(const PackedWeight& weight) {
  // Units start at the first segment (at the front of the storage, but for stored rows) or at
  // the front of oneDNN's layout.
  const auto* front = static_cast<const char*>(
      weight.panels() || weight.f8_rows() ? static_cast<const void*>(weight.storage_.get())
      : is_quantized(weight.dtype_)
          ? static_cast<const void*>(weight.storage_.get() + weight.segments_.front().offset)
          : weight.memory_.get_data_handle());
  const std::size_t bytes = std::min(weight.bytes(), kWarmBytes);
  for (std::size_t offset = 0; offset < bytes; offset += 64)
    __builtin_prefetch(front + offset, 0, 2);
}

void CpuMatmul::prepare_row(const float* x, const PackedWeight& weight, PreparedRow& row) {
  if (weight.panels()) {
    row.plain = x;
  } else if (is_quantized(weight.dtype_)) {
    quantize_rows(x, 1, weight.cols_, row.quantized);
  } else {
    row.bf16.resize(static_cast<std::size_t>(weight.cols_));
    convert_f32_to_bf16(x, row.bf16.data(), row.bf16.size());
  }
}

void CpuMatmul::multiply_units(const PackedWeight& weight, const PreparedRow& x, float* y,
                               std::uint32_t first, std::uint32_t last) {
  if (weight.panels()) {
    const PanelScales scales =
        weight.dtype_ == DType::f8_e4m3 ? weight.f8_panel_scales() : PanelScales{};
    detail::panels_on_this_thread(weight.dtype_, weight.storage_.get(), weight.rows_, weight.cols_,
                                  x.plain, 1, y, best_panel_path(), first, last,
                                  weight.dtype_ == DType::f8_e4m3 ? &scales : nullptr);
    return;
  }
  if (weight.f8_rows()) {
    const detail::F8RowsLayout layout = weight.f8_rows_layout();
    const auto* codes = reinterpret_cast<const std::uint8_t*>(weight.storage_.get());
    const auto* scales =
        reinterpret_cast<const float*>(weight.storage_.get() + layout.code_bytes());
    for (std::uint32_t b = first; b < last; ++b)
      detail::f8_rows_block_avx512(layout, codes, scales, weight.f8_careful_, b, x.bf16.data(), 1,
                                   y, nullptr);
    return;
  }
  if (!is_quantized(weight.dtype_)) {
    const auto* packed = static_cast<const std::uint16_t*>(weight.memory_.get_data_handle());
    for (std::uint32_t b = first; b < last; ++b)
      detail::bf16_rows_block_avx512(weight.cols_, weight.rows_, weight.bf16_rows_n_block_, packed,
                                     b, x.bf16.data(), 1, y);
    return;
  }
  quantized_units(weight, x.quantized.data(), 1, y, first, last);
}

void CpuMatmul::quantized_units(const PackedWeight& weight, const QuantizedActivations* x,
                                std::int64_t m, float* y, std::uint32_t first, std::uint32_t last) {
  // Units number the tile groups of every segment in order.
  std::int64_t base = 0;
  std::int64_t first_row = 0;
  for (const auto& segment : weight.segments_) {
    const std::int64_t groups = row_tile_groups(segment.rows);
    const std::int64_t from = std::max<std::int64_t>(first, base);
    const std::int64_t to = std::min<std::int64_t>(last, base + groups);
    const std::byte* start = weight.storage_.get() + segment.offset;
    if (from < to && segment.stored)
      detail::stored_rows_on_this_thread(ggml_type_of(segment.dtype), start, segment.rows,
                                         weight.cols_, x, m, y + first_row, weight.rows_,
                                         best_quant_isa(), from - base, to - base);
    else if (from < to)
      detail::row_tiles_on_this_thread(ggml_type_of(segment.dtype), start, segment.rows,
                                       weight.cols_, x, m, y + first_row, weight.rows_,
                                       best_quant_isa(), from - base, to - base);
    if (from < to)
      scale_rows(y + first_row, m, weight.rows_, (from - base) * kGroupRows,
                 std::min((to - base) * kGroupRows, segment.rows), segment.scale);
    base += groups;
    first_row += segment.rows;
  }
}

void CpuMatmul::expert_ffns(std::span<const ExpertFfn> jobs) {
  if (!can_run_expert_ffns(jobs))
    throw std::invalid_argument(
        "CpuMatmul::expert_ffns: every job needs unbatched gate_up [2 * ffn, K] and down [N, ffn] "
        "weights, quantized, in bf16 rows or in panels");
  const std::size_t count = jobs.size();
  // Per job, kept between calls on the calling thread (one region per MoE layer and token): a
  // few expert widths of floats, outside the engine's memory stats. Every thread reads them.
  struct JobState {
    PreparedRow input, activated_row;
    std::vector<float> projected, activated;
  };
  thread_local std::vector<JobState> kept;
  if (kept.size() < count) kept.resize(count);
  // A thread_local named inside the region would be each thread's own: the workers reach the
  // calling thread's through this reference.
  std::vector<JobState>& states = kept;
  detail::StolenRanges gate_up_units(count);
  detail::StolenRanges down_units(count);
  for (std::size_t j = 0; j < count; ++j) {
    const std::int64_t ffn = jobs[j].down->cols_;
    states[j].projected.resize(static_cast<std::size_t>(2 * ffn));
    states[j].activated.resize(static_cast<std::size_t>(ffn));
    gate_up_units.assign(j, 0, units(*jobs[j].gate_up));
    down_units.assign(j, 0, units(*jobs[j].down));
  }
  // An exception may not leave a parallel region: the first is kept and thrown after it, and
  // once one is kept the later steps are skipped by every thread alike (each reads the flag
  // after a barrier), so that every thread still meets every barrier.
  std::exception_ptr failure;
  std::mutex failure_mutex;
  std::atomic<bool> failed = false;
  const auto guarded = [&](const auto& step) {
    if (failed.load()) return;
    try {
      step();
    } catch (...) {
      const std::lock_guard lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      failed.store(true);
    }
  };
  // Each job's owner (job j: thread j % threads) prepares its rows and its SiLU; the products go
  // by row tiles (or N blocks): an owner streams its own expert, and a thread that finishes first
  // takes tile groups from the end of the other's, so a thread that streams slower (a shared VM's
  // cores differ by 5-10%) no longer keeps the other waiting.
  detail::run_team(1, [&](const detail::Team::Member& member) {
    const int self = member.self();
    const int threads = member.threads();
    const auto owned = [&](const auto& step) {
      guarded([&] {
        for (auto j = static_cast<std::size_t>(self); j < count;
             j += static_cast<std::size_t>(threads))
          step(j);
      });
    };
    owned([&](std::size_t j) {
      if (j == static_cast<std::size_t>(self)) warm_front(*jobs[j].gate_up);
      prepare_row(jobs[j].x, *jobs[j].gate_up, states[j].input);
    });
    member.barrier();
    guarded([&] {
      gate_up_units.drain(self, threads, kOwnUnits, kStolenUnits,
                          [&](std::size_t j, std::uint32_t first, std::uint32_t last) {
                            multiply_units(*jobs[j].gate_up, states[j].input,
                                           states[j].projected.data(), first, last);
                          });
    });
    member.barrier();
    owned([&](std::size_t j) {
      if (j == static_cast<std::size_t>(self)) warm_front(*jobs[j].down);
      JobState& state = states[j];
      silu_mul(state.projected.data(), state.activated.data(), 1, jobs[j].down->cols_);
      prepare_row(state.activated.data(), *jobs[j].down, state.activated_row);
    });
    member.barrier();
    guarded([&] {
      down_units.drain(self, threads, kOwnUnits, kStolenUnits,
                       [&](std::size_t j, std::uint32_t first, std::uint32_t last) {
                         multiply_units(*jobs[j].down, states[j].activated_row, jobs[j].out, first,
                                        last);
                       });
    });
  });
  if (failure) std::rethrow_exception(failure);
}

void CpuMatmul::multiply(const float* x, std::int64_t m, const PackedWeight& weight, float* y) {
  if (weight.empty()) throw std::invalid_argument("CpuMatmul::multiply: empty weight");
  if (m <= 0) return;
  if (weight.panels()) {
    const PanelScales scales =
        weight.dtype_ == DType::f8_e4m3 ? weight.f8_panel_scales() : PanelScales{};
    panel_matmul(weight.dtype_, weight.storage_.get(), weight.batch_, weight.rows_, weight.cols_, x,
                 m, y, best_panel_path(), weight.dtype_ == DType::f8_e4m3 ? &scales : nullptr);
    return;
  }
  if (is_quantized(weight.dtype_)) {
    if (weight.batch_ > 1) {
      // Each matrix is one segment, applied to its own rows.
      for (std::int64_t b = 0; b < weight.batch_; ++b) {
        const auto& segment = weight.segments_[static_cast<std::size_t>(b)];
        quantize_rows(x + b * m * weight.cols_, m, weight.cols_, quantized_input_);
        row_tile_matmul(ggml_type_of(segment.dtype), weight.storage_.get() + segment.offset,
                        segment.rows, weight.cols_, quantized_input_.data(), m,
                        y + b * m * weight.rows_, weight.rows_);
        scale_rows(y + b * m * weight.rows_, m, weight.rows_, 0, segment.rows, segment.scale);
      }
      return;
    }
    multiply_quantized(x, m, weight, y, quantized_input_);
    return;
  }
  if (weight.f8_rows()) {
    multiply_f8_rows(x, m, weight, y);
    return;
  }
  if (moed_computes_bf16_rows(m, weight)) {
    multiply_bf16_rows(x, m, weight, y, bf16_input_);
    return;
  }
  multiply_onednn(x, m, weight, y);
}

void CpuMatmul::multiply_onednn(const float* x, std::int64_t m, const PackedWeight& weight,
                                float* y) {
  auto& matmul = primitive(m, weight);
  void* src = const_cast<float*>(x);
  if (weight.dtype_ == DType::bf16) {
    bf16_input_.resize(static_cast<std::size_t>(m * weight.cols_));
    convert_f32_to_bf16(x, bf16_input_.data(), bf16_input_.size());
    src = bf16_input_.data();
  }
  dnnl::memory src_memory({{m, weight.cols_}, to_dnnl(weight.dtype_), tag::ab}, engine_, src);
  dnnl::memory dst_memory({{m, weight.rows_}, dt::f32, tag::ab}, engine_, y);
  matmul.execute(
      stream_,
      {{DNNL_ARG_SRC, src_memory}, {DNNL_ARG_WEIGHTS, weight.memory_}, {DNNL_ARG_DST, dst_memory}});
  stream_.wait();
}

std::string CpuMatmul::implementation(std::int64_t m, const PackedWeight& weight) {
  // The kernels' format, which a rewritten one (q3_K: row_tile_format) is not.
  const DType computed = is_quantized(weight.dtype_) ? tile_dtype(weight.dtype_) : weight.dtype_;
  if (is_quantized(weight.dtype_) && weight.segments_.front().stored)
    return "moed " + std::string(quant_isa_name(best_quant_isa())) + " " +
           std::string(dtype_name(computed)) + " stored rows";
  if (is_quantized(weight.dtype_))
    return "moed " + std::string(quant_isa_name(best_quant_isa())) + " " +
           std::string(dtype_name(computed)) + " row tiles" +
           (computed == DType::q8_0 && best_quant_isa() != QuantIsa::scalar &&
                    prefetches_q8_0_tiles()
                ? " with software prefetch"
                : "");
  if (weight.panels())
    return "moed " + std::string(panel_path_name(best_panel_path())) + " " +
           std::string(dtype_name(weight.dtype_)) + " panels";
  if (weight.f8_rows())
    return std::string("moed avx512_bf16 fp8 rows in oneDNN's layout") +
           (weight.f8_careful_ ? " (careful widening)" : "");
  if (moed_computes_bf16_rows(m, weight)) return "moed avx512_bf16 rows in oneDNN's layout";
  primitive(m, weight);
  return primitives_.at({m, weight.rows_, weight.cols_, weight.dtype_}).second.impl_info_str();
}

}  // namespace moed::kernels
