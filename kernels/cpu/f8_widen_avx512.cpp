// Built with AVX-512 F, BW and VL (kernels/CMakeLists.txt); called only where the CPU has them.
#include <immintrin.h>

#include <algorithm>

#include "f8_widen.hpp"

namespace moed::kernels::detail {

void f8_e4m3_to_bf16_avx512(const std::uint8_t* in, std::int64_t n, const float* scales,
                            std::int64_t block_cols, std::uint16_t* out) {
  const __m512i magnitude = _mm512_set1_epi32(0x7f);
  const __m512i round_half = _mm512_set1_epi32(0x7fff);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i quiet_nan = _mm512_set1_epi32(0x7fc0);
  const __m512i nan_quiet_bit = _mm512_set1_epi32(0x40);
  const __m256i sign16 = _mm256_set1_epi16(0x80);
  const __m256i magnitude16 = _mm256_set1_epi16(0x7f);
  // A code's sign, exponent and mantissa in an f16's places make an f16 of 2^-8 times its value,
  // subnormals included (both formats keep a subnormal's mantissa as it is). vcvtph2ps widens
  // that exactly into a normal f32, which the multiplier makes the value: an f32 built the same
  // way from the code would be subnormal for exponent 0, and a multiply of a subnormal takes a
  // microcode assist (BM_PackExpert, an FP8 expert on one core: 1.5 GB/s so, 2.1 GB/s this way).
  const __m512 rebias = _mm512_set1_ps(256.0f);
  for (std::int64_t begin = 0, block = 0; begin < n; begin += block_cols, ++block) {
    const __m512 block_scale = _mm512_set1_ps(scales[block]);
    const std::int64_t end = std::min(n, begin + block_cols);
    for (std::int64_t i = begin; i < end; i += 16) {
      const std::int64_t count = std::min<std::int64_t>(16, end - i);
      const auto lanes = static_cast<__mmask16>(count == 16 ? 0xffffu : (1u << count) - 1u);
      const __m128i bytes = _mm_maskz_loadu_epi8(lanes, in + i);
      const __m256i code16 = _mm256_cvtepu8_epi16(bytes);
      const __m256i half =
          _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(code16, sign16), 8),
                          _mm256_slli_epi16(_mm256_and_si256(code16, magnitude16), 7));
      const __m512 value = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtph_ps(half), rebias), block_scale);
      const __m512i code = _mm512_cvtepu8_epi32(bytes);
      const __m512i wide = _mm512_castps_si512(value);
      // f32_to_bf16: round to nearest even; a NaN product keeps its top bits, made quiet.
      const __m512i lowest_kept = _mm512_and_si512(_mm512_srli_epi32(wide, 16), one);
      __m512i narrow =
          _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(wide, round_half), lowest_kept), 16);
      narrow = _mm512_mask_mov_epi32(narrow, _mm512_cmp_ps_mask(value, value, _CMP_UNORD_Q),
                                     _mm512_or_si512(_mm512_srli_epi32(wide, 16), nan_quiet_bit));
      narrow = _mm512_mask_mov_epi32(
          narrow, _mm512_cmpeq_epi32_mask(_mm512_and_si512(code, magnitude), magnitude), quiet_nan);
      _mm256_mask_storeu_epi16(out + i, lanes, _mm512_cvtepi32_epi16(narrow));
    }
  }
}

}  // namespace moed::kernels::detail
