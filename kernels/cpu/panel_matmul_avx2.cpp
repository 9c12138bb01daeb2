// Built with AVX2 and FMA; called only where the CPU has them (panel_matmul checks).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "f8_rows.hpp"
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

// kRows rows of x over the panel's lanes [first, first + 8 * kVectors) of `depth` rows, the
// weights of row k, lanes [lane, lane + 8), from load(k, lane). With sixteen registers, one row
// takes the whole panel width, two rows half of it and three to six rows a quarter, so that every
// weight loaded feeds a multiply-add per row. The unroll pragmas let GCC keep the sums in
// registers; without them it stored every sum to the stack at each step.
template <int kRows, int kVectors, typename Load>
void slice(std::int64_t depth, const float* x, std::int64_t x_stride, float* sums,
           std::int64_t first, const Load& load) {
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
        acc[0][q] = _mm256_fmadd_ps(xv, load(k, first + q * 8), acc[0][q]);
    } else {
      __m256 w[kVectors];
#pragma GCC unroll 8
      for (int q = 0; q < kVectors; ++q) w[q] = load(k, first + q * 8);
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

template <int kRows, typename Load>
void block(std::int64_t depth, const float* x, std::int64_t x_stride, float* sums,
           const Load& load) {
  constexpr int kVectors = kRows == 1 ? 8 : kRows == 2 ? 4 : 2;
  static_assert(kPanelWidth % (8 * kVectors) == 0);
  for (std::int64_t first = 0; first < kPanelWidth; first += 8 * kVectors)
    slice<kRows, kVectors>(depth, x, x_stride, sums, first, load);
}

// 8 codes of an f8_e4m3 panel as their bf16 dequantization, in f32: panel_matmul_avx512.cpp's
// widen_f8 on eight lanes (F16C's vcvtph2ps).
template <bool kCareful>
__m256 widen_f8(const std::uint8_t* codes, __m256 scale) {
  const __m128i half = _mm_and_si128(
      _mm_slli_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes))),
                     7),
      _mm_set1_epi16(static_cast<short>(0xbf80)));
  __m256 value = _mm256_cvtph_ps(half);
  value = kCareful ? _mm256_mul_ps(_mm256_mul_ps(value, _mm256_set1_ps(256.0f)), scale)
                   : _mm256_mul_ps(value, scale);
  const __m256i bits = _mm256_castps_si256(value);
  const __m256i lowest_kept = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_and_si256(
      _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7fff)), lowest_kept),
      _mm256_set1_epi32(static_cast<int>(0xffff0000u)));
  if constexpr (kCareful) {
    const __m256i quiet =
        _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(static_cast<int>(0xffff0000u))),
                        _mm256_set1_epi32(0x00400000));
    rounded = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(rounded),
                                                   _mm256_castsi256_ps(quiet),
                                                   _mm256_cmp_ps(value, value, _CMP_UNORD_Q)));
    const __m256i magnitude =
        _mm256_and_si256(_mm256_cvtepu16_epi32(half), _mm256_set1_epi32(0x3f80));
    rounded = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7fc00000),
                                 _mm256_cmpeq_epi32(magnitude, _mm256_set1_epi32(0x3f80)));
  }
  return _mm256_castsi256_ps(rounded);
}

// Calls body(from, to, scale) for the stretches of an f8_e4m3 panel's rows [0, depth) that one
// block of scales covers, `scale` the stretch's row of the table.
template <typename Body>
void over_f8_stretches(std::int64_t depth, const PanelBlockScales& scales, const Body& body) {
  over_scale_stretches(scales.block_cols, scales.k0, scales.k0 + depth,
                       [&](std::int64_t column_block, std::int64_t from, std::int64_t to) {
                         body(from - scales.k0, to - scales.k0,
                              scales.panel_table + column_block * kPanelWidth);
                       });
}

// Eight weights of row k of an f8_e4m3 panel from `lane` on, widened; the scale read from the
// table (in L1) at each use, times 256 unless kCareful.
template <bool kCareful>
__m256 f8_weights(const std::byte* panel, const float* scale, std::int64_t k, std::int64_t lane) {
  const __m256 rebias = _mm256_set1_ps(kCareful ? 1.0f : 256.0f);
  return widen_f8<kCareful>(reinterpret_cast<const std::uint8_t*>(panel) + k * kPanelWidth + lane,
                            _mm256_mul_ps(_mm256_loadu_ps(scale + lane), rebias));
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

void pack_panel_f8_avx2(const std::byte* const* rows, std::int64_t cols, std::byte* panel) {
  // pack_panel_f8_avx512 on 8 rows by 32 codes: the byte shuffle groups each 128-bit lane's 4
  // rows by code, the dword permutation puts one code's 8 rows together.
  const __m256i by_code = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0,
                                           4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m256i rows_together = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  auto* out = reinterpret_cast<std::uint8_t*>(panel);
  __m256i tile[8];
  for (std::int64_t j0 = 0; j0 < kPanelWidth; j0 += 8)
    for (std::int64_t k0 = 0; k0 < cols; k0 += 32) {
      for (std::int64_t r = 0; r < 8; ++r)
        tile[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[j0 + r] + k0));
      transpose_8x8(tile);
      for (std::int64_t unit = 0; unit < 8; ++unit) {
        const __m256i codes =
            _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(tile[unit], by_code), rows_together);
        std::uint8_t* at = out + (k0 + 4 * unit) * kPanelWidth + j0;
        const __m128i low = _mm256_castsi256_si128(codes);
        const __m128i high = _mm256_extracti128_si256(codes, 1);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(at), low);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(at + kPanelWidth),
                         _mm_unpackhi_epi64(low, low));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(at + 2 * kPanelWidth), high);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(at + 3 * kPanelWidth),
                         _mm_unpackhi_epi64(high, high));
      }
    }
}

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

void f8_panel_block_avx2(const std::byte* panel, std::int64_t depth, const float* x,
                         std::int64_t x_stride, std::int64_t rows_of_x, float* acc,
                         const PanelBlockScales& scales) {
  // Each stretch's sums go through memory to the next unchanged: one chain per output.
  const auto stretches = [&]<bool kCareful, int kRows>() {
    over_f8_stretches(depth, scales, [&](std::int64_t from, std::int64_t to, const float* scale) {
      block<kRows>(to - from, x + from, x_stride, acc, [&](std::int64_t k, std::int64_t lane) {
        return f8_weights<kCareful>(panel, scale, from + k, lane);
      });
    });
  };
  with_panel_block_variant(DType::f32, rows_of_x, [&]<DType, int kRows>() {
    if (scales.careful) {
      stretches.template operator()<true, kRows>();
    } else {
      stretches.template operator()<false, kRows>();
    }
  });
}

void widen_f8_panel_avx2(const std::byte* panel, std::int64_t depth, const PanelBlockScales& scales,
                         std::uint16_t* out) {
  const auto widen_rows = [&]<bool kCareful>() {
    over_f8_stretches(depth, scales, [&](std::int64_t from, std::int64_t to, const float* scale) {
      for (std::int64_t k = from; k < to; ++k)
        for (std::int64_t lane = 0; lane < kPanelWidth; lane += 8) {
          // The high halves, in lane order (packus interleaves the 128-bit lanes).
          const __m256i high = _mm256_srli_epi32(
              _mm256_castps_si256(f8_weights<kCareful>(panel, scale, k, lane)), 16);
          _mm_storeu_si128(
              reinterpret_cast<__m128i*>(out + k * kPanelWidth + lane),
              _mm_packus_epi32(_mm256_castsi256_si128(high), _mm256_extracti128_si256(high, 1)));
        }
    });
  };
  if (scales.careful) {
    widen_rows.template operator()<true>();
  } else {
    widen_rows.template operator()<false>();
  }
}

void panel_block_avx2(DType dtype, const std::byte* panel, std::int64_t depth, const float* x,
                      std::int64_t x_stride, std::int64_t rows_of_x, float* acc) {
  with_panel_block_variant(dtype, rows_of_x, [&]<DType kDtype, int kRows>() {
    block<kRows>(depth, x, x_stride, acc, [&](std::int64_t k, std::int64_t lane) {
      return load_widened<kDtype>(panel, k * kPanelWidth + lane);
    });
  });
}

}  // namespace moed::kernels::detail
