// Built with AVX-512F; called only where the CPU has it (panel_matmul checks).
#include <immintrin.h>

#include "moed/kernels/panel_matmul.hpp"
#include "panel_block_dispatch.hpp"
#include "transpose_avx512.hpp"
#include "widen_avx512.hpp"

namespace moed::kernels::detail {
namespace {

constexpr int kVectors = kPanelWidth / 16;

template <DType dtype>
__m512 load_widened(const std::byte* panel, std::int64_t index) {
  if constexpr (dtype == DType::f32)
    return widen16(reinterpret_cast<const float*>(panel) + index);
  else
    return widen16(reinterpret_cast<const std::uint16_t*>(panel) + index);
}

// The unroll pragmas let GCC keep the sums in registers; without them it stored every sum to the
// stack at each step.
template <DType dtype, int kRows>
void block(const std::byte* panel, std::int64_t depth, const float* x, std::int64_t x_stride,
           float* sums) {
  __m512 acc[kRows][kVectors];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < kVectors; ++q) acc[r][q] = _mm512_loadu_ps(sums + r * kPanelWidth + q * 16);
  for (std::int64_t k = 0; k < depth; ++k) {
    __m512 w[kVectors];
#pragma GCC unroll 8
    for (int q = 0; q < kVectors; ++q) w[q] = load_widened<dtype>(panel, k * kPanelWidth + q * 16);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * x_stride + k]);
#pragma GCC unroll 8
      for (int q = 0; q < kVectors; ++q) acc[r][q] = _mm512_fmadd_ps(xv, w[q], acc[r][q]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < kVectors; ++q) _mm512_storeu_ps(sums + r * kPanelWidth + q * 16, acc[r][q]);
}

}  // namespace

void pack_panel_avx512(DType dtype, const std::byte* const* rows, std::int64_t cols,
                       std::byte* panel) {
  // Sixteen rows (f32) or sixteen pairs of rows (bf16, a pair's two elements of a column made
  // one 32-bit unit, the even row's low) by sixteen columns per transpose: register k then
  // holds column k's lanes, as the panel stores them.
  __m512i tile[16];
  if (dtype == DType::f32) {
    auto* out = reinterpret_cast<float*>(panel);
    for (std::int64_t j0 = 0; j0 < kPanelWidth; j0 += 16)
      for (std::int64_t k0 = 0; k0 < cols; k0 += 16) {
        for (std::int64_t r = 0; r < 16; ++r)
          tile[r] =
              _mm512_loadu_si512(rows[j0 + r] + k0 * static_cast<std::int64_t>(sizeof(float)));
        transpose_16x16(tile);
        for (std::int64_t k = 0; k < 16; ++k)
          _mm512_storeu_si512(out + (k0 + k) * kPanelWidth + j0, tile[k]);
      }
    return;
  }
  auto* out = reinterpret_cast<std::uint16_t*>(panel);
  for (std::int64_t j0 = 0; j0 < kPanelWidth; j0 += 32)
    for (std::int64_t k0 = 0; k0 < cols; k0 += 16) {
      for (std::int64_t pair = 0; pair < 16; ++pair) {
        const auto column = k0 * static_cast<std::int64_t>(sizeof(std::uint16_t));
        const __m256i even =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[j0 + 2 * pair] + column));
        const __m256i odd =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[j0 + 2 * pair + 1] + column));
        tile[pair] = _mm512_or_si512(_mm512_cvtepu16_epi32(even),
                                     _mm512_slli_epi32(_mm512_cvtepu16_epi32(odd), 16));
      }
      transpose_16x16(tile);
      for (std::int64_t k = 0; k < 16; ++k)
        _mm512_storeu_si512(out + (k0 + k) * kPanelWidth + j0, tile[k]);
    }
}

void panel_block_avx512(DType dtype, const std::byte* panel, std::int64_t depth, const float* x,
                        std::int64_t x_stride, std::int64_t rows_of_x, float* acc) {
  with_panel_block_variant(dtype, rows_of_x, [&]<DType kDtype, int kRows>() {
    block<kDtype, kRows>(panel, depth, x, x_stride, acc);
  });
}

}  // namespace moed::kernels::detail
