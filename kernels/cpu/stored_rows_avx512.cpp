// Stored rows (quant_tiles.hpp): q2_K, iq4_xs, iq2_xxs, iq2_xs, iq2_s, q4_K, q5_K, q6_K, q8_0,
// q4_0, q4_1, q5_0 and q5_1 products over the rows as a GGUF file stores them, two weight rows at a
// time (one from each half of the rows) on AVX-512 VNNI. Each sub-block's dot comes from vpdpbusd;
// the dots are scaled and summed as integers (exact, so in any order), and then each row takes the
// float steps of quant_tiles.hpp in its order, which makes the results bit-identical to the row
// tiles'. Built with AVX-512 flags and no contraction; called only where the CPU has them.

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "moed/kernels/quant.hpp"
#include "quant_tiles_internal.hpp"
#include "stored_rows_pairs.inc"

namespace moed::kernels::qtile {
namespace {

// [a's 128-bit lanes 0+1, 2+3, b's 0+1, 2+3].
__m512i fold_lane_pairs(__m512i a, __m512i b) {
  return _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Per 128-bit lane L: [the sum of d0's lane L, of d1's, of d2's, of d3's].
__m512i lane_sums(__m512i d0, __m512i d1, __m512i d2, __m512i d3) {
  const __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(d0, d1), _mm512_unpackhi_epi32(d0, d1));
  const __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(d2, d3), _mm512_unpackhi_epi32(d2, d3));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
}

// Dwords 0 and 1 of 128-bit lane 0: a's and b's sums over lanes 0 and 1; of lane 2: over lanes
// 2 and 3.
__m512i half_totals(__m512i a, __m512i b) {
  const __m512i pairs = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i quads = _mm512_add_epi32(pairs, _mm512_shuffle_epi32(pairs, _MM_PERM_BADC));
  return _mm512_add_epi32(quads, _mm512_shuffle_i32x4(quads, quads, _MM_SHUFFLE(2, 3, 0, 1)));
}

// Elements 0-31 | 64-95, 32-63 | 96-127, 128-159 | 192-223 and 160-191 | 224-255 of each Q8_K
// block: the order in which a q4_K block's 64-byte halves give their low and high nibbles.
void permute_for_q4_k(const QuantizedActivations& x, std::int64_t blocks, std::int8_t* out) {
  constexpr int kPieces[8] = {0, 64, 32, 96, 128, 192, 160, 224};
  for (std::int64_t b = 0; b < blocks; ++b)
    for (int p = 0; p < 8; ++p)
      std::memcpy(out + kQK * b + 32 * p, x.q8_k[static_cast<std::size_t>(b)].qs + kPieces[p], 32);
}

// Bit 4 of each byte: the fifth bits of a q5_K block's quants in one 64-byte half (`half` 0 or
// 1) of its qs, for the low nibbles (`high` false) or the high ones. Byte l of the half's 32-byte
// group g takes bit 2g (low nibble) or 2g + 1 (high) of qh[l]; `bits` holds qh in both 256-bit
// halves, so each half shifts its own bit to bit 4.
template <int kHalf, bool kHigh>
__m512i fifth_bits(__m512i bits) {
  constexpr int kFirst = 4 * kHalf + (kHigh ? 1 : 0);  // the bit of the half's first group
  const auto to_bit_4 = [&](int from) {
    if (from < 4) return _mm512_slli_epi16(bits, static_cast<unsigned>(4 - from));
    if (from > 4) return _mm512_srli_epi16(bits, static_cast<unsigned>(from - 4));
    return bits;
  };
  return _mm512_and_si512(_mm512_mask_blend_epi64(0xF0, to_bit_4(kFirst), to_bit_4(kFirst + 2)),
                          _mm512_set1_epi8(0x10));
}

// out[0], out[1]: rows a and b against one activation row (`permuted` by permute_for_q4_k).
// q5_K (kFive) is q4_K with a fifth bit to each quant and the same scales and float steps.
template <bool kPrefetch, bool kFive = false>
void q4_k_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
               const QuantizedActivations& x, const std::int8_t* permuted, float* out) {
  using Block = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;
  static_assert(offsetof(Block, scales) == offsetof(BlockQ4_K, scales));
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  // Both rows' scales and mins come from scales_and_mins on 256 bits; the tile packer's
  // k_scales_and_mins on 512 bits cost this kernel 5-7% (q4_K 4096 x 4096 from memory, one
  // thread, 8 alternated runs: 6.39 against 6.87 GB/s): its two rows fill half a register, and
  // 512-bit shuffles leave fewer ports to the dots. The scales go into the sub-block sums' order
  // (below), the mins stay as they are.
  const __m256i sum_order = _mm256_broadcastsi128_si256(
      _mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  const std::uint8_t* const rows[2] = {a, b};
  __m128 acc = _mm_setzero_ps();
  for (std::int64_t k = 0; k < blocks; ++k) {
    const std::int8_t* q = permuted + kQK * k;
    const __m512i x0 = _mm512_loadu_si512(q), x1 = _mm512_loadu_si512(q + 64);
    const __m512i x2 = _mm512_loadu_si512(q + 128), x3 = _mm512_loadu_si512(q + 192);
    __m512i sums[2];
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* block = rows[r] + sizeof(Block) * k;
      if constexpr (kPrefetch) prefetch_block<sizeof(Block)>(block);
      const __m512i v0 = _mm512_loadu_si512(block + offsetof(Block, qs));
      const __m512i v1 = _mm512_loadu_si512(block + offsetof(Block, qs) + 64);
      __m512i w0 = _mm512_and_si512(v0, nibble);
      __m512i w1 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), nibble);
      __m512i w2 = _mm512_and_si512(v1, nibble);
      __m512i w3 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), nibble);
      if constexpr (kFive) {
        const __m512i bits = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + offsetof(Block, qh))));
        w0 = _mm512_or_si512(w0, fifth_bits<0, false>(bits));
        w1 = _mm512_or_si512(w1, fifth_bits<0, true>(bits));
        w2 = _mm512_or_si512(w2, fifth_bits<1, false>(bits));
        w3 = _mm512_or_si512(w3, fifth_bits<1, true>(bits));
      }
      const __m512i zero = _mm512_setzero_si512();
      const __m512i d0 = _mm512_dpbusd_epi32(zero, w0, x0);
      const __m512i d1 = _mm512_dpbusd_epi32(zero, w1, x1);
      const __m512i d2 = _mm512_dpbusd_epi32(zero, w2, x2);
      const __m512i d3 = _mm512_dpbusd_epi32(zero, w3, x3);
      sums[r] = lane_sums(d0, d1, d2, d3);
    }
    // Sub-block sums: a's 0, 1, 4, 5, 2, 3, 6, 7, then b's.
    const __m512i dots = fold_lane_pairs(sums[0], sums[1]);
    const __m256i scales_mins =
        _mm256_shuffle_epi8(scales_and_mins(a + sizeof(Block) * k + offsetof(Block, scales),
                                            b + sizeof(Block) * k + offsetof(Block, scales)),
                            sum_order);
    const __m512i scales = _mm512_cvtepu8_epi32(
        _mm256_castsi256_si128(_mm256_permute4x64_epi64(scales_mins, _MM_SHUFFLE(3, 1, 2, 0))));
    const __m512i mins = _mm512_cvtepu8_epi32(
        _mm256_castsi256_si128(_mm256_permute4x64_epi64(scales_mins, _MM_SHUFFLE(2, 0, 3, 1))));
    const __m512i isums = _mm512_mullo_epi32(dots, scales);
    const __m512i msums = _mm512_mullo_epi32(
        mins, _mm512_broadcast_i64x4(_mm256_loadu_si256(
                  reinterpret_cast<const __m256i*>(x.q8_k_sums32.data() + 8 * k))));
    // Per row: isum = the sum of its eight isums lanes, msum of its eight msums lanes.
    const __m512i halves = half_totals(isums, msums);
    const __m128i totals =
        _mm_unpacklo_epi64(_mm512_castsi512_si128(halves), _mm512_extracti32x4_epi32(halves, 2));
    acc = add_k_terms(acc, totals, a + sizeof(Block) * k, b + sizeof(Block) * k,
                      x.q8_k[static_cast<std::size_t>(k)].d);
  }
  out[0] = lane_of<0>(acc);
  out[1] = lane_of<2>(acc);
}

// out[0], out[1]: rows a and b against one activation row. Per 128 elements, ql's 64 bytes give
// elements 0-63 in their low nibbles and 64-127 in their high ones, and qh's 32 bytes the top two
// bits of elements l, 32 + l, 64 + l and 96 + l: each vector below holds 64 elements in order.
template <bool kPrefetch>
void q6_k_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
               const QuantizedActivations& x, float* out) {
  const __m512i nibble = _mm512_set1_epi8(0x0F), top = _mm512_set1_epi8(0x30);
  // The sums below hold sub-block 4k + L at 4L + k: scales and offsets into that order.
  const __m128i to_sum_order = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i offsets_order =
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const std::uint8_t* const rows[2] = {a, b};
  __m128 acc = _mm_setzero_ps();
  for (std::int64_t k = 0; k < blocks; ++k) {
    const BlockQ8_K& act = x.q8_k[static_cast<std::size_t>(k)];
    const __m512i offsets = _mm512_permutexvar_epi32(
        offsets_order, _mm512_loadu_si512(x.q8_k_offsets16.data() + (kQK / 16) * k));
    __m512i isums[2];
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* block = rows[r] + sizeof(BlockQ6_K) * k;
      if constexpr (kPrefetch) prefetch_block<sizeof(BlockQ6_K)>(block);
      __m512i d[4];
      for (int h = 0; h < 2; ++h) {
        const __m512i low = _mm512_loadu_si512(block + offsetof(BlockQ6_K, ql) + 64 * h);
        const __m512i bits = _mm512_broadcast_i64x4(_mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(block + offsetof(BlockQ6_K, qh) + 32 * h)));
        // Bits 0-1 (elements l) and 2-3 (32 + l) at bits 4-5; then bits 4-5 and 6-7.
        const __m512i first_top =
            _mm512_mask_blend_epi64(0xF0, _mm512_and_si512(_mm512_slli_epi16(bits, 4), top),
                                    _mm512_and_si512(_mm512_slli_epi16(bits, 2), top));
        const __m512i second_top = _mm512_mask_blend_epi64(
            0xF0, _mm512_and_si512(bits, top), _mm512_and_si512(_mm512_srli_epi16(bits, 2), top));
        const __m512i first = _mm512_or_si512(_mm512_and_si512(low, nibble), first_top);
        const __m512i second =
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(low, 4), nibble), second_top);
        d[2 * h] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), first,
                                       _mm512_loadu_si512(act.qs + 128 * h));
        d[2 * h + 1] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), second,
                                           _mm512_loadu_si512(act.qs + 128 * h + 64));
      }
      const __m512i dots = lane_sums(d[0], d[1], d[2], d[3]);
      const __m512i scales = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + offsetof(BlockQ6_K, scales))),
          to_sum_order));
      isums[r] = _mm512_mullo_epi32(_mm512_sub_epi32(dots, offsets), scales);
    }
    // [a's isum, b's isum] in lanes 0 and 1.
    const __m512i halves = half_totals(isums[0], isums[1]);
    const __m128i totals =
        _mm_add_epi32(_mm512_castsi512_si128(halves), _mm512_extracti32x4_epi32(halves, 2));
    acc = add_scaled_terms(acc, totals, a + sizeof(BlockQ6_K) * k + offsetof(BlockQ6_K, d),
                           b + sizeof(BlockQ6_K) * k + offsetof(BlockQ6_K, d), act.d);
  }
  out[0] = lane_of<0>(acc);
  out[1] = lane_of<1>(acc);
}

// out[0], out[1]: rows a and b against one activation row. A block's 64 quant bytes hold, at
// bits 2s, 2s + 1 of byte 32h + l, element 128h + 32s + l: shifted by 2s and masked, they are
// elements 32s .. 32s + 31 and 128 + 32s .. 128 + 32s + 31 in order, four sub-blocks of 16.
template <bool kPrefetch>
void q2_k_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
               const QuantizedActivations& x, float* out) {
  const __m512i pair = _mm512_set1_epi8(0x03);
  const __m128i nibble = _mm_set1_epi8(0x0F);
  // lane_sums below holds the dot of sub-block 2s + (L & 1) + 8 (L >> 1) at dword 4L + s.
  const __m128i to_sum_order = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
  const std::uint8_t* const rows[2] = {a, b};
  __m128 acc = _mm_setzero_ps();
  for (std::int64_t k = 0; k < blocks; ++k) {
    const BlockQ8_K& act = x.q8_k[static_cast<std::size_t>(k)];
    __m512i xs[4];
    for (int s = 0; s < 4; ++s)
      xs[s] = _mm512_inserti64x4(
          _mm512_castsi256_si512(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act.qs + 32 * s))),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act.qs + 128 + 32 * s)), 1);
    const __m512i bsums =
        _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(act.bsums)));
    __m512i isums[2], msums[2];
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* block = rows[r] + sizeof(BlockQ2_K) * k;
      if constexpr (kPrefetch) prefetch_block<sizeof(BlockQ2_K)>(block);
      const __m512i v = _mm512_loadu_si512(block + offsetof(BlockQ2_K, qs));
      const __m512i zero = _mm512_setzero_si512();
      const __m512i d0 = _mm512_dpbusd_epi32(zero, _mm512_and_si512(v, pair), xs[0]);
      const __m512i d1 =
          _mm512_dpbusd_epi32(zero, _mm512_and_si512(_mm512_srli_epi16(v, 2), pair), xs[1]);
      const __m512i d2 =
          _mm512_dpbusd_epi32(zero, _mm512_and_si512(_mm512_srli_epi16(v, 4), pair), xs[2]);
      const __m512i d3 =
          _mm512_dpbusd_epi32(zero, _mm512_and_si512(_mm512_srli_epi16(v, 6), pair), xs[3]);
      const __m128i scale_min =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + offsetof(BlockQ2_K, scales)));
      const __m512i scales =
          _mm512_cvtepu8_epi32(_mm_shuffle_epi8(_mm_and_si128(scale_min, nibble), to_sum_order));
      const __m512i mins =
          _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(scale_min, 4), nibble));
      // Every product fits 16 bits (|dot| <= 16 * 3 * 127, |bsum| <= 16 * 127) and the scales'
      // and mins' upper halves are zero: one 16-bit multiply-add gives each 32-bit product.
      isums[r] = _mm512_madd_epi16(lane_sums(d0, d1, d2, d3), scales);
      msums[r] = _mm512_madd_epi16(mins, bsums);
    }
    // [a's isum, a's msum, b's isum, b's msum].
    const __m512i halves =
        half_totals(fold_lane_pairs(isums[0], isums[1]), fold_lane_pairs(msums[0], msums[1]));
    const __m128i totals =
        _mm_unpacklo_epi64(_mm512_castsi512_si128(halves), _mm512_extracti32x4_epi32(halves, 2));
    acc = add_k_terms(acc, totals, a + sizeof(BlockQ2_K) * k + offsetof(BlockQ2_K, d),
                      b + sizeof(BlockQ2_K) * k + offsetof(BlockQ2_K, d), act.d);
  }
  out[0] = lane_of<0>(acc);
  out[1] = lane_of<2>(acc);
}

// out[0], out[1]: rows a and b against one activation row. 64 bytes of a block's qs are four
// sub-blocks' indices, each looked up in the codebook biased by 128 (as q8_0's quants are
// stored): the low nibbles give each sub-block's first 16 values in one 128-bit lane, the high
// nibbles its last 16; lanes are then paired so that each vector holds 64 elements in order.
template <bool kPrefetch>
void iq4_xs_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
                 const QuantizedActivations& x, float* out) {
  static_assert(offsetof(BlockIQ4_XS, d) == 0);
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const __m512i codebook = _mm512_broadcast_i32x4(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4NlBiased.data())));
  // [low lane 0, high lane 0, low lane 1, high lane 1] and the same for lanes 2 and 3.
  const __m512i first_pair = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
  const __m512i second_pair = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  // lane_sums below holds the dot of elements 16 (4c + L) .. 16 (4c + L) + 15 at dword 4L + c,
  // of sub-block 2c + L / 2.
  const __m512i sixteens_order =
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i scales_order = _mm512_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6, 1, 3, 5, 7, 1, 3, 5, 7);
  const std::uint8_t* const rows[2] = {a, b};
  __m128 acc = _mm_setzero_ps();
  for (std::int64_t k = 0; k < blocks; ++k) {
    const BlockQ8_K& act = x.q8_k[static_cast<std::size_t>(k)];
    // 128 times each 16 elements' sum: the codebook's bias.
    const __m512i offsets = _mm512_slli_epi32(
        _mm512_permutexvar_epi32(sixteens_order,
                                 _mm512_loadu_si512(x.q8_k_offsets16.data() + (kQK / 16) * k)),
        2);
    __m512i isums[2];
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* block = rows[r] + sizeof(BlockIQ4_XS) * k;
      if constexpr (kPrefetch) prefetch_block<sizeof(BlockIQ4_XS)>(block);
      __m512i d[4];
      for (int h = 0; h < 2; ++h) {
        const __m512i q = _mm512_loadu_si512(block + offsetof(BlockIQ4_XS, qs) + 64 * h);
        const __m512i low = _mm512_shuffle_epi8(codebook, _mm512_and_si512(q, nibble));
        const __m512i high =
            _mm512_shuffle_epi8(codebook, _mm512_and_si512(_mm512_srli_epi16(q, 4), nibble));
        d[2 * h] = _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                       _mm512_permutex2var_epi64(low, first_pair, high),
                                       _mm512_loadu_si512(act.qs + 128 * h));
        d[2 * h + 1] = _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                           _mm512_permutex2var_epi64(low, second_pair, high),
                                           _mm512_loadu_si512(act.qs + 128 * h + 64));
      }
      const __m512i scales =
          _mm512_permutexvar_epi32(scales_order, _mm512_castsi256_si512(iq4_xs_scales(block)));
      isums[r] =
          _mm512_mullo_epi32(_mm512_sub_epi32(lane_sums(d[0], d[1], d[2], d[3]), offsets), scales);
    }
    // [a's isum, b's isum] in lanes 0 and 1.
    const __m512i halves = half_totals(isums[0], isums[1]);
    const __m128i totals =
        _mm_add_epi32(_mm512_castsi512_si128(halves), _mm512_extracti32x4_epi32(halves, 2));
    acc = add_scaled_terms(acc, totals, a + sizeof(BlockIQ4_XS) * k, b + sizeof(BlockIQ4_XS) * k,
                           act.d);
  }
  out[0] = lane_of<0>(acc);
  out[1] = lane_of<1>(acc);
}

// Elements 64c..64c + 63 (groups 8c..8c + 7) of an IQ2 block: their magnitudes as unsigned bytes
// and their signs as a mask (iq2_octets).
struct Iq2Quarter {
  __m512i magnitudes;
  __mmask64 negative;
};
template <GgmlType kType>
Iq2Quarter iq2_quarter(const std::uint8_t* block, int c) {
  std::uint64_t grid[8];
  const std::uint64_t signs = iq2_octets<kType, 8>(block, 8 * c, grid);
  return {_mm512_setr_epi64(static_cast<long long>(grid[0]), static_cast<long long>(grid[1]),
                            static_cast<long long>(grid[2]), static_cast<long long>(grid[3]),
                            static_cast<long long>(grid[4]), static_cast<long long>(grid[5]),
                            static_cast<long long>(grid[6]), static_cast<long long>(grid[7])),
          signs};
}

// The IQ2 block's 16 multipliers 2 * scale + 1, one per 16 elements, as 32-bit lanes.
template <GgmlType kType>
__m512i iq2_scales(const std::uint8_t* block) {
  __m512i scales;
  if constexpr (kType == GgmlType::iq2_xxs) {
    // Sub-block j's scale is the top nibble of word 2j + 1 of qs; each covers two halves.
    const __m512i words = _mm512_loadu_si512(block + offsetof(BlockIQ2_XXS, qs));
    const __m512i odd = _mm512_setr_epi32(1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15);
    scales = _mm512_srli_epi32(_mm512_permutexvar_epi32(odd, words), 28);
  } else {
    constexpr std::size_t kScales =
        kType == GgmlType::iq2_xs ? offsetof(BlockIQ2_XS, scales) : offsetof(BlockIQ2_S, scales);
    std::uint64_t bytes;
    std::memcpy(&bytes, block + kScales, sizeof bytes);
    const __m128i packed = _mm_cvtsi64_si128(static_cast<long long>(bytes));
    const __m128i nibble = _mm_set1_epi8(0x0F);
    const __m128i halves = _mm_unpacklo_epi8(_mm_and_si128(packed, nibble),
                                             _mm_and_si128(_mm_srli_epi16(packed, 4), nibble));
    scales = _mm512_cvtepu8_epi32(halves);
  }
  return _mm512_add_epi32(_mm512_slli_epi32(scales, 1), _mm512_set1_epi32(1));
}

// out[0], out[1]: rows a and b against one activation row. Each quarter's magnitudes meet the
// activation negated where the weight is negative (|quant| <= 127, so nothing overflows), which
// needs no bias; each 32-bit lane of a quarter's dot is four products of one 16-element half,
// multiplied there by its scale and summed over the block as integers.
template <bool kPrefetch, GgmlType kType>
void iq2_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
              const QuantizedActivations& x, float* out) {
  constexpr std::size_t kBytes = kIq2BlockBytes<kType>;
  const std::uint8_t* const rows[2] = {a, b};
  __m128 acc = _mm_setzero_ps();
  for (std::int64_t k = 0; k < blocks; ++k) {
    const BlockQ8_K& act = x.q8_k[static_cast<std::size_t>(k)];
    __m512i isums[2];
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* block = rows[r] + kBytes * k;
      if constexpr (kPrefetch) prefetch_block<kBytes>(block);
      const __m512i scales = iq2_scales<kType>(block);
      __m512i isum = _mm512_setzero_si512();
      for (int c = 0; c < 4; ++c) {
        const Iq2Quarter quarter = iq2_quarter<kType>(block, c);
        const __m512i quants = _mm512_loadu_si512(act.qs + 64 * c);
        const __m512i signed_quants =
            _mm512_mask_sub_epi8(quants, quarter.negative, _mm512_setzero_si512(), quants);
        const __m512i dot =
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), quarter.magnitudes, signed_quants);
        const __m512i quarter_scales = _mm512_permutexvar_epi32(
            _mm512_add_epi32(_mm512_set1_epi32(4 * c),
                             _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3)),
            scales);
        isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(dot, quarter_scales));
      }
      isums[r] = isum;
    }
    const __m512i halves = half_totals(isums[0], isums[1]);
    const __m128i totals =
        _mm_add_epi32(_mm512_castsi512_si128(halves), _mm512_extracti32x4_epi32(halves, 2));
    acc = add_iq2_terms(acc, totals, a + kBytes * k, b + kBytes * k, act.d);
  }
  out[0] = lane_of<0>(acc);
  out[1] = lane_of<1>(acc);
}

// A 32-element block's quants in element order, as unsigned bytes for vpdpbusd: q8_0's biased
// by 128, the legacy formats' as they are (legacy_quants); the activation's offset (-128 times
// its quants' sum for q8_0, legacy_offset otherwise) restores the dot.
template <GgmlType kType>
__m256i block_quants(const std::uint8_t* block) {
  if constexpr (kType == GgmlType::q8_0)
    return _mm256_xor_si256(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + offsetof(BlockQ8_0, qs))),
        _mm256_set1_epi8(static_cast<char>(0x80)));
  else
    return legacy_quants<kType>(block);
}

template <GgmlType kType>
std::int32_t block_offset(const QuantizedActivations& x, std::int64_t k) {
  if constexpr (kType == GgmlType::q8_0)
    return x.q8_0_offset[static_cast<std::size_t>(k)];
  else
    return legacy_offset<kType>(x, k);
}

// The offsets of activation blocks k to k + 7.
template <GgmlType kType>
__m256i block_offsets(const QuantizedActivations& x, std::int64_t k) {
  if constexpr (kType == GgmlType::q8_0)
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q8_0_offset.data() + k));
  else
    return legacy_offsets<kType>(x, k);
}

// out[0], out[1]: rows a and b against one activation row, for q8_0, q4_0, q4_1, q5_0 and q5_1
// (a block: fp16 d, for q4_1 / q5_1 an fp16 min, then 32 quants). Eight blocks at a time: each
// block's quants of both rows fill one register (a's, then b's; block_quants), and each row then
// adds its blocks' terms one by one, in block order, as the tile kernels do.
template <bool kPrefetch, GgmlType kType>
void d_and_quants_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
                       const QuantizedActivations& x, float* out) {
  using Block = DAndQuantsBlock<kType>;
  static_assert(offsetof(Block, d) == 0);
  constexpr bool kHasMin = legacy_has_min(kType);
  constexpr std::size_t kMin = kHasMin ? legacy_fields(kType).m : 0;
  constexpr auto kBytes = static_cast<std::int64_t>(sizeof(Block));
  // Terms come as [a's blocks 0-3, b's 0-3, a's 4-7, b's 4-7]; the activations' per-block
  // values are spread to match.
  const __m512i spread = _mm512_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7);
  // Byte offsets of the 16 weight scales from a's first block of eight, in the terms' order.
  const std::int64_t b_from_a = b - a;
  const __m512i scale_at = _mm512_add_epi32(
      _mm512_mullo_epi32(spread, _mm512_set1_epi32(static_cast<std::int32_t>(kBytes))),
      _mm512_maskz_set1_epi32(0xF0F0, static_cast<std::int32_t>(b_from_a)));
  const auto pair_quants = [&](const std::uint8_t* block) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(block_quants<kType>(block)),
                              block_quants<kType>(block + b_from_a), 1);
  };
  const auto activations = [&](std::int64_t k) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(x.q8_0[static_cast<std::size_t>(k)].qs)));
  };
  __m128 acc = _mm_setzero_ps();  // [a's sum, b's sum, -, -]
  std::int64_t k = 0;
  for (; k + 8 <= blocks; k += 8) {
    const std::uint8_t* a8 = a + kBytes * k;
    if constexpr (kPrefetch) {
      prefetch_block<8 * sizeof(Block)>(a8);
      prefetch_block<8 * sizeof(Block)>(b + kBytes * k);
    }
    __m512i d[8];
    for (int j = 0; j < 8; ++j)
      d[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), pair_quants(a8 + kBytes * j),
                                 activations(k + j));
    const __m512i dots =
        fold_lane_pairs(lane_sums(d[0], d[1], d[2], d[3]), lane_sums(d[4], d[5], d[6], d[7]));
    const __m512i offsets =
        _mm512_permutexvar_epi32(spread, _mm512_castsi256_si512(block_offsets<kType>(x, k)));
    const __m512 scales_x = _mm512_permutexvar_ps(
        spread, _mm512_castps256_ps512(_mm256_loadu_ps(x.q8_0_scales.data() + k)));
    // Each gathered dword starts with a block's fp16 d.
    const __m512 scales_w =
        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(scale_at, a8, 1)));
    __m512 terms = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(dots, offsets)),
                                 _mm512_mul_ps(scales_w, scales_x));
    if constexpr (kHasMin) {  // plus each block's min times the activation's Q8_1 sum
      const __m512 mins_w =
          _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(scale_at, a8 + kMin, 1)));
      const __m512 sums_x = _mm512_permutexvar_ps(
          spread, _mm512_castps256_ps512(_mm256_loadu_ps(x.q8_1_sums.data() + k)));
      terms = _mm512_add_ps(terms, _mm512_mul_ps(mins_w, sums_x));
    }
    for (int j = 0; j < 8; ++j) {
      const int first = j < 4 ? j : j + 4;  // a's term for block j; b's is 4 further
      acc = _mm_add_ps(
          acc, _mm512_castps512_ps128(_mm512_permutexvar_ps(
                   _mm512_setr_epi32(first, first + 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
                   terms)));
    }
  }
  for (; k < blocks; ++k) {  // the last blocks short of eight, one at a time
    const std::uint8_t* wa = a + kBytes * k;
    const __m512i dot =
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), pair_quants(wa), activations(k));
    const std::int32_t offset = block_offset<kType>(x, k);
    std::uint16_t a_d, b_d;
    std::memcpy(&a_d, wa, sizeof a_d);
    std::memcpy(&b_d, wa + b_from_a, sizeof b_d);
    const __m128 isums =
        _mm_cvtepi32_ps(_mm_setr_epi32(_mm512_mask_reduce_add_epi32(0x00FF, dot) + offset,
                                       _mm512_mask_reduce_add_epi32(0xFF00, dot) + offset, 0, 0));
    const __m128 scales =
        _mm_mul_ps(_mm_cvtph_ps(_mm_setr_epi16(static_cast<short>(a_d), static_cast<short>(b_d), 0,
                                               0, 0, 0, 0, 0)),
                   _mm_set1_ps(x.q8_0_scales[static_cast<std::size_t>(k)]));
    __m128 terms = _mm_mul_ps(isums, scales);
    if constexpr (kHasMin) {
      std::uint16_t a_m, b_m;
      std::memcpy(&a_m, wa + kMin, sizeof a_m);
      std::memcpy(&b_m, wa + b_from_a + kMin, sizeof b_m);
      const __m128 mins = _mm_cvtph_ps(
          _mm_setr_epi16(static_cast<short>(a_m), static_cast<short>(b_m), 0, 0, 0, 0, 0, 0));
      terms = _mm_add_ps(terms,
                         _mm_mul_ps(mins, _mm_set1_ps(x.q8_1_sums[static_cast<std::size_t>(k)])));
    }
    acc = _mm_add_ps(acc, terms);
  }
  out[0] = lane_of<0>(acc);
  out[1] = lane_of<1>(acc);
}

}  // namespace

void stored_rows_avx512(GgmlType type, const std::byte* rows, std::int64_t n_rows,
                        std::int64_t blocks, const QuantizedActivations* x, std::int64_t m,
                        float* y, std::int64_t y_stride) {
  const std::int64_t row_bytes =
      blocks * static_cast<std::int64_t>(ggml_type_traits(type).type_size);
  // q4_K's and q5_K's activations in their nibbles' order, once per call and activation row.
  const bool nibbles = type == GgmlType::q4_k || type == GgmlType::q5_k;
  thread_local std::vector<std::int8_t> permuted;
  if (nibbles) {
    permuted.resize(static_cast<std::size_t>(m * blocks * kQK));
    for (std::int64_t i = 0; i < m; ++i)
      permute_for_q4_k(x[i], blocks, permuted.data() + i * blocks * kQK);
  }
  if (type == GgmlType::iq2_xxs || type == GgmlType::iq2_xs || type == GgmlType::iq2_s) {
    with_iq2_constant(type, [&](auto format) {
      constexpr GgmlType kType = decltype(format)::value;
      over_row_pairs(rows, n_rows, row_bytes, m, y, y_stride,
                     [&](std::int64_t i, const std::uint8_t* a, const std::uint8_t* b, float* out) {
                       if (i == 0)
                         iq2_pair<true, kType>(a, b, blocks, x[i], out);
                       else
                         iq2_pair<false, kType>(a, b, blocks, x[i], out);
                     });
    });
    return;
  }
  // The first activation row streams the weights and asks for them ahead.
  const auto pair = [&](std::int64_t i, const std::uint8_t* a, const std::uint8_t* b, float* out) {
    const std::int8_t* own = nibbles ? permuted.data() + i * blocks * kQK : nullptr;
    with_constants(type, i == 0, [&](auto format, auto prefetch) {
      constexpr GgmlType kType = decltype(format)::value;
      constexpr bool kPrefetch = decltype(prefetch)::value;
      if constexpr (kType == GgmlType::q4_k || kType == GgmlType::q5_k)
        q4_k_pair<kPrefetch, kType == GgmlType::q5_k>(a, b, blocks, x[i], own, out);
      else if constexpr (kType == GgmlType::q6_k)
        q6_k_pair<kPrefetch>(a, b, blocks, x[i], out);
      else if constexpr (kType == GgmlType::q2_k)
        q2_k_pair<kPrefetch>(a, b, blocks, x[i], out);
      else if constexpr (kType == GgmlType::iq4_xs)
        iq4_xs_pair<kPrefetch>(a, b, blocks, x[i], out);
      else
        d_and_quants_pair<kPrefetch, kType>(a, b, blocks, x[i], out);
    });
  };
  over_row_pairs(rows, n_rows, row_bytes, m, y, y_stride, pair);
}

}  // namespace moed::kernels::qtile
