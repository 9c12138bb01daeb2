// Row-tile packing for AVX2: quant_tiles_pack_avx512.cpp's moves at half the width, for a CPU
// without AVX-512 VBMI (Zen 2/3, Intel desktops, AVX-512 parts before Ice Lake). A tile's line
// is 64 bytes, four of each of its sixteen rows: here two registers, rows 0-7 and rows 8-15, each
// written whole. The scalar packer writes four bytes per store (q4_K 2.7 GB/s on one core of the
// VM that measured it, against 7.0 through AVX-512 registers). Byte for byte the scalar packer's
// output (tested); built with AVX2, called only when the CPU has it.

#include <immintrin.h>

#include <cstddef>
#include <cstring>

#include "moed/kernels/quant.hpp"
#include "quant_tiles_internal.hpp"

namespace moed::kernels::qtile {
namespace {

using Rows = const std::uint8_t* const*;

// A 64-byte line: rows 0-7's dwords, then rows 8-15's.
struct Line {
  __m256i rows_0_7, rows_8_15;
};

// kStream as in the AVX-512 packer: non-temporal where the whole line is one cache line. Not per
// 32-byte half: a half streamed into a cache line that other stores also write (in every other
// q4_0 and q5_0 tile block, 4.5 and 5.5 cache lines long, the lines start 32 bytes into one,
// after the scales) held q4_0 packing to 1.0 GB/s.
template <bool kStream>
void store_line(std::byte* at, const Line& line) {
  auto* const first = reinterpret_cast<__m256i*>(at);
  if (kStream && (reinterpret_cast<std::uintptr_t>(at) & 63) == 0) {
    _mm256_stream_si256(first, line.rows_0_7);
    _mm256_stream_si256(first + 1, line.rows_8_15);
  } else {
    _mm256_storeu_si256(first, line.rows_0_7);
    _mm256_storeu_si256(first + 1, line.rows_8_15);
  }
}

__m256i load32(const std::uint8_t* at) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at));
}
__m128i load16(const std::uint8_t* at) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
}
__m256i two_halves(__m128i low, __m128i high) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(low), high, 1);
}

// v[i] holds dwords 0..7 of row i (i < 8). Afterwards v[c] holds dword c of rows 0..7 in order.
void transpose_rows(__m256i* v) {
  __m256i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(v[2 * i], v[2 * i + 1]);      // per lane: .0 .1 | .4 .5
    t[2 * i + 1] = _mm256_unpackhi_epi32(v[2 * i], v[2 * i + 1]);  // .2 .3 | .6 .7
  }
  for (int i = 0; i < 2; ++i) {  // rows 0-3 from t[0..3], rows 4-7 from t[4..7]
    u[4 * i] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);          // .0 | .4
    u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);      // .1 | .5
    u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);  // .2 | .6
    u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);  // .3 | .7
  }
  for (int c = 0; c < 4; ++c) {
    v[c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x20);
    v[c + 4] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x31);
  }
}

// Eight lines, one per dword of a 32-byte field of the rows.
struct Lines {
  __m256i rows_0_7[8], rows_8_15[8];
  Line line(int c) const { return {rows_0_7[c], rows_8_15[c]}; }
};

// The 8 dwords at `offset` of every row, as 8 lines.
Lines row_dwords(Rows rows, std::size_t offset) {
  Lines lines;
  for (int i = 0; i < 8; ++i) {
    lines.rows_0_7[i] = load32(rows[i] + offset);
    lines.rows_8_15[i] = load32(rows[i + 8] + offset);
  }
  transpose_rows(lines.rows_0_7);
  transpose_rows(lines.rows_8_15);
  return lines;
}

void copy_halves(Rows rows, std::size_t offset, std::byte* out) {
  for (int r = 0; r < kTileRows; ++r) std::memcpy(out + 2 * r, rows[r] + offset, 2);
}

// 16 bytes per row, as 16 lines of the rows' bytes: out[16 * o + r] = byte o of row r.
// `row_bytes` turns a row's 16 loaded bytes (one row per 128-bit lane) into the 16 it contributes.
template <bool kStream, typename RowBytes>
void transpose_bytes(Rows rows, std::size_t offset, RowBytes row_bytes, std::byte* out) {
  __m256i a[8];  // lane 0: row i, lane 1: row i + 8
  for (int i = 0; i < 8; ++i)
    a[i] = row_bytes(two_halves(load16(rows[i] + offset), load16(rows[i + 8] + offset)));
  // Per lane, an 8 x 16 transpose: bytes, words, dwords. pairs[4 * h + j] holds byte columns
  // 8h + 2j and 8h + 2j + 1 of the lane's eight rows, eight bytes each.
  __m256i bytes[8], words[8], pairs[8];
  for (int k = 0; k < 4; ++k) {
    bytes[k] = _mm256_unpacklo_epi8(a[2 * k], a[2 * k + 1]);      // columns 0-7, rows 2k, 2k + 1
    bytes[4 + k] = _mm256_unpackhi_epi8(a[2 * k], a[2 * k + 1]);  // columns 8-15
  }
  for (int h = 0; h < 2; ++h)
    for (int q = 0; q < 2; ++q) {  // rows 4q .. 4q + 3
      words[4 * h + 2 * q] = _mm256_unpacklo_epi16(bytes[4 * h + 2 * q], bytes[4 * h + 2 * q + 1]);
      words[4 * h + 2 * q + 1] =
          _mm256_unpackhi_epi16(bytes[4 * h + 2 * q], bytes[4 * h + 2 * q + 1]);
    }
  for (int h = 0; h < 2; ++h)
    for (int w = 0; w < 2; ++w) {  // words[4h + w]: columns 8h + 4w .. + 3 of rows 0-3
      pairs[4 * h + 2 * w] = _mm256_unpacklo_epi32(words[4 * h + w], words[4 * h + 2 + w]);
      pairs[4 * h + 2 * w + 1] = _mm256_unpackhi_epi32(words[4 * h + w], words[4 * h + 2 + w]);
    }
  // Column c's rows 0-7 are in lane 0 and rows 8-15 in lane 1: the quadword order 0, 2, 1, 3
  // makes out's 32 bytes of columns c and c + 1.
  for (int j = 0; j < 8; j += 2)
    store_line<kStream>(out + 32 * j, {_mm256_permute4x64_epi64(pairs[j], 0xD8),
                                       _mm256_permute4x64_epi64(pairs[j + 1], 0xD8)});
}

// Stored, one 32-byte chunk of quants gives each element's low nibble to one sub-block and its
// high nibble to another; each eight bytes of a row make one line's four bytes per nibble half
// (bytes 0-3 in the low nibbles, 4-7 in the high). `low_line` and `high_line` number the lines
// of the chunk's first eight bytes; the next eight bytes go one line further.
template <bool kStream>
void pack_nibble_chunk(Rows rows, std::size_t offset, std::byte* lines, int low_line,
                       int high_line) {
  const __m256i nibbles = _mm256_set1_epi8(0x0F);
  __m256i halves[2][8];
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 8; ++i) {
      const __m256i word = load32(rows[8 * h + i] + offset);
      const __m256i low = _mm256_and_si256(word, nibbles);
      const __m256i high = _mm256_and_si256(_mm256_srli_epi64(word, 4), nibbles);
      // Per 64-bit word, its low dword gets the upper four bytes' nibbles in its high nibbles.
      const __m256i low_pairs = _mm256_or_si256(low, _mm256_srli_epi64(low, 28));
      const __m256i high_pairs = _mm256_or_si256(high, _mm256_srli_epi64(high, 28));
      halves[h][i] = _mm256_blend_epi32(low_pairs, _mm256_slli_epi64(high_pairs, 32), 0xAA);
    }
    transpose_rows(halves[h]);
  }
  for (int p = 0; p < 4; ++p) {
    store_line<kStream>(lines + 64 * (low_line + p), {halves[0][2 * p], halves[1][2 * p]});
    store_line<kStream>(lines + 64 * (high_line + p), {halves[0][2 * p + 1], halves[1][2 * p + 1]});
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
    Line line{_mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int d = 0; d < per_byte; ++d) {
      const int shift = width * (d - o);
      const __m256i field = _mm256_set1_epi8(static_cast<char>(((1 << width) - 1) << (width * d)));
      const auto add_field = [&](__m256i into, __m256i source) {
        const __m256i moved = shift >= 0 ? _mm256_sll_epi32(source, _mm_cvtsi32_si128(shift))
                                         : _mm256_srl_epi32(source, _mm_cvtsi32_si128(-shift));
        return _mm256_or_si256(into, _mm256_and_si256(moved, field));
      };
      line.rows_0_7 = add_field(line.rows_0_7, dwords.rows_0_7[first + d]);
      line.rows_8_15 = add_field(line.rows_8_15, dwords.rows_8_15[first + d]);
    }
    store_line<kStream>(out + line_stride * o, line);
  }
}

// Per row (one per 128-bit lane): the eight 6-bit scales, then the eight mins (q4k_scale_min),
// from the 12 stored bytes.
__m256i k_scales_and_mins(__m256i s) {
  const __m256i pick_low = _mm256_broadcastsi128_si256(
      _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
  const __m256i keep_low = _mm256_broadcastsi128_si256(
      _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0));
  const __m256i keep_high = _mm256_broadcastsi128_si256(
      _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15));
  const __m256i pick_top = _mm256_broadcastsi128_si256(
      _mm_setr_epi8(-128, -128, -128, -128, 0, 1, 2, 3, -128, -128, -128, -128, 4, 5, 6, 7));
  const __m256i picked = _mm256_shuffle_epi8(s, pick_low);
  const __m256i low = _mm256_and_si256(picked, keep_low);
  const __m256i high = _mm256_and_si256(_mm256_srli_epi16(picked, 4), keep_high);
  // Sub-blocks 4-7 take the two spare top bits of bytes 0-7 as their bits 4-5.
  const __m256i top = _mm256_and_si256(_mm256_srli_epi16(_mm256_shuffle_epi8(s, pick_top), 2),
                                       _mm256_set1_epi8(0x30));
  return _mm256_or_si256(_mm256_or_si256(low, high), top);
}

template <bool kStream>
void pack_q8_0(Rows rows, std::byte* out) {
  copy_halves(rows, offsetof(BlockQ8_0, d), out);
  const auto lines = row_dwords(rows, offsetof(BlockQ8_0, qs));
  const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int g = 0; g < 8; ++g)
    store_line<kStream>(
        out + kQ8_0TileQuants + 64 * g,
        {_mm256_xor_si256(lines.rows_0_7[g], bias), _mm256_xor_si256(lines.rows_8_15[g], bias)});
}

// q4_0, q4_1, q5_0, q5_1: a row's 16 quant bytes are its dwords of the tile's four lines as
// they are, and its fifth bits (q5_*) one dword of the fifth-bit line.
template <bool kStream>
void pack_legacy(GgmlType type, Rows rows, std::byte* out) {
  copy_halves(rows, 0, out);
  const auto [m_offset, qh, qs] = legacy_fields(type);
  if (m_offset) copy_halves(rows, m_offset, out + kLegacyTileMins);
  // Per eight rows 8h .. 8h + 7: m[q], lane L holds row 8h + 4L + q's quants, and a 4 x 4 dword
  // transpose within each lane makes line p's half: dword p of rows 8h + 4L .. + 3 in lane L.
  __m256i half_lines[2][4];
  for (int h = 0; h < 2; ++h) {
    __m256i m[4];
    for (int q = 0; q < 4; ++q)
      m[q] = two_halves(load16(rows[8 * h + q] + qs), load16(rows[8 * h + 4 + q] + qs));
    const __m256i t0 = _mm256_unpacklo_epi32(m[0], m[1]), t1 = _mm256_unpackhi_epi32(m[0], m[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(m[2], m[3]), t3 = _mm256_unpackhi_epi32(m[2], m[3]);
    half_lines[h][0] = _mm256_unpacklo_epi64(t0, t2);
    half_lines[h][1] = _mm256_unpackhi_epi64(t0, t2);
    half_lines[h][2] = _mm256_unpacklo_epi64(t1, t3);
    half_lines[h][3] = _mm256_unpackhi_epi64(t1, t3);
  }
  std::byte* lines = out + legacy_tile_quants(type);
  for (int p = 0; p < 4; ++p)
    store_line<kStream>(lines + 64 * p, {half_lines[0][p], half_lines[1][p]});
  if (!qh) return;
  // Per row, bit 4p + k of qh goes to bit 2p of byte k and bit 16 + 4p + k to bit 2p + 1: the
  // scalar packer's carry-free multiply by 2^0 + 2^7 + 2^14 + 2^21, eight rows at once.
  alignas(32) std::uint32_t fifth[kTileRows];
  for (int r = 0; r < kTileRows; ++r) std::memcpy(&fifth[r], rows[r] + qh, sizeof fifth[r]);
  const __m256i nibble = _mm256_set1_epi32(0xF), spread = _mm256_set1_epi32(0x00204081);
  const __m256i low_bit = _mm256_set1_epi32(0x01010101);
  const auto spread_fifth_bits = [&](__m256i all) {
    __m256i bits = _mm256_setzero_si256();
    for (int p = 0; p < 4; ++p)
      for (int half = 0; half < 2; ++half) {
        const __m256i field =
            _mm256_and_si256(_mm256_srl_epi32(all, _mm_cvtsi32_si128(16 * half + 4 * p)), nibble);
        const __m256i spread_bits = _mm256_and_si256(_mm256_mullo_epi32(field, spread), low_bit);
        bits =
            _mm256_or_si256(bits, _mm256_sll_epi32(spread_bits, _mm_cvtsi32_si128(2 * p + half)));
      }
    return bits;
  };
  store_line<kStream>(
      out + legacy_tile_high(type),
      {spread_fifth_bits(_mm256_load_si256(reinterpret_cast<const __m256i*>(fifth))),
       spread_fifth_bits(_mm256_load_si256(reinterpret_cast<const __m256i*>(fifth + 8)))});
}

// Each format from the moves above, as the AVX-512 packer does it.
#include "quant_tiles_pack_formats.inc"

}  // namespace

void pack_tile_block_avx2(GgmlType type, const std::uint8_t* const* rows, std::byte* out,
                          bool stream) {
  return stream ? pack_block<true>(type, rows, out) : pack_block<false>(type, rows, out);
}

}  // namespace moed::kernels::qtile
