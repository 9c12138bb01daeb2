// Built with AVX-512F; called only where the CPU has it (panel_matmul checks).
#include <immintrin.h>

#include <algorithm>

#include "f8_rows.hpp"
#include "moed/kernels/panel_matmul.hpp"
#include "panel_block_dispatch.hpp"
#include "transpose_avx512.hpp"
#include "widen_avx512.hpp"

namespace moed::kernels::detail {
namespace {

constexpr int kVectors = kPanelWidth / 16;
static_assert(kVectors == 4);

template <DType dtype>
__m512 load_widened(const std::byte* panel, std::int64_t index) {
  if constexpr (dtype == DType::f32)
    return widen16(reinterpret_cast<const float*>(panel) + index);
  else
    return widen16(reinterpret_cast<const std::uint16_t*>(panel) + index);
}

// kRows rows of x over `depth` panel rows, the weights of row k, lanes [16q, 16q + 16), from
// load(k, q). The unroll pragmas let GCC keep the sums in registers; without them it stored every
// sum to the stack at each step.
template <int kRows, typename Load>
void block(std::int64_t depth, const float* x, std::int64_t x_stride, float* sums,
           const Load& load) {
  __m512 acc[kRows][kVectors];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < kVectors; ++q) acc[r][q] = _mm512_loadu_ps(sums + r * kPanelWidth + q * 16);
  for (std::int64_t k = 0; k < depth; ++k) {
    __m512 w[kVectors];
#pragma GCC unroll 8
    for (int q = 0; q < kVectors; ++q) w[q] = load(k, q);
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

// 16 codes of an f8_e4m3 panel as their bf16 dequantization, in f32: through f16 (a code's
// sign-extended byte shifted left by 7, bit 14 cleared, is an f16 of 2^-8 times its value,
// subnormals included), times 256 times the scale (`scale` has it folded in unless kCareful),
// rounded to bf16 as f32_to_bf16 rounds (NaN kept quiet; a NaN code as 0x7fc0).
template <bool kCareful>
__m512 widen_f8(__m128i bytes, __m512 scale) {
  const __m256i half = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(bytes), 7),
                                        _mm256_set1_epi16(static_cast<short>(0xbf80)));
  __m512 value = _mm512_cvtph_ps(half);
  value = kCareful ? _mm512_mul_ps(_mm512_mul_ps(value, _mm512_set1_ps(256.0f)), scale)
                   : _mm512_mul_ps(value, scale);
  const __m512i bits = _mm512_castps_si512(value);
  const __m512i lowest_kept = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_and_si512(
      _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lowest_kept),
      _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
  if constexpr (kCareful) {
    rounded = _mm512_mask_mov_epi32(
        rounded, _mm512_cmp_ps_mask(value, value, _CMP_UNORD_Q),
        _mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(static_cast<int>(0xffff0000u))),
                        _mm512_set1_epi32(0x00400000)));
    const __m512i magnitude =
        _mm512_and_si512(_mm512_cvtepu16_epi32(half), _mm512_set1_epi32(0x3f80));
    rounded = _mm512_mask_mov_epi32(rounded,
                                    _mm512_cmpeq_epi32_mask(magnitude, _mm512_set1_epi32(0x3f80)),
                                    _mm512_set1_epi32(0x7fc00000));
  }
  return _mm512_castsi512_ps(rounded);
}

// Calls body(from, to, scale) for the stretches of an f8_e4m3 panel's rows [0, depth) that one
// block of scales covers, `scale` the stretch's four vectors of them (times 256 unless kCareful).
template <bool kCareful, typename Body>
void over_f8_stretches(std::int64_t depth, const PanelBlockScales& scales, const Body& body) {
  over_scale_stretches(
      scales.block_cols, scales.k0, scales.k0 + depth,
      [&](std::int64_t column_block, std::int64_t from, std::int64_t to) {
        __m512 scale[kVectors];
        for (int q = 0; q < kVectors; ++q) {
          scale[q] = _mm512_loadu_ps(scales.panel_table + column_block * kPanelWidth + q * 16);
          if constexpr (!kCareful) scale[q] = _mm512_mul_ps(scale[q], _mm512_set1_ps(256.0f));
        }
        body(from - scales.k0, to - scales.k0, scale);
      });
}

__m128i f8_codes(const std::byte* panel, std::int64_t k, int q) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(panel + k * kPanelWidth + q * 16));
}

template <bool kCareful, int kRows>
void f8_block(const std::byte* panel, std::int64_t depth, const float* x, std::int64_t x_stride,
              float* sums, const PanelBlockScales& scales) {
  // Each stretch's sums go through memory to the next unchanged: one chain per output.
  over_f8_stretches<kCareful>(
      depth, scales, [&](std::int64_t from, std::int64_t to, const __m512(&scale)[kVectors]) {
        block<kRows>(to - from, x + from, x_stride, sums, [&](std::int64_t k, int q) {
          return widen_f8<kCareful>(f8_codes(panel, from + k, q), scale[q]);
        });
      });
}

}  // namespace

void f8_panel_block_avx512(const std::byte* panel, std::int64_t depth, const float* x,
                           std::int64_t x_stride, std::int64_t rows_of_x, float* acc,
                           const PanelBlockScales& scales) {
  with_panel_block_variant(DType::f32, rows_of_x, [&]<DType, int kRows>() {
    if (scales.careful) {
      f8_block<true, kRows>(panel, depth, x, x_stride, acc, scales);
    } else {
      f8_block<false, kRows>(panel, depth, x, x_stride, acc, scales);
    }
  });
}

void widen_f8_panel_avx512(const std::byte* panel, std::int64_t depth,
                           const PanelBlockScales& scales, std::uint16_t* out) {
  const auto widen_rows = [&]<bool kCareful>() {
    over_f8_stretches<kCareful>(
        depth, scales, [&](std::int64_t from, std::int64_t to, const __m512(&scale)[kVectors]) {
          for (std::int64_t k = from; k < to; ++k)
            for (int q = 0; q < kVectors; ++q) {
              const __m512i bits =
                  _mm512_castps_si512(widen_f8<kCareful>(f8_codes(panel, k, q), scale[q]));
              _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k * kPanelWidth + q * 16),
                                  _mm512_cvtepi32_epi16(_mm512_srli_epi32(bits, 16)));
            }
        });
  };
  if (scales.careful) {
    widen_rows.template operator()<true>();
  } else {
    widen_rows.template operator()<false>();
  }
}

__attribute__((target("avx512bw"))) void pack_panel_f8_avx512(const std::byte* const* rows,
                                                              std::int64_t cols, std::byte* panel) {
  // A register of 16 rows' units (4 codes each) after the transpose; the byte shuffle groups each
  // 128-bit lane's 4 rows by code, the dword permutation puts one code's 16 rows together.
  const __m512i by_code =
      _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  const __m512i rows_together =
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  auto* out = reinterpret_cast<std::uint8_t*>(panel);
  __m512i tile[16];
  for (std::int64_t j0 = 0; j0 < kPanelWidth; j0 += 16)
    for (std::int64_t k0 = 0; k0 < cols; k0 += 64) {
      for (std::int64_t r = 0; r < 16; ++r) tile[r] = _mm512_loadu_si512(rows[j0 + r] + k0);
      transpose_16x16(tile);
      for (std::int64_t unit = 0; unit < 16; ++unit) {
        const __m512i codes =
            _mm512_permutexvar_epi32(rows_together, _mm512_shuffle_epi8(tile[unit], by_code));
        std::uint8_t* at = out + (k0 + 4 * unit) * kPanelWidth + j0;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(at), _mm512_castsi512_si128(codes));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(at + kPanelWidth),
                         _mm512_extracti32x4_epi32(codes, 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(at + 2 * kPanelWidth),
                         _mm512_extracti32x4_epi32(codes, 2));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(at + 3 * kPanelWidth),
                         _mm512_extracti32x4_epi32(codes, 3));
      }
    }
}

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
    block<kRows>(depth, x, x_stride, acc, [&](std::int64_t k, int q) {
      return load_widened<kDtype>(panel, k * kPanelWidth + q * 16);
    });
  });
}

}  // namespace moed::kernels::detail
