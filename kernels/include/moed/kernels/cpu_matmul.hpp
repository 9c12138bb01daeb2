#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "moed/kernels/dtype.hpp"
#include "moed/kernels/panel_matmul.hpp"
#include "moed/kernels/quant_dot.hpp"

namespace moed::kernels {
namespace detail {
struct BlockedLayout;
struct Bf16RowsShape;
struct F8RowsLayout;
}  // namespace detail

// A row-major [rows, cols] slice of a weight matrix as it lies in a checkpoint
// (Hugging Face Linear layout: [out_features, in_features]). An f8_e4m3 part carries its
// block scales, and is widened to bf16 when packed.
struct WeightPart {
  const void* data;
  DType dtype;
  std::int64_t rows;
  BlockScales scales{};  // f8_e4m3 only
};

// How pack_batched's matrices lie in memory: [rows, cols] row-major, or transposed.
enum class MatrixOrder { rows_first, cols_first };

// Provides storage for a packed weight (at least `bytes`, 64-byte aligned); the memory lives as
// long as the returned pointer. Lets the caller recycle blocks instead of faulting in new pages.
using PackedAllocator = std::function<std::shared_ptr<std::byte>(std::size_t bytes)>;

// A weight matrix ready for CpuMatmul: plain floats repacked into the blocked layout oneDNN
// prefers for them (or into moed's panels, where oneDNN has no brgemm for their dtype:
// CpuMatmul::plain_in_panels), or ggml-quantized rows kept in their file's blocks (moed's own
// kernels read them), or FP8 codes in oneDNN's bf16 layout with their scales (FP8 rows, where
// bf16 goes to oneDNN's brgemm on an AVX512-BF16 CPU: f8_rows.hpp). It is an opaque buffer kind:
// memtier can hold, count and evict it like any other block, and only CpuMatmul reads it.
class PackedWeight {
 public:
  PackedWeight() = default;
  std::int64_t rows() const { return rows_; }    // output features (N)
  std::int64_t cols() const { return cols_; }    // input features (K)
  std::int64_t batch() const { return batch_; }  // independent matrices of [rows, cols]
  DType dtype() const { return dtype_; }
  std::size_t bytes() const { return memory_ ? memory_.get_desc().get_size() : storage_bytes_; }
  bool empty() const { return !memory_ && !storage_; }
  // The packed buffer and its oneDNN layout, for checks and tools that inspect the layout.
  // Empty for a quantized weight and for panels.
  const dnnl::memory& memory() const { return memory_; }

 private:
  friend class CpuMatmul;
  bool panels() const { return storage_ && !memory_ && !is_quantized(dtype_) && !f8_rows(); }
  // f8_e4m3 weights are FP8 rows (in oneDNN's N blocks) or FP8 panels (panel_matmul.hpp).
  bool f8_rows() const { return dtype_ == DType::f8_e4m3 && bf16_rows_n_block_ != 0; }
  detail::F8RowsLayout f8_rows_layout() const;
  PanelScales f8_panel_scales() const;
  // Consecutive rows in one quantized format (a stack of parts may mix formats: llama-quantize
  // gives attn_v more bits than attn_q).
  struct QuantizedSegment {
    DType dtype;
    std::int64_t rows;
    std::size_t offset;   // bytes into storage_, where its row tiles (or stored rows) start
    bool stored = false;  // rows as the file stores them (stored_rows_matmul), not row tiles
    // rewrite_scale of the format the rows were rewritten from, which their products are
    // multiplied by (iq3_xxs: 0.5; iq1_s, iq1_m: 0.125).
    float scale = 1.0f;
  };
  dnnl::memory memory_;  // dtype_ [cols_, rows_] in a oneDNN blocked layout (plain, unbatched)
  // memory_'s buffer when an allocator provided it; or the quantized segments one after another;
  // or plain matrices in panels (panel_matmul.hpp), one after another when batched; or FP8
  // rows' codes and scales.
  std::shared_ptr<std::byte> storage_;
  std::vector<QuantizedSegment> segments_;  // quantized weights only; a batched one has one per
                                            // matrix, in order
  std::size_t storage_bytes_ = 0;           // storage_ without memory_
  // N block of memory_'s layout where moed may compute a few rows of a bf16 weight itself, with
  // oneDNN's arithmetic (bf16_rows.hpp), once a check for the shape agrees; 0 where only oneDNN
  // can.
  // FP8 rows (dtype_ f8_e4m3) use it as their N block too.
  std::int64_t bf16_rows_n_block_ = 0;
  std::int64_t f8_block_cols_ = 0;  // FP8 rows: K elements per scale
  bool f8_careful_ = false;         // FP8 rows: a NaN code or a scale the fast widening refuses
  std::int64_t batch_ = 1;
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  DType dtype_ = DType::f32;
};

// y[m, N] = x[m, K] * W^T with oneDNN matmul primitives built once per shape and cached.
// Weights are packed once (pack) into the layout oneDNN chose for M=1; the same layout serves
// every M, so one packed copy covers decode and prefill. Quantized weights are repacked into row
// tiles and multiplied by moed's own kernels (quant_tiles.hpp), each row of x quantized per block
// to int8. Batches of small plain matrices (pack_batched) go into moed's panels instead, as do
// plain weights oneDNN has no brgemm for on this CPU (plain_in_panels). A few
// rows (decode) of a bf16 weight are computed by moed from oneDNN's layout, with oneDNN's
// arithmetic, where a check against oneDNN on the weight's shape shows the bits equal
// (bf16_rows.hpp). A row's result does not depend on the other rows. Not thread-safe: one per
// engine thread.
class CpuMatmul {
 public:
  CpuMatmul();

  // Stacks the parts along the output dimension (e.g. w1 over w3) and packs them. Compute dtype:
  // bf16 for bf16 weights and for f8_e4m3 ones (each element times its block scale in f32, then
  // rounded to bf16: the weights DeepSeek's fp8_cast_bf16 writes; kept as FP8 rows at one byte a
  // weight where fp8_rows_layout allows, dtype() f8_e4m3, else packed as that bf16), the formats
  // themselves for quantized ones (each run of parts in one format a segment, its blocks repacked
  // into row tiles), f32 otherwise (this CPU's oneDNN 2.6 has no f16 matmul) and for a stack that
  // mixes quantized with plain parts or plain dtypes.
  PackedWeight pack(std::span<const WeightPart> parts, std::int64_t cols,
                    const PackedAllocator& allocate = {});
  // Bytes pack() will allocate for these parts (their data is not read; an f8_e4m3 part's
  // scales need only their block_rows and block_cols).
  std::size_t packed_bytes(std::span<const WeightPart> parts, std::int64_t cols);
  // Whether stored_rows() takes these parts: all quantized in formats this CPU computes from
  // stored rows (computes_stored_rows).
  static bool computes_stored_rows(std::span<const WeightPart> parts);
  // The parts computed where they lie, as the file stores their rows: nothing is copied or
  // repacked, and `memory` (which holds every part's rows) lives as long as the weight. A block
  // read from disk and used once then costs no packing (quant_tiles.hpp, "Stored rows").
  static PackedWeight stored_rows(std::span<const WeightPart> parts, std::int64_t cols,
                                  std::shared_ptr<std::byte> memory);
  // Whether rewritten_rows() takes these parts: quantized in formats whose row-tile format
  // (row_tile_format: q6_K for q3_K, iq3_s, iq3_xxs, iq1_s and iq1_m, q8_0 for iq4_nl) this CPU
  // computes from stored rows.
  static bool computes_rewritten_rows(std::span<const WeightPart> parts);
  // Bytes rewritten_rows() allocates for these parts (their data is not read).
  static std::size_t rewritten_rows_bytes(std::span<const WeightPart> parts, std::int64_t cols);
  // The parts' rows rewritten in their row-tile format's blocks (rewrite_blocks; the formats
  // computed as they are, copied) into memory from `allocate`, and computed from there as stored
  // rows: for a q3_K, iq3_s, iq3_xxs, iq1_s, iq1_m or iq4_nl block streamed from disk and used a
  // few times, the rewrite alone rather than the rewrite and a repacking into tiles. A segment
  // rewritten from iq3_xxs, iq1_s or iq1_m keeps its rewrite_scale.
  static PackedWeight rewritten_rows(std::span<const WeightPart> parts, std::int64_t cols,
                                     const PackedAllocator& allocate);
  // Packs `matrices`, each [rows, cols] in one dtype, as one batched weight that multiply()
  // applies to each matrix's own rows of x in one call (MLA's per-head up-projections). Plain
  // dtypes go into moed's panels (panel_matmul.hpp), computed in f32 from bf16 or f32 weights; a
  // quantized batch keeps each matrix's blocks in row tiles.
  // With MatrixOrder::cols_first each part holds its matrix transposed, [cols, rows] (the key
  // part of DeepSeek's kv_b, which the absorbed form applies transposed); WeightPart::rows still
  // counts the matrix's rows. Plain dtypes only.
  PackedWeight pack_batched(std::span<const WeightPart> matrices, std::int64_t cols,
                            const PackedAllocator& allocate = {},
                            MatrixOrder order = MatrixOrder::rows_first);
  // Bytes pack_batched() will allocate for `batch` matrices of [rows, cols].
  std::size_t packed_bytes(std::int64_t batch, std::int64_t rows, std::int64_t cols,
                           DType source_dtype);
  // y[m, N] = x[m, K] * W^T. A batched weight takes x as [batch, m, K] and gives y as
  // [batch, m, N], each matrix applied to its own m rows.
  void multiply(const float* x, std::int64_t m, const PackedWeight& weight, float* y);
  // One row's gated FFN per job: out = down(silu(gate) * up), where gate_up stacks gate over up
  // (each [ffn, K]) and down is [N, ffn]. Decode computes a token's k experts so: the jobs go to
  // the OpenMP threads in turn (job j to thread j % threads) in one parallel region, where
  // multiply() + silu_mul() + multiply() per expert would open 2k regions, each waking the other
  // threads; a thread done with its own jobs' tiles takes the last ones of another's. Quantized
  // weights, bf16 rows moed computes or panels only (oneDNN's primitives are not run from inside
  // a region), and not with nested parallelism enabled; gives their results bit for bit.
  struct ExpertFfn {
    const PackedWeight* gate_up;
    const PackedWeight* down;
    const float* x;
    float* out;
  };
  static bool can_run_expert_ffns(std::span<const ExpertFfn> jobs);
  static void expert_ffns(std::span<const ExpertFfn> jobs);
  // The implementation that computes this shape: oneDNN's choice, e.g. "brg:avx512_core_bf16",
  // or moed's ("moed avx512_vnni q4_K row tiles", "moed avx512 bf16 panels").
  std::string implementation(std::int64_t m, const PackedWeight& weight);

  // Bytes pack() will allocate for a [rows, cols] weight of this source dtype (layout padding
  // included), known before any data is read.
  std::size_t packed_bytes(std::int64_t rows, std::int64_t cols, DType source_dtype);

  // How pack() lays out a [rows, cols] weight of this source dtype: "moed avx512 transpose" where
  // moed's own packer knows oneDNN's layout for it, "oneDNN reorder" where not, "moed panels
  // (...)" where oneDNN has no brgemm for it (plain_in_panels), ggml blocks in row tiles for a
  // quantized one.
  std::string packing(std::int64_t rows, std::int64_t cols, DType source_dtype);
  // Whether pack() keeps these f8_e4m3 parts as FP8 rows: on a CPU with AVX512-BF16 whose
  // oneDNN lays their bf16 out in N blocks moed packs (blocked_layout), all parts with one block
  // geometry of an even number of columns (DeepSeek's and Qwen's 128 x 128). Their data is not
  // read.
  bool keeps_fp8_rows(std::span<const WeightPart> parts, std::int64_t cols);
  // Whether pack() keeps these f8_e4m3 parts as FP8 panels, one byte a weight in moed's panels
  // with a table of scales (panel_matmul.hpp): where bf16 goes to the panels (no AVX512-BF16) on
  // their AVX2 or AVX-512 path, all parts with one block geometry, unless hold_fp8_in_panels
  // (false) asked for them widened to bf16. Their data is not read.
  bool keeps_fp8_panels(std::span<const WeightPart> parts) const;
  // FP8 panels take half the memory of bf16 ones but compute slower (the widening, not memory,
  // is their limit: docs/design.md, section 6): the engine keeps them where a host budget caps
  // memory. On by default.
  void hold_fp8_in_panels(bool hold) { fp8_in_panels_ = hold; }
  static DType compute_dtype(DType weight_dtype);
  // Whether pack() puts weights of this plain compute dtype (f32, bf16) into moed's panels
  // (panel_matmul.hpp) rather than oneDNN's layout: where oneDNN would not multiply them with its
  // brgemm kernels. On a CPU with AVX2 alone oneDNN 2.6 has no bf16 matmul, and there (f32) and
  // on AVX-512 without AVX512-BF16 (bf16) its gemm:jit gives a row's results that depend on the
  // rows computed with it; the panels' never do. f32 stays with oneDNN where the panels would run
  // their generic C++ (no AVX2 and FMA).
  static bool plain_in_panels(DType compute);
  // The compute dtype of a stack: compute_dtype of its parts' common dtype; f32 when plain
  // dtypes differ or quantized parts meet plain ones. Quantized parts alone keep their formats.
  static DType compute_dtype(std::span<const WeightPart> parts);

 private:
  using ShapeKey = std::tuple<std::int64_t, std::int64_t, std::int64_t, DType>;  // m, N, K, dtype
  dnnl::memory::desc packed_desc(std::int64_t rows, std::int64_t cols, DType dtype);
  dnnl::matmul& primitive(std::int64_t m, const PackedWeight& weight);
  // A quantized, unbatched weight times the m rows of x, quantized into `scratch`: the row tiles
  // of all its segments, in one parallel region.
  static void multiply_quantized(const float* x, std::int64_t m, const PackedWeight& weight,
                                 float* y, std::vector<QuantizedActivations>& scratch);
  std::optional<detail::F8RowsLayout> fp8_rows_layout(std::span<const WeightPart> parts,
                                                      std::int64_t cols);
  // FP8 rows times m rows of x, converted into bf16_input_.
  void multiply_f8_rows(const float* x, std::int64_t m, const PackedWeight& weight, float* y);
  PackedWeight pack_f8_rows(std::span<const WeightPart> parts, const detail::F8RowsLayout& layout,
                            const PackedAllocator& allocate);
  PackedWeight pack_f8_panels(std::span<const WeightPart> parts, std::int64_t rows,
                              std::int64_t cols, const PackedAllocator& allocate);
  // Writes the parts' block scales in f32 into `table`: per group of `width` rows (an N block,
  // a panel), per block of columns, `width` scales; gathers the rows' starts into f8_rows_ and
  // checks the scales (throws before anything is packed). Whether fast_scale takes every one.
  bool fill_f8_scales(std::span<const WeightPart> parts, std::int64_t cols, std::int64_t width,
                      float* table, bool (*fast_scale)(float));
  // A bf16 weight with bf16_rows_n_block_ times m rows of x, converted into `scratch`.
  static void multiply_bf16_rows(const float* x, std::int64_t m, const PackedWeight& weight,
                                 float* y, std::vector<std::uint16_t>& scratch);
  // oneDNN's primitive for m rows of a plain weight.
  void multiply_onednn(const float* x, std::int64_t m, const PackedWeight& weight, float* y);
  static detail::Bf16RowsShape bf16_rows_shape(const PackedWeight& weight);
  // One activation row as a quantized weight (Q8_0 / Q8_K blocks), bf16 rows or panels read it;
  // for panels, x itself, which must outlive the row.
  struct PreparedRow {
    std::vector<QuantizedActivations> quantized;
    std::vector<std::uint16_t> bf16;
    const float* plain = nullptr;  // panels read the row where it lies
  };
  static void prepare_row(const float* x, const PackedWeight& weight, PreparedRow& row);
  // Asks the front of the weight's units (at most kWarmBytes) into this core's L2, without
  // waiting.
  static void warm_front(const PackedWeight& weight);
  // A product with `weight` (quantized, bf16 rows moed computes, or panels) in units any thread
  // may compute, in any order, with the same bits: its row tiles over all its segments, in order,
  // its N blocks, or its panels. multiply_units takes one prepared row.
  static std::uint32_t units(const PackedWeight& weight);
  static void multiply_units(const PackedWeight& weight, const PreparedRow& x, float* y,
                             std::uint32_t first, std::uint32_t last);
  // Units [first, last) of a quantized weight for m rows of x, already quantized and checked.
  static void quantized_units(const PackedWeight& weight, const QuantizedActivations* x,
                              std::int64_t m, float* y, std::uint32_t first, std::uint32_t last);
  // Whether moed computes m rows of this weight (bf16 rows): only where, for its shape and this
  // thread count, moed's rows have given oneDNN's bits; the first time a shape is asked, on this
  // thread, by bf16_rows_equal_onednn.
  bool moed_computes_bf16_rows(std::int64_t m, const PackedWeight& weight);
  // 1 to kBf16RowsAtMost rows of varied activations through oneDNN and through moed's rows,
  // compared bit for bit.
  bool bf16_rows_equal_onednn(const PackedWeight& weight);
  // Copies the parts, converted to the compute dtype, into one plain [rows, cols] matrix.
  const void* stage(std::span<const WeightPart> parts, std::int64_t cols, DType compute);
  // An f8_e4m3 part's rows times their block scales, rounded to bf16, into `out`.
  static void stage_f8_as_bf16(const WeightPart& part, std::int64_t cols, std::uint16_t* out);
  // Packs f8_e4m3 parts into oneDNN's blocked layout an N block at a time, each widened to bf16
  // just before (the bytes stage_f8_as_bf16 and pack_rows would give).
  void pack_f8_blocked(std::span<const WeightPart> parts, std::int64_t cols,
                       const detail::BlockedLayout& layout, PackedWeight& packed);
  // Fills row_starts_ with where each row of the parts (all of `dtype`) starts.
  void gather_row_starts(std::span<const WeightPart> parts, std::int64_t cols, DType dtype);
  // Packs with moed's own transpose (parts in the compute dtype, any number).
  void pack_rows(std::span<const WeightPart> parts, std::int64_t cols,
                 const detail::BlockedLayout& layout, PackedWeight& packed);

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::map<ShapeKey, dnnl::memory::desc> packed_descs_;
  std::map<ShapeKey, std::pair<dnnl::matmul, dnnl::matmul::primitive_desc>> primitives_;
  std::vector<std::uint16_t> bf16_input_;  // bf16 [m, K] scratch for bf16 weights
  // u8 [rows * cols * elem] stacking/conversion scratch for pack(); grow-only, because fresh
  // multi-MB allocations pay a page fault per 4 KiB on every pack.
  std::vector<unsigned char> staging_;
  // pack_f8_blocked's rows, their scales, and per thread an N block widened and its row starts.
  std::vector<const std::uint8_t*> f8_rows_;
  std::vector<BlockScales> f8_row_scales_;
  std::vector<std::uint16_t> f8_blocks_;
  std::vector<const std::byte*> f8_block_starts_;
  std::vector<float> f8_grid_;            // pack_f8_rows: one part's scales in f32
  std::vector<std::uint16_t> f8_chunks_;  // multiply_f8_rows: per thread, a widened K block
  // [rows] where each plain row starts, for pack_rows and panels
  std::vector<const std::byte*> row_starts_;
  std::vector<QuantizedActivations> quantized_input_;  // [m] rows of x for quantized weights
  bool fp8_in_panels_ = true;
};

}  // namespace moed::kernels
