// Built with AVX2 and FMA; called only where the CPU has them (panel_matmul checks).
#include <immintrin.h>

#include "moed/kernels/panel_matmul.hpp"
#include "panel_block_dispatch.hpp"

namespace moed::kernels::detail {
namespace {

template <DType dtype>
__m256 load_widened(const std::byte* panel, std::int64_t index) {
  if constexpr (dtype == DType::f32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(panel) + index);
  } else {
    const __m128i bits =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(panel + index * sizeof(std::uint16_t)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
}

// kRows rows of x over the panel's lanes [first, first + 8 * kVectors). With sixteen registers,
// one row takes the whole panel width, two rows half of it and three to six rows a quarter, so
// that every weight loaded feeds a multiply-add per row. The unroll pragmas let GCC keep the
// sums in registers; without them it stored every sum to the stack at each step.
template <DType dtype, int kRows, int kVectors>
void slice(const std::byte* panel, std::int64_t depth, const float* x, std::int64_t x_stride,
           float* sums, std::int64_t first) {
  __m256 acc[kRows][kVectors];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < kVectors; ++q)
      acc[r][q] = _mm256_loadu_ps(sums + r * kPanelWidth + first + q * 8);
  for (std::int64_t k = 0; k < depth; ++k) {
    if constexpr (kRows == 1) {
      // Each weight widened just before its multiply-add: eight sums, eight widened weights and
      // x would need seventeen registers.
      const __m256 xv = _mm256_broadcast_ss(x + k);
#pragma GCC unroll 8
      for (int q = 0; q < kVectors; ++q)
        acc[0][q] = _mm256_fmadd_ps(xv, load_widened<dtype>(panel, k * kPanelWidth + first + q * 8),
                                    acc[0][q]);
    } else {
      __m256 w[kVectors];
#pragma GCC unroll 8
      for (int q = 0; q < kVectors; ++q)
        w[q] = load_widened<dtype>(panel, k * kPanelWidth + first + q * 8);
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) {
        const __m256 xv = _mm256_broadcast_ss(x + r * x_stride + k);
#pragma GCC unroll 8
        for (int q = 0; q < kVectors; ++q) acc[r][q] = _mm256_fmadd_ps(xv, w[q], acc[r][q]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < kVectors; ++q)
      _mm256_storeu_ps(sums + r * kPanelWidth + first + q * 8, acc[r][q]);
}

template <DType dtype, int kRows>
void block(const std::byte* panel, std::int64_t depth, const float* x, std::int64_t x_stride,
           float* sums) {
  constexpr int kVectors = kRows == 1 ? 8 : kRows == 2 ? 4 : 2;
  static_assert(kPanelWidth % (8 * kVectors) == 0);
  for (std::int64_t first = 0; first < kPanelWidth; first += 8 * kVectors)
    slice<dtype, kRows, kVectors>(panel, depth, x, x_stride, sums, first);
}

// Transposes an 8x8 matrix of 32-bit units held one row per register.
void transpose_8x8(__m256i rows[8]) {
  __m256i t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(rows[2 * i], rows[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(rows[2 * i], rows[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    rows[4 * i + 0] = _mm256_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
    rows[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
    rows[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    rows[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm256_permute2x128_si256(rows[j], rows[4 + j], 0x20);
    t[4 + j] = _mm256_permute2x128_si256(rows[j], rows[4 + j], 0x31);
  }
  for (int j = 0; j < 8; ++j) rows[j] = t[j];
}

}  // namespace

void pack_panel_bf16_avx2(const std::byte* const* rows, std::int64_t cols, std::byte* panel) {
  // Eight pairs of rows (a pair's two elements of a column made one 32-bit unit, the even row's
  // low) by eight columns per transpose: register k then holds column k's lanes, as the panel
  // stores them.
  __m256i tile[8];
  auto* out = reinterpret_cast<std::uint16_t*>(panel);
  for (std::int64_t j0 = 0; j0 < kPanelWidth; j0 += 16)
    for (std::int64_t k0 = 0; k0 < cols; k0 += 8) {
      for (std::int64_t pair = 0; pair < 8; ++pair) {
        const auto column = k0 * static_cast<std::int64_t>(sizeof(std::uint16_t));
        const __m128i even =
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[j0 + 2 * pair] + column));
        const __m128i odd =
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[j0 + 2 * pair + 1] + column));
        tile[pair] = _mm256_or_si256(_mm256_cvtepu16_epi32(even),
                                     _mm256_slli_epi32(_mm256_cvtepu16_epi32(odd), 16));
      }
      transpose_8x8(tile);
      for (std::int64_t k = 0; k < 8; ++k)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (k0 + k) * kPanelWidth + j0), tile[k]);
    }
}

void panel_block_avx2(DType dtype, const std::byte* panel, std::int64_t depth, const float* x,
                      std::int64_t x_stride, std::int64_t rows_of_x, float* acc) {
  with_panel_block_variant(dtype, rows_of_x, [&]<DType kDtype, int kRows>() {
    block<kDtype, kRows>(panel, depth, x, x_stride, acc);
  });
}

}  // namespace moed::kernels::detail
