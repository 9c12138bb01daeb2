#pragma once

// For code built with AVX-512F or calling only where the CPU has it.
#include <immintrin.h>

#include <cstddef>

namespace moed::kernels::detail {

// Transposes a 16x16 matrix of 32-bit units held one row per register.
__attribute__((target("avx512f"))) inline void transpose_16x16(__m512i rows[16]) {
  __m512i t[16];
  for (std::ptrdiff_t i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(rows[2 * i], rows[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(rows[2 * i], rows[2 * i + 1]);
  }
  for (std::ptrdiff_t i = 0; i < 4; ++i) {
    rows[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
    rows[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
    rows[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    rows[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (std::ptrdiff_t i = 0; i < 2; ++i)
    for (std::ptrdiff_t j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_i32x4(rows[8 * i + j], rows[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_i32x4(rows[8 * i + j], rows[8 * i + 4 + j], 0xdd);
    }
  for (std::ptrdiff_t j = 0; j < 8; ++j) {
    rows[j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0x88);
    rows[8 + j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0xdd);
  }
}

}  // namespace moed::kernels::detail
