#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "moed/kernels/dtype.hpp"

namespace moed::kernels {

// moed's own kernels for plain (f32, bf16) weights, and FP8 ones with their scales (PanelScales).
// Small matrices applied many at a time: MLA's per-head up-projections, [512, 128] and [128, 512]
// per head, are too small for a oneDNN call each to stream its weights (about 10 GB/s, batched or
// not); and every plain weight where oneDNN has no brgemm kernel for its dtype
// (CpuMatmul::plain_in_panels). Each matrix is kept transposed in panels of kPanelWidth output
// columns, every panel contiguous ([cols][kPanelWidth], the last one zero-padded), so a panel
// streams once per block of input rows and its outputs stay in registers.
//
// Every output is one f32 multiply-add chain over the inputs in order, so a row's result is the
// same whatever the other rows are and however the work is split over threads.
inline constexpr std::int64_t kPanelWidth = 64;

// The kernel's paths, in order: generic C++ (any x86-64; std::fma is a library call without
// FMA), AVX2 with FMA, AVX-512F. All round alike (one fused multiply-add per weight, in input
// order), so they give the same bits.
enum class PanelPath { generic, avx2, avx512 };
inline constexpr PanelPath kPanelPaths[] = {PanelPath::generic, PanelPath::avx2, PanelPath::avx512};
// The environment variable that caps best_panel_path(): a path's name, to run (and test) on this
// CPU the panels a CPU without the better paths runs (only those: the quantized kernels have
// MOED_MAX_QUANT_ISA, oneDNN ONEDNN_MAX_CPU_ISA).
inline constexpr const char* kMaxPanelIsaVariable = "MOED_MAX_PANEL_ISA";
// The best path this CPU runs (AVX-512F; AVX2 with FMA), at most the one kMaxPanelIsaVariable
// names. Read once; a value that names no path is ignored with a warning (the daemon refuses it
// at start).
PanelPath best_panel_path();
const char* panel_path_name(PanelPath path);
// The path panel_path_name calls `name`, or none; every path's name, worst first, for messages.
std::optional<PanelPath> panel_path_named(std::string_view name);
std::string panel_path_names();

// Weight dtypes the panels hold: f32 and bf16 (widened to f32 in the kernel), and f8_e4m3 with
// its PanelScales (each weight widened to its bf16 dequantization in the kernel, on the AVX2 and
// AVX-512 paths).
bool panel_dtype_supported(DType dtype);

// The block scales of an f8_e4m3 matrix in panels: for each panel, for each block of block_cols
// inputs, kPanelWidth f32 (its columns' scales; zero past the last row), panel after panel.
// Each weight is computed as bf16(code's value * scale), rounded to nearest even, as
// f8_e4m3_to_bf16 gives it, so the products are those of its bf16 cast's panels. `careful`: a
// NaN code or a scale above 2^100 (or not finite), whose widening takes two multiplies and NaN
// masks; the others multiply by 256 times the scale at once.
struct PanelScales {
  const float* table;
  std::int64_t block_cols;
  bool careful;
};
// Floats in an f8_e4m3 matrix's PanelScales table.
std::size_t panel_scale_count(std::int64_t rows, std::int64_t cols, std::int64_t block_cols);
// Whether a scale leaves an f8_e4m3 panel's widening on its fast multiply.
bool panel_fast_scale(float scale);
// Bytes of one [rows, cols] matrix in panels.
std::size_t panel_bytes(DType dtype, std::int64_t rows, std::int64_t cols);
// Writes a row-major [rows, cols] matrix (Hugging Face Linear layout) as panels at `out`
// (panel_bytes of it), panels spread over the OpenMP threads.
void pack_panels(const void* matrix, DType dtype, std::int64_t rows, std::int64_t cols,
                 std::byte* out);

// As pack_panels, from the matrix's rows wherever they lie (rows.size() of them, `cols` elements
// each): a stacked weight's parts go in without being copied together first. Whole panels go
// through register transposes 16 columns at a time on AVX-512 (8 of bf16 on AVX2), the columns
// left over and partial panels element by element; `path` (at most best_panel_path()) picks
// which, for tests: every path writes the same bytes.
void pack_panels_rows(std::span<const std::byte* const> rows, DType dtype, std::int64_t cols,
                      std::byte* out, PanelPath path = best_panel_path());

// As pack_panels, from the matrix's transpose ([cols, rows] row-major): each panel row is then a
// contiguous run of it.
void pack_panels_transposed(const void* transposed, DType dtype, std::int64_t rows,
                            std::int64_t cols, std::byte* out);

// For each of `batch` matrices b (panels at panels + b * panel_bytes): y[b, i, :] =
// W_b x[b, i, :] for i in [0, m). x: f32 [batch, m, cols]; y: f32 [batch, m, rows]. Work spread
// over the compute threads (run_team: moed's Team for a few rows, else OpenMP's) by unit, a
// (matrix, panel) pair. `path` must be one this CPU runs (at most best_panel_path()).
void panel_matmul(DType dtype, const std::byte* panels, std::int64_t batch, std::int64_t rows,
                  std::int64_t cols, const float* x, std::int64_t m, float* y,
                  PanelPath path = best_panel_path(), const PanelScales* scales = nullptr);

// The units panel_matmul spreads over threads: one per panel of each matrix.
std::uint32_t panel_units(std::int64_t batch, std::int64_t rows);

namespace detail {
// panel_matmul's units [first, last) on the calling thread; `path` already checked.
void panels_on_this_thread(DType dtype, const std::byte* panels, std::int64_t rows,
                           std::int64_t cols, const float* x, std::int64_t m, float* y,
                           PanelPath path, std::uint32_t first, std::uint32_t last,
                           const PanelScales* scales = nullptr);

// An f8_e4m3 panel's scales for a block of its rows: the panel's table, and the first input
// row the block starts at.
struct PanelBlockScales {
  const float* panel_table;
  std::int64_t block_cols;
  std::int64_t k0;
  bool careful;
};

// One panel's rows [k0, k0 + depth) (`panel` at row k0) over a block of up to six rows of x
// (`x` at column k0, row stride `x_stride`), added to the block's running sums `acc`
// ([rows_of_x][kPanelWidth]), one multiply-add per weight in input order. Each built for its ISA
// and run only where the CPU has it.
void panel_block_avx512(DType dtype, const std::byte* panel, std::int64_t depth, const float* x,
                        std::int64_t x_stride, std::int64_t rows_of_x, float* acc);
void panel_block_avx2(DType dtype, const std::byte* panel, std::int64_t depth, const float* x,
                      std::int64_t x_stride, std::int64_t rows_of_x, float* acc);
// The same for an f8_e4m3 panel.
void f8_panel_block_avx512(const std::byte* panel, std::int64_t depth, const float* x,
                           std::int64_t x_stride, std::int64_t rows_of_x, float* acc,
                           const PanelBlockScales& scales);
void f8_panel_block_avx2(const std::byte* panel, std::int64_t depth, const float* x,
                         std::int64_t x_stride, std::int64_t rows_of_x, float* acc,
                         const PanelBlockScales& scales);
// Rows [k0, k0 + depth) of an f8_e4m3 panel (`panel` at row k0) widened into a bf16 panel's
// rows at `out` (depth * kPanelWidth elements), the values f8_panel_block_* multiply by: many
// blocks of x's rows then take them as bf16 panels, each weight widened once.
void widen_f8_panel_avx512(const std::byte* panel, std::int64_t depth,
                           const PanelBlockScales& scales, std::uint16_t* out);
void widen_f8_panel_avx2(const std::byte* panel, std::int64_t depth, const PanelBlockScales& scales,
                         std::uint16_t* out);

// Columns [0, cols) of one whole panel (kPanelWidth rows; `cols` a multiple of 16, at most the
// rows' length) packed through 16x16 register transposes, byte for byte what pack_panels writes
// element by element.
void pack_panel_avx512(DType dtype, const std::byte* const* rows, std::int64_t cols,
                       std::byte* panel);
// The same for bf16 through 8x8 transposes, `cols` a multiple of 8.
void pack_panel_bf16_avx2(const std::byte* const* rows, std::int64_t cols, std::byte* panel);
// The same for f8_e4m3 codes: through 16x16 transposes of 4-code units and a byte shuffle (AVX-512
// BW), `cols` a multiple of 64; through 8x8 ones (AVX2), `cols` a multiple of 32.
void pack_panel_f8_avx512(const std::byte* const* rows, std::int64_t cols, std::byte* panel);
void pack_panel_f8_avx2(const std::byte* const* rows, std::int64_t cols, std::byte* panel);
}  // namespace detail

}  // namespace moed::kernels
