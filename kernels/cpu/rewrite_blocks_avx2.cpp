// rewrite_blocks' Q3_K, IQ3_S and IQ3_XXS paths built with AVX2; called only where the CPU has it
// (quant_tiles.cpp checks).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "moed/kernels/quant.hpp"
#include "quant_tiles_internal.hpp"

namespace moed::kernels::qtile {
#define MOED_REWRITE_Q3_K rewrite_q3_k_avx2
#include "rewrite_blocks.inc"
#undef MOED_REWRITE_Q3_K

namespace {

// 32 quants as Q6_K's: 32 plus or minus each magnitude (at most 31), bit l of `signs` choosing
// minus for element l. The bits are spread to a byte mask: byte l takes byte l / 8 of the word (a
// lane's indices are its own bytes, and every lane holds the word), then bit l % 8 of it.
__m256i signed_q6_k_quants(__m256i magnitudes, std::uint32_t signs) {
  const __m256i offsets = _mm256_set1_epi8(32);
  const __m256i sign_bytes = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                              2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i sign_bits = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  const __m256i spread =
      _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(signs)), sign_bytes);
  const __m256i negative = _mm256_cmpeq_epi8(_mm256_and_si256(spread, sign_bits), sign_bits);
  return _mm256_blendv_epi8(_mm256_add_epi8(offsets, magnitudes),
                            _mm256_sub_epi8(offsets, magnitudes), negative);
}

// A block's quants 32 at a time: the eight groups' grid entries (their 9-bit indices from qs and
// one qh byte) loaded one by one into a vector (vpgatherdd took twice as long on Ice Lake, whose
// microcode makes gathers slow), signed by the sub-block's 32 sign bits.
void iq3_s_quants_avx2(const BlockIQ3_S& in, std::uint8_t* q) {
  for (int j = 0; j < kQK / 32; ++j) {
    const std::uint8_t* qs = in.qs + 8 * j;
    const unsigned top = in.qh[j];
    auto entry = [&](int k) { return static_cast<int>(kIq3sGrid[qs[k] | ((top >> k) & 1U) << 8]); };
    const __m256i magnitudes = _mm256_setr_epi32(entry(0), entry(1), entry(2), entry(3), entry(4),
                                                 entry(5), entry(6), entry(7));
    std::uint32_t signs;
    std::memcpy(&signs, in.signs + 4 * j, sizeof signs);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * j),
                        signed_q6_k_quants(magnitudes, signs));
  }
}

// IQ3_XXS's quants as Q6_K's of twice its values, 32 at a time as IQ3_S's: half of each of the
// eight groups' grid entries, signed by the sub-block's four sevens, each with its parity
// (kParitySignBytes).
void iq3_xxs_quants_avx2(const BlockIQ3_XXS& in, std::uint8_t* q) {
  const __m256i low_seven = _mm256_set1_epi8(0x7F);
  for (int j = 0; j < kQK / 32; ++j) {
    const std::uint8_t* qs = in.qs + 8 * j;
    auto entry = [&](int k) { return static_cast<int>(kIq3xxsGrid[qs[k]]); };
    const __m256i entries = _mm256_setr_epi32(entry(0), entry(1), entry(2), entry(3), entry(4),
                                              entry(5), entry(6), entry(7));
    const __m256i halves = _mm256_and_si256(_mm256_srli_epi16(entries, 1), low_seven);
    std::uint32_t word;
    std::memcpy(&word, in.scales_and_signs + 4 * j, sizeof word);
    const std::uint32_t signs =
        static_cast<std::uint32_t>(kParitySignBytes[word & 0x7F]) |
        static_cast<std::uint32_t>(kParitySignBytes[(word >> 7) & 0x7F]) << 8 |
        static_cast<std::uint32_t>(kParitySignBytes[(word >> 14) & 0x7F]) << 16 |
        static_cast<std::uint32_t>(kParitySignBytes[(word >> 21) & 0x7F]) << 24;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * j), signed_q6_k_quants(halves, signs));
  }
}

}  // namespace

void rewrite_iq3_xxs_avx2(const std::byte* src, std::byte* dst, std::int64_t blocks) {
  // Q6_K scale i (16 elements) is 1 + 2 times sub-block i / 2's scale (its word's top nibble).
  rewrite_as_q6_k_blocks<BlockIQ3_XXS>(
      src, dst, blocks, [](const BlockIQ3_XXS& in, std::uint8_t* q) { iq3_xxs_quants_avx2(in, q); },
      [](const BlockIQ3_XXS& in, int i) {
        return static_cast<int>(1 + 2 * (in.scales_and_signs[4 * (i / 2) + 3] >> 4));
      },
      [](const BlockIQ3_XXS& in) { return in.d; });
}

void rewrite_iq3_s_avx2(const std::byte* src, std::byte* dst, std::int64_t blocks) {
  rewrite_iq3_s_blocks(src, dst, blocks,
                       [](const BlockIQ3_S& in, std::uint8_t* q) { iq3_s_quants_avx2(in, q); });
}

}  // namespace moed::kernels::qtile
