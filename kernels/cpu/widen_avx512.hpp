#pragma once

// For files built with AVX-512F only (the caller checks the CPU).
#include <immintrin.h>

#include <cstdint>

namespace moed::kernels::detail {

// Sixteen consecutive elements as f32: loaded as they are, or bf16 bits widened exactly.
inline __m512 widen16(const float* p) {
  return _mm512_loadu_ps(p);
}
inline __m512 widen16(const std::uint16_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

}  // namespace moed::kernels::detail
