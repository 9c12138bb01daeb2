// Stored rows (quant_tiles.hpp) on AVX2: q2_K, iq4_xs, iq2_xxs, iq2_xs, iq2_s, q4_K, q5_K, q6_K,
// q8_0, q4_0, q4_1, q5_0 and q5_1 products over the rows as a GGUF file stores them, two weight
// rows at a time (one from each half of the rows), for CPUs without AVX-512 VNNI, which would
// otherwise repack every streamed block before the tile product (through AVX2 registers: q4_K 3.4
// GB/s repacked and multiplied against 10.3 stored, one core of the VM that measured it). Each
// sub-block's dot comes from maddubs and madd (the pair sums stay inside int16 for these quants, as
// in the AVX2 row tiles), scaled in the same madd where the scale is per sub-block; the dots are
// summed as integers (exact, so in any order), and then each row takes the float steps of
// quant_tiles.hpp in its order, which makes the results bit-identical to the row tiles'. Built with
// AVX2 and F16C flags and no contraction; called only where the CPU has them.

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "moed/kernels/quant.hpp"
#include "quant_tiles_internal.hpp"
#include "stored_rows_pairs.inc"

namespace moed::kernels::qtile {
namespace {

// For each 16-bit lane: the sum of u's two unsigned bytes times s's signed ones, times `by`'s
// 16-bit lanes, summed in pairs into 32-bit lanes.
__m256i scaled_dot(__m256i u, __m256i s, __m256i by) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), by);
}

__m256i load(const void* at) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(at));
}

// Within each 128-bit lane, 16-bit lane kLane of v in all eight.
template <int kLane>
__m256i spread16(__m256i v) {
  return _mm256_shuffle_epi8(v, _mm256_set1_epi16(static_cast<short>(0x0101 * 2 * kLane + 0x0100)));
}

// 16-bit lane kLow of v's low 128 bits in its low half, lane kHigh of its high 128 bits in its
// high half.
template <int kLow, int kHigh>
__m256i spread16(__m256i v) {
  return _mm256_blend_epi32(spread16<kLow>(v), spread16<kHigh>(v), 0xF0);
}

// Bit kFrom of each byte of v, at bit 4.
template <int kFrom>
__m256i fifth_bit(__m256i v) {
  const __m256i bit_4 = _mm256_set1_epi8(0x10);
  if constexpr (kFrom < 4) return _mm256_and_si256(_mm256_slli_epi16(v, 4 - kFrom), bit_4);
  if constexpr (kFrom > 4) return _mm256_and_si256(_mm256_srli_epi16(v, kFrom - 4), bit_4);
  return _mm256_and_si256(v, bit_4);
}

// [the sum of a's eight lanes, of b's, of c's, of d's].
__m128i four_totals(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i sums = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
  return _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
}

// out[0], out[1]: rows a and b against one activation row. A q4_K block's 32-byte group g gives
// elements 64g to 64g + 31 in its low nibbles (sub-block 2g) and the next 32 in its high ones.
// q5_K (kFive) is q4_K with a fifth bit to each quant and the same scales and float steps.
template <bool kPrefetch, bool kFive = false>
void q4_k_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
               const QuantizedActivations& x, float* out) {
  using Block = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;
  static_assert(offsetof(Block, scales) == offsetof(BlockQ4_K, scales));
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const std::uint8_t* const rows[2] = {a, b};
  __m128 acc = _mm_setzero_ps();
  for (std::int64_t k = 0; k < blocks; ++k) {
    const std::int8_t* q = x.q8_k[static_cast<std::size_t>(k)].qs;
    const __m256i scales_mins = scales_and_mins(a + sizeof(Block) * k + offsetof(Block, scales),
                                                b + sizeof(Block) * k + offsetof(Block, scales));
    const __m256i sums32 = load(x.q8_k_sums32.data() + 8 * k);
    __m256i isums[2], msums[2];
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* block = rows[r] + sizeof(Block) * k;
      if constexpr (kPrefetch) prefetch_block<sizeof(Block)>(block);
      const __m128i own =
          r == 0 ? _mm256_castsi256_si128(scales_mins) : _mm256_extracti128_si256(scales_mins, 1);
      const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(own));
      __m256i low[4], high[4];
      for (int g = 0; g < 4; ++g) {
        const __m256i v = load(block + offsetof(Block, qs) + 32 * g);
        low[g] = _mm256_and_si256(v, nibble);
        high[g] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
      }
      if constexpr (kFive) {
        const __m256i bits = load(block + offsetof(Block, qh));
        low[0] = _mm256_or_si256(low[0], fifth_bit<0>(bits));
        high[0] = _mm256_or_si256(high[0], fifth_bit<1>(bits));
        low[1] = _mm256_or_si256(low[1], fifth_bit<2>(bits));
        high[1] = _mm256_or_si256(high[1], fifth_bit<3>(bits));
        low[2] = _mm256_or_si256(low[2], fifth_bit<4>(bits));
        high[2] = _mm256_or_si256(high[2], fifth_bit<5>(bits));
        low[3] = _mm256_or_si256(low[3], fifth_bit<6>(bits));
        high[3] = _mm256_or_si256(high[3], fifth_bit<7>(bits));
      }
      const __m256i d0 = scaled_dot(low[0], load(q), spread16<0>(scales));
      const __m256i d1 = scaled_dot(high[0], load(q + 32), spread16<1>(scales));
      const __m256i d2 = scaled_dot(low[1], load(q + 64), spread16<2>(scales));
      const __m256i d3 = scaled_dot(high[1], load(q + 96), spread16<3>(scales));
      const __m256i d4 = scaled_dot(low[2], load(q + 128), spread16<4>(scales));
      const __m256i d5 = scaled_dot(high[2], load(q + 160), spread16<5>(scales));
      const __m256i d6 = scaled_dot(low[3], load(q + 192), spread16<6>(scales));
      const __m256i d7 = scaled_dot(high[3], load(q + 224), spread16<7>(scales));
      isums[r] =
          _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(d0, d1), _mm256_add_epi32(d2, d3)),
                           _mm256_add_epi32(_mm256_add_epi32(d4, d5), _mm256_add_epi32(d6, d7)));
      msums[r] = _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(own, 8)), sums32);
    }
    const __m128i totals = four_totals(isums[0], msums[0], isums[1], msums[1]);
    acc = add_k_terms(acc, totals, a + sizeof(Block) * k, b + sizeof(Block) * k,
                      x.q8_k[static_cast<std::size_t>(k)].d);
  }
  out[0] = lane_of<0>(acc);
  out[1] = lane_of<2>(acc);
}

// out[0], out[1]: rows a and b against one activation row. Per 128 elements, ql's first 32
// bytes give elements 0-31 in their low nibbles and 64-95 in their high ones, its next 32 bytes
// elements 32-63 and 96-127, and qh's 32 bytes the top two bits of elements l, 32 + l, 64 + l
// and 96 + l: each vector below holds 32 elements in order, two sub-blocks of 16.
template <bool kPrefetch>
void q6_k_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
               const QuantizedActivations& x, float* out) {
  const __m256i nibble = _mm256_set1_epi8(0x0F), top = _mm256_set1_epi8(0x30);
  const std::uint8_t* const rows[2] = {a, b};
  __m128 acc = _mm_setzero_ps();
  for (std::int64_t k = 0; k < blocks; ++k) {
    const BlockQ8_K& act = x.q8_k[static_cast<std::size_t>(k)];
    const std::int32_t* offsets = x.q8_k_offsets16.data() + (kQK / 16) * k;
    __m256i isums[2];
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* block = rows[r] + sizeof(BlockQ6_K) * k;
      if constexpr (kPrefetch) prefetch_block<sizeof(BlockQ6_K)>(block);
      const auto* scales = block + offsetof(BlockQ6_K, scales);
      __m256i isum = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        const __m256i low0 = load(block + offsetof(BlockQ6_K, ql) + 64 * h);
        const __m256i low1 = load(block + offsetof(BlockQ6_K, ql) + 64 * h + 32);
        const __m256i bits = load(block + offsetof(BlockQ6_K, qh) + 32 * h);
        const __m256i q0 = _mm256_or_si256(_mm256_and_si256(low0, nibble),
                                           _mm256_and_si256(_mm256_slli_epi16(bits, 4), top));
        const __m256i q1 = _mm256_or_si256(_mm256_and_si256(low1, nibble),
                                           _mm256_and_si256(_mm256_slli_epi16(bits, 2), top));
        const __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low0, 4), nibble),
                                           _mm256_and_si256(bits, top));
        const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low1, 4), nibble),
                                           _mm256_and_si256(_mm256_srli_epi16(bits, 2), top));
        // The half's eight scales, in both 128-bit lanes; a vector's low lane takes sub-block
        // 2j's, its high lane 2j + 1's.
        const __m256i half_scales = _mm256_broadcastsi128_si256(
            _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + 8 * h))));
        const std::int8_t* qx = act.qs + 128 * h;
        const __m256i d0 = scaled_dot(q0, load(qx), spread16<0, 1>(half_scales));
        const __m256i d1 = scaled_dot(q1, load(qx + 32), spread16<2, 3>(half_scales));
        const __m256i d2 = scaled_dot(q2, load(qx + 64), spread16<4, 5>(half_scales));
        const __m256i d3 = scaled_dot(q3, load(qx + 96), spread16<6, 7>(half_scales));
        isum = _mm256_add_epi32(
            isum, _mm256_add_epi32(_mm256_add_epi32(d0, d1), _mm256_add_epi32(d2, d3)));
      }
      // Each sub-block's scale times its offset (the quants' bias of 32 times its activations'
      // sum), taken off.
      const __m256i low_scales =
          _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales)));
      const __m256i high_scales =
          _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + 8)));
      const __m256i bias = _mm256_add_epi32(_mm256_mullo_epi32(low_scales, load(offsets)),
                                            _mm256_mullo_epi32(high_scales, load(offsets + 8)));
      isums[r] = _mm256_sub_epi32(isum, bias);
    }
    // [a's isum, b's isum] in lanes 0 and 1.
    const __m128i totals = four_totals(isums[0], isums[1], isums[0], isums[1]);
    acc = add_scaled_terms(acc, totals, a + sizeof(BlockQ6_K) * k + offsetof(BlockQ6_K, d),
                           b + sizeof(BlockQ6_K) * k + offsetof(BlockQ6_K, d), act.d);
  }
  out[0] = lane_of<0>(acc);
  out[1] = lane_of<1>(acc);
}

// out[0], out[1]: rows a and b against one activation row. Per 128 elements, byte l of the
// block's 32 quant bytes holds elements l, 32 + l, 64 + l and 96 + l at bits 0-1, 2-3, 4-5 and
// 6-7: each vector below holds 32 elements in order, two sub-blocks of 16.
template <bool kPrefetch>
void q2_k_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
               const QuantizedActivations& x, float* out) {
  const __m256i pair = _mm256_set1_epi8(0x03);
  const __m128i nibble = _mm_set1_epi8(0x0F);
  const std::uint8_t* const rows[2] = {a, b};
  __m128 acc = _mm_setzero_ps();
  for (std::int64_t k = 0; k < blocks; ++k) {
    const BlockQ8_K& act = x.q8_k[static_cast<std::size_t>(k)];
    const __m256i bsums = load(act.bsums);
    __m256i isums[2], msums[2];
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* block = rows[r] + sizeof(BlockQ2_K) * k;
      if constexpr (kPrefetch) prefetch_block<sizeof(BlockQ2_K)>(block);
      const __m128i scale_min =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + offsetof(BlockQ2_K, scales)));
      // Each half's eight scales, in both 128-bit lanes; a vector's low lane takes sub-block
      // 2s's, its high lane 2s + 1's.
      const __m128i all_scales = _mm_and_si128(scale_min, nibble);
      const __m256i scales_of_half[2] = {
          _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(all_scales)),
          _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_srli_si128(all_scales, 8)))};
      __m256i isum = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        const __m256i v = load(block + offsetof(BlockQ2_K, qs) + 32 * h);
        const __m256i half_scales = scales_of_half[h];
        const std::int8_t* qx = act.qs + 128 * h;
        const __m256i d0 =
            scaled_dot(_mm256_and_si256(v, pair), load(qx), spread16<0, 1>(half_scales));
        const __m256i d1 = scaled_dot(_mm256_and_si256(_mm256_srli_epi16(v, 2), pair),
                                      load(qx + 32), spread16<2, 3>(half_scales));
        const __m256i d2 = scaled_dot(_mm256_and_si256(_mm256_srli_epi16(v, 4), pair),
                                      load(qx + 64), spread16<4, 5>(half_scales));
        const __m256i d3 = scaled_dot(_mm256_and_si256(_mm256_srli_epi16(v, 6), pair),
                                      load(qx + 96), spread16<6, 7>(half_scales));
        isum = _mm256_add_epi32(
            isum, _mm256_add_epi32(_mm256_add_epi32(d0, d1), _mm256_add_epi32(d2, d3)));
      }
      isums[r] = isum;
      // Each sub-block's min times its activations' sum, in pairs.
      msums[r] = _mm256_madd_epi16(
          _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(scale_min, 4), nibble)), bsums);
    }
    const __m128i totals = four_totals(isums[0], msums[0], isums[1], msums[1]);
    acc = add_k_terms(acc, totals, a + sizeof(BlockQ2_K) * k + offsetof(BlockQ2_K, d),
                      b + sizeof(BlockQ2_K) * k + offsetof(BlockQ2_K, d), act.d);
  }
  out[0] = lane_of<0>(acc);
  out[1] = lane_of<2>(acc);
}

// Sub-blocks 2p and 2p + 1 of an iq4_xs block against their activations: `low` and `high` are
// the looked-up values of their indices' low and high nibbles ([2p's, 2p + 1's] each),
// `first` and `second` the activations they meet, `scales` the block's eight scales as 16-bit
// lanes in both 128-bit lanes. maddubs takes the values' magnitudes against the activations
// with their signs moved over, as the AVX2 row tiles take q8_0's, and madd scales each pair sum
// by its sub-block's scale.
template <int kPair>
__m256i iq4_xs_pair_dots(__m256i low, __m256i high, __m256i first, __m256i second, __m256i scales) {
  const __m256i scale = spread16<2 * kPair, 2 * kPair + 1>(scales);
  return _mm256_add_epi32(
      scaled_dot(_mm256_sign_epi8(low, low), _mm256_sign_epi8(first, low), scale),
      scaled_dot(_mm256_sign_epi8(high, high), _mm256_sign_epi8(second, high), scale));
}

// out[0], out[1]: rows a and b against one activation row. 32 index bytes (two sub-blocks),
// looked up in the codebook, give the sub-blocks' first 16 values (low nibbles, a 128-bit lane
// each) and their last 16 (high nibbles); the activations are paired to match.
template <bool kPrefetch>
void iq4_xs_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
                 const QuantizedActivations& x, float* out) {
  static_assert(offsetof(BlockIQ4_XS, d) == 0);
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const __m256i codebook =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4NlValues)));
  const std::uint8_t* const rows[2] = {a, b};
  __m128 acc = _mm_setzero_ps();
  for (std::int64_t k = 0; k < blocks; ++k) {
    const BlockQ8_K& act = x.q8_k[static_cast<std::size_t>(k)];
    __m256i first[4], second[4];  // per pair of sub-blocks: elements 0-15 of each, 16-31 of each
    for (int p = 0; p < 4; ++p) {
      const __m256i x0 = load(act.qs + 64 * p), x1 = load(act.qs + 64 * p + 32);
      first[p] = _mm256_permute2x128_si256(x0, x1, 0x20);
      second[p] = _mm256_permute2x128_si256(x0, x1, 0x31);
    }
    __m256i isums[2];
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* block = rows[r] + sizeof(BlockIQ4_XS) * k;
      if constexpr (kPrefetch) prefetch_block<sizeof(BlockIQ4_XS)>(block);
      const __m256i wide = iq4_xs_scales(block);
      const __m256i scales = _mm256_broadcastsi128_si256(
          _mm_packs_epi32(_mm256_castsi256_si128(wide), _mm256_extracti128_si256(wide, 1)));
      __m256i low[4], high[4];
      for (int p = 0; p < 4; ++p) {
        const __m256i q = load(block + offsetof(BlockIQ4_XS, qs) + 32 * p);
        low[p] = _mm256_shuffle_epi8(codebook, _mm256_and_si256(q, nibble));
        high[p] = _mm256_shuffle_epi8(codebook, _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble));
      }
      isums[r] = _mm256_add_epi32(
          _mm256_add_epi32(iq4_xs_pair_dots<0>(low[0], high[0], first[0], second[0], scales),
                           iq4_xs_pair_dots<1>(low[1], high[1], first[1], second[1], scales)),
          _mm256_add_epi32(iq4_xs_pair_dots<2>(low[2], high[2], first[2], second[2], scales),
                           iq4_xs_pair_dots<3>(low[3], high[3], first[3], second[3], scales)));
    }
    // [a's isum, b's isum] in lanes 0 and 1.
    const __m128i totals = four_totals(isums[0], isums[1], isums[0], isums[1]);
    acc = add_scaled_terms(acc, totals, a + sizeof(BlockIQ4_XS) * k, b + sizeof(BlockIQ4_XS) * k,
                           act.d);
  }
  out[0] = lane_of<0>(acc);
  out[1] = lane_of<1>(acc);
}

// IQ2: each sub-block's four grid octets are unsigned bytes as they are (at most 43, so maddubs's
// pair sums stay inside int16), and their signs go onto the activation; maddubs gives each 16
// elements' half in one 128-bit lane, which madd multiplies by that half's scale.
template <GgmlType kType>
__m256i iq2_sub_block_dot(const std::uint8_t* block, int j, __m256i quants) {
  std::uint64_t grid[4];
  const auto signs = static_cast<std::uint32_t>(iq2_octets<kType, 4>(block, 4 * j, grid));
  const __m256i magnitudes =
      _mm256_setr_epi64x(static_cast<long long>(grid[0]), static_cast<long long>(grid[1]),
                         static_cast<long long>(grid[2]), static_cast<long long>(grid[3]));
  // Byte e of `negative`: -1 where bit e of signs is set, else 1 (sign_epi8 keeps the activation).
  const __m256i byte_of_bit = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                               2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201));
  const __m256i spread =
      _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(signs)), byte_of_bit);
  const __m256i negative =
      _mm256_or_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(1));
  const __m256i scale = _mm256_setr_m128i(
      _mm_set1_epi16(static_cast<short>(iq2_multiplier<kType>(block, 2 * j))),
      _mm_set1_epi16(static_cast<short>(iq2_multiplier<kType>(block, 2 * j + 1))));
  return scaled_dot(magnitudes, _mm256_sign_epi8(quants, negative), scale);
}

// out[0], out[1]: rows a and b against one activation row, a sub-block of 32 at a time.
template <bool kPrefetch, GgmlType kType>
void iq2_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
              const QuantizedActivations& x, float* out) {
  constexpr std::size_t kBytes = kIq2BlockBytes<kType>;
  const std::uint8_t* const rows[2] = {a, b};
  __m128 acc = _mm_setzero_ps();
  for (std::int64_t k = 0; k < blocks; ++k) {
    const BlockQ8_K& act = x.q8_k[static_cast<std::size_t>(k)];
    __m256i isums[2];
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* block = rows[r] + kBytes * k;
      if constexpr (kPrefetch) prefetch_block<kBytes>(block);
      __m256i isum = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j)
        isum = _mm256_add_epi32(isum, iq2_sub_block_dot<kType>(block, j, load(act.qs + 32 * j)));
      isums[r] = isum;
    }
    // [a's isum, b's isum] in lanes 0 and 1.
    const __m128i totals = four_totals(isums[0], isums[1], isums[0], isums[1]);
    acc = add_iq2_terms(acc, totals, a + kBytes * k, b + kBytes * k, act.d);
  }
  out[0] = lane_of<0>(acc);
  out[1] = lane_of<1>(acc);
}

// The dot of a 32-element block's quants with an activation block's, in eight lanes: q8_0's as
// the AVX2 row tiles take it (maddubs would saturate on biased quants, so the sign moves onto
// the activation), the legacy formats' unsigned (legacy_quants) and without their offset.
template <GgmlType kType>
__m256i block_dot(const std::uint8_t* block, const BlockQ8_0& act) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i s = load(act.qs);
  if constexpr (kType == GgmlType::q8_0) {
    const __m256i w = load(block + offsetof(BlockQ8_0, qs));
    return scaled_dot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(s, w), ones);
  } else {
    return scaled_dot(legacy_quants<kType>(block), s, ones);
  }
}

// What the tile kernels add to block k's dot: nothing for q8_0, legacy_offset otherwise.
template <GgmlType kType>
__m256i block_offsets(const QuantizedActivations& x, std::int64_t k) {
  if constexpr (kType == GgmlType::q8_0)
    return _mm256_setzero_si256();
  else
    return legacy_offsets<kType>(x, k);
}

template <GgmlType kType>
std::int32_t block_offset(const QuantizedActivations& x, std::int64_t k) {
  if constexpr (kType == GgmlType::q8_0)
    return 0;
  else
    return legacy_offset<kType>(x, k);
}

// [the sum of d[0]'s lanes, of d[1]'s, ..., of d[7]'s].
__m256i eight_totals(const __m256i (&d)[8]) {
  const __m256i first =
      _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3]));
  const __m256i second =
      _mm256_hadd_epi32(_mm256_hadd_epi32(d[4], d[5]), _mm256_hadd_epi32(d[6], d[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(first, second, 0x20),
                          _mm256_permute2x128_si256(first, second, 0x31));
}

// The fp16 value at `at`.
float fp16_at(const std::uint8_t* at) {
  std::uint16_t half;
  std::memcpy(&half, at, sizeof half);
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(half)));
}

// Eight fp16 values, one from each of eight blocks `bytes` apart, the first at `first`.
template <std::int64_t kBytes>
__m256 block_scales(const std::uint8_t* first) {
  alignas(16) std::uint16_t halves[8];
  for (int j = 0; j < 8; ++j) std::memcpy(&halves[j], first + kBytes * j, sizeof halves[j]);
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(halves)));
}

// out[0], out[1]: rows a and b against one activation row, for q8_0, q4_0, q4_1, q5_0 and q5_1
// (a block: fp16 d, for q4_1 / q5_1 an fp16 min, then 32 quants). Eight blocks at a time: each
// row's eight dots are summed together, then the row adds its blocks' terms one by one, in block
// order, as the tile kernels do.
template <bool kPrefetch, GgmlType kType>
void d_and_quants_pair(const std::uint8_t* a, const std::uint8_t* b, std::int64_t blocks,
                       const QuantizedActivations& x, float* out) {
  using Block = DAndQuantsBlock<kType>;
  static_assert(offsetof(Block, d) == 0);
  constexpr bool kHasMin = legacy_has_min(kType);
  constexpr std::size_t kMin = kHasMin ? legacy_fields(kType).m : 0;
  constexpr auto kBytes = static_cast<std::int64_t>(sizeof(Block));
  const std::uint8_t* const rows[2] = {a, b};
  float acc[2] = {0.0f, 0.0f};
  std::int64_t k = 0;
  for (; k + 8 <= blocks; k += 8) {
    const __m256i offsets = block_offsets<kType>(x, k);
    const __m256 scales_x = _mm256_loadu_ps(x.q8_0_scales.data() + k);
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* first = rows[r] + kBytes * k;
      if constexpr (kPrefetch) prefetch_block<8 * sizeof(Block)>(first);
      __m256i d[8];
      for (int j = 0; j < 8; ++j)
        d[j] = block_dot<kType>(first + kBytes * j, x.q8_0[static_cast<std::size_t>(k + j)]);
      __m256 terms = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(eight_totals(d), offsets)),
                                   _mm256_mul_ps(block_scales<kBytes>(first), scales_x));
      if constexpr (kHasMin)  // plus each block's min times the activation's Q8_1 sum
        terms = _mm256_add_ps(terms, _mm256_mul_ps(block_scales<kBytes>(first + kMin),
                                                   _mm256_loadu_ps(x.q8_1_sums.data() + k)));
      alignas(32) float each[8];
      _mm256_store_ps(each, terms);
      for (const float term : each) acc[r] += term;
    }
  }
  for (; k < blocks; ++k) {  // the last blocks short of eight, one at a time
    const std::int32_t offset = block_offset<kType>(x, k);
    const float scale_x = x.q8_0_scales[static_cast<std::size_t>(k)];
    const BlockQ8_0& act = x.q8_0[static_cast<std::size_t>(k)];
    const __m256i dot_a = block_dot<kType>(rows[0] + kBytes * k, act);
    const __m256i dot_b = block_dot<kType>(rows[1] + kBytes * k, act);
    alignas(16) std::int32_t totals[4];  // [a's, b's, a's, b's]
    _mm_store_si128(reinterpret_cast<__m128i*>(totals), four_totals(dot_a, dot_b, dot_a, dot_b));
    for (int r = 0; r < 2; ++r) {
      const std::uint8_t* block = rows[r] + kBytes * k;
      float term = static_cast<float>(totals[r] + offset) * (fp16_at(block) * scale_x);
      if constexpr (kHasMin)
        term = term + fp16_at(block + kMin) * x.q8_1_sums[static_cast<std::size_t>(k)];
      acc[r] += term;
    }
  }
  out[0] = acc[0];
  out[1] = acc[1];
}

}  // namespace

void stored_rows_avx2(GgmlType type, const std::byte* rows, std::int64_t n_rows,
                      std::int64_t blocks, const QuantizedActivations* x, std::int64_t m, float* y,
                      std::int64_t y_stride) {
  const std::int64_t row_bytes =
      blocks * static_cast<std::int64_t>(ggml_type_traits(type).type_size);
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
    with_constants(type, i == 0, [&](auto format, auto prefetch) {
      constexpr GgmlType kType = decltype(format)::value;
      constexpr bool kPrefetch = decltype(prefetch)::value;
      if constexpr (kType == GgmlType::q4_k || kType == GgmlType::q5_k)
        q4_k_pair<kPrefetch, kType == GgmlType::q5_k>(a, b, blocks, x[i], out);
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
