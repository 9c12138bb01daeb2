// Row-tile packing for AVX-512 (F, BW, VL, VBMI): a whole tile's block at once, sixteen rows moved
// through registers so every store is a full 64-byte line. The scalar packer writes four bytes
// per store, which held the disk tier to 3-4 GB/s of q4_K. Byte for byte the scalar packer's
// output (tested); built with those flags, called only when the CPU has them.

#include <immintrin.h>

#include <cstddef>
#include <cstring>

#include "moed/kernels/quant.hpp"
#include "quant_tiles_internal.hpp"

namespace moed::kernels::qtile {
namespace {

using Rows = const std::uint8_t* const*;

// kStream: streaming (non-temporal) where the line is aligned, for a packed block that goes to a
// buffer not read again before it leaves the caches, where reading its lines in for ownership was
// wasted (q4_K_M at a 25% budget: packing 1.2-1.4 s -> 0.9-1.1 s over 95 tokens); pack_tile_group
// fences each group. Not for a group packed to be multiplied at once (stored rows' prefill).
template <bool kStream>
void store_line(std::byte* at, __m512i line) {
  if (kStream && (reinterpret_cast<std::uintptr_t>(at) & 63) == 0)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(at), line);
  else
    _mm512_storeu_si512(at, line);
}

// 32 bytes of row i in the low half and of row i + 8 in the high half.
__m512i two_rows(Rows rows, int i, std::size_t offset) {
  const auto* low = reinterpret_cast<const __m256i*>(rows[i] + offset);
  const auto* high = reinterpret_cast<const __m256i*>(rows[i + 8] + offset);
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(low)),
                            _mm256_loadu_si256(high), 1);
}

// v[i] holds dwords 0..7 of row i (low half) and of row i + 8 (high half). Afterwards v[c] holds
// dword c of rows 0..15 in order: the tile's line for that dword.
void transpose_rows(__m512i* v) {
  __m512i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);      // per lane: .0 .1 | .4 .5
    t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);  // .2 .3 | .6 .7
  }
  for (int i = 0; i < 2; ++i) {  // rows 0-3 from t[0..3], rows 4-7 from t[4..7]
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);          // .0 | .4
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);      // .1 | .5
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);  // .2 | .6
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);  // .3 | .7
  }
  const __m512i lanes_0_2 = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
  const __m512i lanes_1_3 = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
  for (int c = 0; c < 4; ++c) {
    v[c] = _mm512_permutex2var_epi64(u[c], lanes_0_2, u[4 + c]);
    v[c + 4] = _mm512_permutex2var_epi64(u[c], lanes_1_3, u[4 + c]);
  }
}

// Eight lines, one per dword of a 32-byte field of the rows.
struct Lines {
  __m512i v[8];
};

// The 8 dwords at `offset` of every row, as 8 lines.
Lines row_dwords(Rows rows, std::size_t offset) {
  Lines lines;
  for (int i = 0; i < 8; ++i) lines.v[i] = two_rows(rows, i, offset);
  transpose_rows(lines.v);
  return lines;
}

void copy_halves(Rows rows, std::size_t offset, std::byte* out) {
  for (int r = 0; r < kTileRows; ++r) std::memcpy(out + 2 * r, rows[r] + offset, 2);
}

// 16 bytes per row, as 16 lines of the rows' bytes: out[16 * o + r] = byte o of row r.
// `row_bytes` turns a row's 16 loaded bytes (one per 128-bit lane, four rows per register)
// into the 16 it contributes.
template <bool kStream, typename RowBytes>
void transpose_bytes(Rows rows, std::size_t offset, RowBytes row_bytes, std::byte* out) {
  __m512i m[4];
  for (int q = 0; q < 4; ++q) {
    __m512i v = _mm512_castsi128_si512(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * q] + offset)));
    v = _mm512_inserti32x4(
        v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * q + 1] + offset)), 1);
    v = _mm512_inserti32x4(
        v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * q + 2] + offset)), 2);
    v = _mm512_inserti32x4(
        v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * q + 3] + offset)), 3);
    m[q] = row_bytes(v);
  }
  // Output byte 16 * j + r of line k is byte 4k + j of row r, which lies in m[r / 4] at
  // 16 * (r % 4) + 4k + j; rows 0-7 come from m[0..1], rows 8-15 from m[2..3].
  struct Indices {
    alignas(64) std::uint8_t first[4][64];
    alignas(64) std::uint8_t second[4][64];
  };
  static const Indices indices = [] {
    Indices ix{};
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 4; ++j)
        for (int r = 0; r < 16; ++r) {
          const int source = 64 * ((r / 4) % 2) + 16 * (r % 4) + 4 * k + j;
          (r < 8 ? ix.first : ix.second)[k][16 * j + r] = static_cast<std::uint8_t>(source);
        }
    return ix;
  }();
  constexpr __mmask64 kRows0To7 = 0x00FF00FF00FF00FFull;
  for (int k = 0; k < 4; ++k) {
    const __m512i first =
        _mm512_maskz_permutex2var_epi8(kRows0To7, m[0], _mm512_load_si512(indices.first[k]), m[1]);
    const __m512i second = _mm512_maskz_permutex2var_epi8(
        ~kRows0To7, m[2], _mm512_load_si512(indices.second[k]), m[3]);
    store_line<kStream>(out + 64 * k, _mm512_or_si512(first, second));
  }
}

// Stored, one 32-byte chunk of quants gives each element's low nibble to one sub-block and its
// high nibble to another; each eight bytes of a row make one line's four bytes per nibble half
// (bytes 0-3 in the low nibbles, 4-7 in the high). `low_line` and `high_line` number the lines
// of the chunk's first eight bytes; the next eight bytes go one line further.
template <bool kStream>
void pack_nibble_chunk(Rows rows, std::size_t offset, std::byte* lines, int low_line,
                       int high_line) {
  const __m512i nibbles = _mm512_set1_epi8(0x0F);
  __m512i v[8];
  for (int i = 0; i < 8; ++i) {
    const __m512i word = two_rows(rows, i, offset);
    const __m512i low = _mm512_and_si512(word, nibbles);
    const __m512i high = _mm512_and_si512(_mm512_srli_epi64(word, 4), nibbles);
    // Per 64-bit word, its low dword gets the upper four bytes' nibbles in its high nibbles.
    const __m512i low_pairs = _mm512_or_si512(low, _mm512_srli_epi64(low, 28));
    const __m512i high_pairs = _mm512_or_si512(high, _mm512_srli_epi64(high, 28));
    v[i] = _mm512_mask_blend_epi32(0xAAAA, low_pairs, _mm512_slli_epi64(high_pairs, 32));
  }
  transpose_rows(v);
  for (int p = 0; p < 4; ++p) {
    store_line<kStream>(lines + 64 * (low_line + p), v[2 * p]);
    store_line<kStream>(lines + 64 * (high_line + p), v[2 * p + 1]);
  }
}

// Gathers bit fields across dwords: line o (at out + line_stride * o) gets in byte k, at bits
// `width * d`, the `width` bits at `width * o` of byte k of dword `first + d` (d < 8 / width), for
// every row at once.
template <bool kStream>
void pack_bit_lines(const Lines& dwords, int first, int width, int lines, std::byte* out,
                    std::int64_t line_stride) {
  const int per_byte = 8 / width;
  for (int o = 0; o < lines; ++o) {
    __m512i line = _mm512_setzero_si512();
    for (int d = 0; d < per_byte; ++d) {
      const int shift = width * (d - o);
      const __m512i source = dwords.v[first + d];
      const __m512i moved = shift >= 0 ? _mm512_sll_epi32(source, _mm_cvtsi32_si128(shift))
                                       : _mm512_srl_epi32(source, _mm_cvtsi32_si128(-shift));
      // line | (moved & field << width * d): bit select in one ternary-logic op.
      const __m512i field = _mm512_set1_epi8(static_cast<char>(((1 << width) - 1) << (width * d)));
      line = _mm512_ternarylogic_epi32(line, moved, field, 0xF8);
    }
    store_line<kStream>(out + line_stride * o, line);
  }
}

// Per row: the eight 6-bit scales, then the eight mins (q4k_scale_min), from the 12 stored bytes.
__m512i k_scales_and_mins(__m512i s) {
  const __m512i pick_low =
      _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
  const __m512i keep_low = _mm512_broadcast_i32x4(
      _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0));
  const __m512i keep_high =
      _mm512_broadcast_i32x4(_mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15));
  const __m512i pick_top = _mm512_broadcast_i32x4(
      _mm_setr_epi8(-128, -128, -128, -128, 0, 1, 2, 3, -128, -128, -128, -128, 4, 5, 6, 7));
  const __m512i picked = _mm512_shuffle_epi8(s, pick_low);
  const __m512i low = _mm512_and_si512(picked, keep_low);
  const __m512i high = _mm512_and_si512(_mm512_srli_epi16(picked, 4), keep_high);
  // Sub-blocks 4-7 take the two spare top bits of bytes 0-7 as their bits 4-5.
  const __m512i top = _mm512_and_si512(_mm512_srli_epi16(_mm512_shuffle_epi8(s, pick_top), 2),
                                       _mm512_set1_epi8(0x30));
  return _mm512_ternarylogic_epi32(low, high, top, 0xFE);
}

template <bool kStream>
void pack_q8_0(Rows rows, std::byte* out) {
  copy_halves(rows, offsetof(BlockQ8_0, d), out);
  const auto lines = row_dwords(rows, offsetof(BlockQ8_0, qs));
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int g = 0; g < 8; ++g)
    store_line<kStream>(out + kQ8_0TileQuants + 64 * g, _mm512_xor_si512(lines.v[g], bias));
}

// q4_0, q4_1, q5_0, q5_1: a row's 16 quant bytes are its dwords of the tile's four lines as
// they are, and its fifth bits (q5_*) one dword of the fifth-bit line.
template <bool kStream>
void pack_legacy(GgmlType type, Rows rows, std::byte* out) {
  copy_halves(rows, 0, out);
  const auto [m_offset, qh, qs] = legacy_fields(type);
  if (m_offset) copy_halves(rows, m_offset, out + kLegacyTileMins);
  // m[q], lane L: row 4L + q's quants. A 4 x 4 dword transpose within each lane then makes
  // line p, lane L: dword p of rows 4L .. 4L + 3.
  __m512i m[4];
  for (int q = 0; q < 4; ++q) {
    __m512i v =
        _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[q] + qs)));
    for (int lane = 1; lane < 4; ++lane) {
      const __m128i row =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 * lane + q] + qs));
      v = lane == 1   ? _mm512_inserti32x4(v, row, 1)
          : lane == 2 ? _mm512_inserti32x4(v, row, 2)
                      : _mm512_inserti32x4(v, row, 3);
    }
    m[q] = v;
  }
  const __m512i t0 = _mm512_unpacklo_epi32(m[0], m[1]), t1 = _mm512_unpackhi_epi32(m[0], m[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(m[2], m[3]), t3 = _mm512_unpackhi_epi32(m[2], m[3]);
  std::byte* lines = out + legacy_tile_quants(type);
  store_line<kStream>(lines, _mm512_unpacklo_epi64(t0, t2));
  store_line<kStream>(lines + 64, _mm512_unpackhi_epi64(t0, t2));
  store_line<kStream>(lines + 128, _mm512_unpacklo_epi64(t1, t3));
  store_line<kStream>(lines + 192, _mm512_unpackhi_epi64(t1, t3));
  if (!qh) return;
  // Per row, bit 4p + k of qh goes to bit 2p of byte k and bit 16 + 4p + k to bit 2p + 1: the
  // scalar packer's carry-free multiply by 2^0 + 2^7 + 2^14 + 2^21, sixteen rows at once.
  alignas(64) std::uint32_t fifth[kTileRows];
  for (int r = 0; r < kTileRows; ++r) std::memcpy(&fifth[r], rows[r] + qh, sizeof fifth[r]);
  const __m512i all = _mm512_load_si512(fifth);
  const __m512i nibble = _mm512_set1_epi32(0xF), spread = _mm512_set1_epi32(0x00204081);
  const __m512i low_bit = _mm512_set1_epi32(0x01010101);
  __m512i bits = _mm512_setzero_si512();
  for (int p = 0; p < 4; ++p)
    for (int half = 0; half < 2; ++half) {
      const __m512i field =
          _mm512_and_si512(_mm512_srl_epi32(all, _mm_cvtsi32_si128(16 * half + 4 * p)), nibble);
      const __m512i spread_bits = _mm512_and_si512(_mm512_mullo_epi32(field, spread), low_bit);
      bits = _mm512_or_si512(bits, _mm512_sll_epi32(spread_bits, _mm_cvtsi32_si128(2 * p + half)));
    }
  store_line<kStream>(out + legacy_tile_high(type), bits);
}

// Each format from the moves above, as the AVX2 packer does it.
#include "quant_tiles_pack_formats.inc"

}  // namespace

void pack_tile_block_avx512(GgmlType type, const std::uint8_t* const* rows, std::byte* out,
                            bool stream) {
  return stream ? pack_block<true>(type, rows, out) : pack_block<false>(type, rows, out);
}

}  // namespace moed::kernels::qtile
