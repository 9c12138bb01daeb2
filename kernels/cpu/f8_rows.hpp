#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace moed::kernels::detail {

// FP8 rows: an f8_e4m3 weight kept in host RAM at one byte a weight, as its file stores it
// (fine-grained FP8: DeepSeek-V3/R1, Qwen3 -FP8), and computed by moed with bf16_rows' arithmetic
// on its bf16 dequantization, each pair of codes widened in registers just before its vdpbf16ps.
// The bits are those of the weight fp8_cast_bf16 writes computed by bf16_rows, for every number
// of rows (prefill too: FP8 rows never go to oneDNN); where oneDNN's brgemm splits K as bf16_rows
// does (CpuMatmul checks each bf16 weight's shape before moed computes it), also oneDNN's, so an
// FP8 model's logits equal its bf16 cast's. Decode reads one byte a weight instead of two, and a
// weight streamed from disk is transposed, not widened.
//
// Layout, for a {K, N} weight in N blocks of n_block (oneDNN's for the bf16 weight): the codes
// of N block b at codes + b * n_block * K; in it, for each pair of K elements (a unit), the pair
// of every column of the block (unit u's line at u * n_block * 2 bytes, column j's pair at 2j),
// as oneDNN's BA16a<n>b2a lays bf16 out. Then the scales, one f32 per column and block of
// block_cols K elements: N block b's at scales + b * col_blocks * n_block, column block c's
// n_block scales at c * n_block.
struct F8RowsLayout {
  std::int64_t k, n, n_block, block_cols;  // block_cols even: a unit never straddles two scales
  std::int64_t col_blocks() const { return (k + block_cols - 1) / block_cols; }
  std::size_t code_bytes() const { return static_cast<std::size_t>(k * n); }
  std::size_t scale_count() const { return static_cast<std::size_t>(n * col_blocks()); }
  std::size_t bytes() const { return code_bytes() + scale_count() * sizeof(float); }
};

// Calls body(column_block, from, to) for the stretches of input elements [start, end) that one
// block of block_cols scales covers, in order: FP8 rows and FP8 panels load a stretch's scales
// once.
template <typename Body>
void over_scale_stretches(std::int64_t block_cols, std::int64_t start, std::int64_t end,
                          const Body& body) {
  for (std::int64_t at = start; at < end;) {
    const std::int64_t column_block = at / block_cols;
    const std::int64_t stretch_end = std::min(end, (column_block + 1) * block_cols);
    body(column_block, at, stretch_end);
    at = stretch_end;
  }
}

// The widest N block FP8 rows take (oneDNN's bf16 layouts use 16 to 64).
inline constexpr std::int64_t kF8RowsMaxNBlock = 256;
// Rows of x up to which a block is computed from codes widened in registers; beyond, each K
// block of codes is widened once into `chunk` (f8_rows_chunk_elements) and read from there for
// every row, as bf16_rows reads a bf16 weight.
inline constexpr std::int64_t kF8RowsInRegistersAtMost = 4;
// bf16 elements of one thread's chunk.
std::size_t f8_rows_chunk_elements(const F8RowsLayout& layout);

// Whether a scale leaves every product of a code and it a normal f32 (or zero), which the fast
// widening (vcvtne2ps2bf16, which flushes subnormals) rounds as f32_to_bf16 does. A weight with a
// scale that does not, or with a NaN code, is widened the careful way: the same bits, slower.
bool f8_rows_fast_scale(float scale);

// Packs N block `block` of the layout from its n_block rows (row_starts[j]: row j of the block,
// K codes, any alignment). Returns whether a code is NaN (S.1111.111). AVX-512 BW.
bool pack_f8_rows_block_avx512(const F8RowsLayout& layout, const std::uint8_t* const* row_starts,
                               std::int64_t block, std::uint8_t* codes);

// y[i * n + c] = dot(weight column c, x row i) for the columns of N block `block` and i in
// [0, m), x bf16 [m, K] row-major. `careful`: the weight has a NaN code or a scale that
// f8_rows_fast_scale refuses. `chunk`: f8_rows_chunk_elements of scratch, used where m >
// kF8RowsInRegistersAtMost. AVX512-BF16.
void f8_rows_block_avx512(const F8RowsLayout& layout, const std::uint8_t* codes,
                          const float* scales, bool careful, std::int64_t block,
                          const std::uint16_t* x, std::int64_t m, float* y, std::uint16_t* chunk);

}  // namespace moed::kernels::detail
