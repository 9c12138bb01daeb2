// Built with AVX512-BF16 (and BW); called only where the CPU has it (cpu_has_bf16_dot).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "bf16_rows.hpp"
#include "f8_rows.hpp"
#include "transpose_avx512.hpp"

namespace moed::kernels::detail {
namespace {

// Rows of x a pass computes: in registers, as many as decode takes at most; from a chunk, six
// rows by 64 columns (24 accumulators, four weight lines and the broadcast pair in 32 registers).
constexpr int kRowsInRegisters = static_cast<int>(kF8RowsInRegistersAtMost);
constexpr int kRowsInChunk = 6;
constexpr std::int64_t kLanes = 16;
// bf16_rows asks 6 KiB ahead; the same weights are half the bytes here.
constexpr std::int64_t kPrefetchDistance = 3 * 1024;
constexpr std::int64_t kMaxColumnGroups = kF8RowsMaxNBlock / kLanes;

// The scales of 16 columns laid out as their pairs are: lo for columns 0-7 (each twice), hi for
// 8-15. The fast widening multiplies by the scale times 256 at once (exact: 256 s is a normal f32
// for every scale f8_rows_fast_scale takes).
struct PairScales {
  __m512 lo, hi;
};
template <bool kCareful>
PairScales pair_scales(const float* columns) {
  const __m512 scales = _mm512_loadu_ps(columns);
  const __m512i low = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  const __m512i high = _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
  PairScales out{_mm512_permutexvar_ps(low, scales), _mm512_permutexvar_ps(high, scales)};
  if constexpr (!kCareful) {
    const __m512 rebias = _mm512_set1_ps(256.0f);
    out.lo = _mm512_mul_ps(out.lo, rebias);
    out.hi = _mm512_mul_ps(out.hi, rebias);
  }
  return out;
}

// f32_to_bf16 of 16 products: nearest even, a NaN kept quiet (f8_widen_avx512.cpp's rounding).
__m256i round_to_bf16(__m512 value) {
  const __m512i wide = _mm512_castps_si512(value);
  const __m512i lowest_kept = _mm512_and_si512(_mm512_srli_epi32(wide, 16), _mm512_set1_epi32(1));
  __m512i narrow = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(wide, _mm512_set1_epi32(0x7fff)), lowest_kept), 16);
  narrow =
      _mm512_mask_mov_epi32(narrow, _mm512_cmp_ps_mask(value, value, _CMP_UNORD_Q),
                            _mm512_or_si512(_mm512_srli_epi32(wide, 16), _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(narrow);
}

// One line of 16 columns (32 codes: each column's pair of K elements) as bf16, in the same
// order: the values f8_e4m3_to_bf16 gives. A code's sign, exponent and mantissa in an f16's
// places make an f16 of 2^-8 times its value, subnormals included (f8_widen_avx512.cpp); the
// sign-extended byte shifted left by 7 puts them there but for bit 14, which the mask clears.
template <bool kCareful>
__m512bh widen_line(const std::uint8_t* line, const PairScales& scales) {
  const __m512i codes =
      _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(line)));
  const __m512i half =
      _mm512_and_si512(_mm512_slli_epi16(codes, 7), _mm512_set1_epi16(static_cast<short>(0xbf80)));
  const __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(half));
  const __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(half, 1));
  if constexpr (!kCareful) {
    return _mm512_cvtne2ps_pbh(_mm512_mul_ps(hi, scales.hi), _mm512_mul_ps(lo, scales.lo));
  } else {
    const __m512 rebias = _mm512_set1_ps(256.0f);
    const __m256i low = round_to_bf16(_mm512_mul_ps(_mm512_mul_ps(lo, rebias), scales.lo));
    const __m256i high = round_to_bf16(_mm512_mul_ps(_mm512_mul_ps(hi, rebias), scales.hi));
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
    const __mmask32 nan_code = _mm512_cmpeq_epi16_mask(
        _mm512_and_si512(codes, _mm512_set1_epi16(0x7f)), _mm512_set1_epi16(0x7f));
    return (__m512bh)_mm512_mask_mov_epi16(both, nan_code, _mm512_set1_epi16(0x7fc0));
  }
}

__m512bh broadcast_pair(const std::uint16_t* x) {
  std::int32_t pair;
  std::memcpy(&pair, x, sizeof(pair));
  // Not _mm512_set1_epi32: clang 16 recurses without end folding that broadcast into vdpbf16ps.
  return (__m512bh)_mm512_broadcastd_epi32(_mm_cvtsi32_si128(pair));
}

// y (+)= acc: the first K block's sums are stored, the later ones added in order, as bf16_rows
// adds its blocks' sums.
template <int kRows, int kVectors>
void add_block_sums(const __m512 (&acc)[kRows][kVectors], bool first_block, float* y,
                    std::int64_t y_stride) {
  for (int r = 0; r < kRows; ++r)
    for (int q = 0; q < kVectors; ++q) {
      float* out = y + r * y_stride + q * kLanes;
      _mm512_storeu_ps(out,
                       first_block ? acc[r][q] : _mm512_add_ps(_mm512_loadu_ps(out), acc[r][q]));
    }
}

// Columns [first, first + 16 * kVectors) of an N block for kRows rows of x, widening each line
// in registers.
template <bool kCareful, int kRows, int kVectors>
void columns_in_registers(const F8RowsLayout& layout, const std::uint8_t* codes,
                          const float* scales, std::int64_t first, const std::uint16_t* x, float* y,
                          std::int64_t y_stride) {
  const std::int64_t k_block = onednn_bf16_k_block(layout.k);
  for (std::int64_t start = 0; start < layout.k; start += k_block) {
    __m512 acc[kRows][kVectors];
    for (auto& row : acc)
      for (auto& v : row) v = _mm512_setzero_ps();
    over_scale_stretches(
        layout.block_cols, start, std::min(layout.k, start + k_block),
        [&](std::int64_t column_block, std::int64_t from, std::int64_t to) {
          PairScales pair[kVectors];
          for (int q = 0; q < kVectors; ++q)
            pair[q] =
                pair_scales<kCareful>(scales + column_block * layout.n_block + first + q * kLanes);
          for (std::int64_t unit = from / 2; unit < to / 2; ++unit) {
            const std::uint8_t* line = codes + (unit * layout.n_block + first) * 2;
            for (int q = 0; q < kVectors; q += 2)
              _mm_prefetch(reinterpret_cast<const char*>(
                               reinterpret_cast<std::uintptr_t>(line + q * 32) + kPrefetchDistance),
                           _MM_HINT_T1);
            __m512bh w[kVectors];
            for (int q = 0; q < kVectors; ++q) w[q] = widen_line<kCareful>(line + q * 32, pair[q]);
            for (int r = 0; r < kRows; ++r) {
              const __m512bh xv = broadcast_pair(x + r * layout.k + unit * 2);
              for (int q = 0; q < kVectors; ++q) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], w[q], xv);
            }
          }
        });
    add_block_sums(acc, start == 0, y, y_stride);
  }
}

// K elements [start, end) of an N block widened into `chunk`: the bf16 layout's lines of those
// units, each line read once, in order.
template <bool kCareful>
void widen_chunk(const F8RowsLayout& layout, const std::uint8_t* codes, const float* scales,
                 std::int64_t start, std::int64_t end, std::uint16_t* chunk) {
  const std::int64_t groups = layout.n_block / kLanes;
  over_scale_stretches(
      layout.block_cols, start, end,
      [&](std::int64_t column_block, std::int64_t from, std::int64_t to) {
        PairScales pairs[kMaxColumnGroups];
        for (std::int64_t g = 0; g < groups; ++g)
          pairs[g] = pair_scales<kCareful>(scales + column_block * layout.n_block + g * kLanes);
        for (std::int64_t unit = from / 2; unit < to / 2; ++unit) {
          const std::uint8_t* line = codes + unit * layout.n_block * 2;
          std::uint16_t* out = chunk + (unit - start / 2) * layout.n_block * 2;
          _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(line) +
                                                     kPrefetchDistance),
                       _MM_HINT_T1);
          for (std::int64_t g = 0; g < groups; ++g)
            _mm512_storeu_si512(out + g * kLanes * 2,
                                (__m512i)widen_line<kCareful>(line + g * kLanes * 2, pairs[g]));
        }
      });
}

// Columns [first, first + 16 * kVectors) of a widened chunk of `units` units for kRows rows of
// x (already at the chunk's first K element).
template <int kRows, int kVectors>
void columns_in_chunk(const std::uint16_t* chunk, std::int64_t n_block, std::int64_t first,
                      std::int64_t units, const std::uint16_t* x, std::int64_t x_stride,
                      bool first_block, float* y, std::int64_t y_stride) {
  __m512 acc[kRows][kVectors];
  for (auto& row : acc)
    for (auto& v : row) v = _mm512_setzero_ps();
  for (std::int64_t unit = 0; unit < units; ++unit) {
    const std::uint16_t* line = chunk + (unit * n_block + first) * 2;
    __m512bh w[kVectors];
    for (int q = 0; q < kVectors; ++q) w[q] = (__m512bh)_mm512_loadu_si512(line + q * kLanes * 2);
    for (int r = 0; r < kRows; ++r) {
      const __m512bh xv = broadcast_pair(x + r * x_stride + unit * 2);
      for (int q = 0; q < kVectors; ++q) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], w[q], xv);
    }
  }
  add_block_sums(acc, first_block, y, y_stride);
}

// Calls body.template operator()<kRows, kVectors>(i, first) over rows [0, m) in passes of up to
// kMaxRows and each pass over the N block's columns 64 at a time (fewer at its end).
template <int kMaxRows, typename Body>
void over_passes(std::int64_t m, std::int64_t n_block, const Body& body) {
  const auto columns = [&]<int kRows>(std::int64_t i) {
    for (std::int64_t first = 0; first < n_block; first += 4 * kLanes) {
      switch ((n_block - first) / kLanes) {
        case 1:
          body.template operator()<kRows, 1>(i, first);
          break;
        case 2:
          body.template operator()<kRows, 2>(i, first);
          break;
        case 3:
          body.template operator()<kRows, 3>(i, first);
          break;
        default:
          body.template operator()<kRows, 4>(i, first);
      }
    }
  };
  std::int64_t i = 0;
  for (; i + kMaxRows <= m; i += kMaxRows) columns.template operator()<kMaxRows>(i);
  [&]<int... kRows>(std::integer_sequence<int, kRows...>) {
    ((m - i == kRows + 1 ? (columns.template operator()<kRows + 1>(i), 0) : 0), ...);
  }
  (std::make_integer_sequence<int, kMaxRows - 1>());
}

template <bool kCareful>
void block_rows(const F8RowsLayout& layout, const std::uint8_t* codes, const float* scales,
                const std::uint16_t* x, std::int64_t m, float* y, std::uint16_t* chunk) {
  if (m <= kF8RowsInRegistersAtMost) {
    over_passes<kRowsInRegisters>(
        m, layout.n_block, [&]<int kRows, int kVectors>(std::int64_t i, std::int64_t first) {
          columns_in_registers<kCareful, kRows, kVectors>(
              layout, codes, scales, first, x + i * layout.k, y + i * layout.n + first, layout.n);
        });
    return;
  }
  const std::int64_t k_block = onednn_bf16_k_block(layout.k);
  for (std::int64_t start = 0; start < layout.k; start += k_block) {
    const std::int64_t end = std::min(layout.k, start + k_block);
    widen_chunk<kCareful>(layout, codes, scales, start, end, chunk);
    over_passes<kRowsInChunk>(
        m, layout.n_block, [&]<int kRows, int kVectors>(std::int64_t i, std::int64_t first) {
          columns_in_chunk<kRows, kVectors>(chunk, layout.n_block, first, (end - start) / 2,
                                            x + i * layout.k + start, layout.k, start == 0,
                                            y + i * layout.n + first, layout.n);
        });
  }
}

}  // namespace

bool pack_f8_rows_block_avx512(const F8RowsLayout& layout, const std::uint8_t* const* row_starts,
                               std::int64_t block, std::uint8_t* codes) {
  // 16 rows by 64 codes at a time: as 16 x 16 units of 4 bytes (two pairs) transposed, each
  // register then holds a unit pair's 16 rows, whose two pairs a word permutation separates into
  // the two lines' 32 bytes.
  constexpr std::int64_t kChunk = 64;
  const __m512i separate =
      _mm512_set_epi16(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1, 30, 28, 26, 24,
                       22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i magnitude = _mm512_set1_epi8(0x7f);
  __mmask64 nan_codes = 0;
  std::uint8_t* out = codes + block * layout.n_block * layout.k;
  const std::int64_t whole = layout.k / kChunk * kChunk;
  for (std::int64_t group = 0; group < layout.n_block; group += kLanes) {
    const std::uint8_t* const* rows = row_starts + group;
    for (std::int64_t at = 0; at < whole; at += kChunk) {
      __m512i tile[kLanes];
      for (std::int64_t r = 0; r < kLanes; ++r) {
        tile[r] = _mm512_loadu_si512(rows[r] + at);
        nan_codes |= _mm512_cmpeq_epi8_mask(_mm512_and_si512(tile[r], magnitude), magnitude);
      }
      transpose_16x16(tile);
      for (std::int64_t t = 0; t < kLanes; ++t) {
        const __m512i lines = _mm512_permutexvar_epi16(separate, tile[t]);
        const std::int64_t unit = at / 2 + 2 * t;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (unit * layout.n_block + group) * 2),
                            _mm512_castsi512_si256(lines));
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(out + ((unit + 1) * layout.n_block + group) * 2),
            _mm512_extracti64x4_epi64(lines, 1));
      }
    }
    for (std::int64_t r = 0; r < kLanes; ++r)
      for (std::int64_t element = whole; element < layout.k; ++element) {
        const std::uint8_t code = rows[r][element];
        nan_codes |= (code & 0x7f) == 0x7f;
        out[((element / 2) * layout.n_block + group + r) * 2 + element % 2] = code;
      }
  }
  return nan_codes != 0;
}

void f8_rows_block_avx512(const F8RowsLayout& layout, const std::uint8_t* codes,
                          const float* scales, bool careful, std::int64_t block,
                          const std::uint16_t* x, std::int64_t m, float* y, std::uint16_t* chunk) {
  const std::uint8_t* block_codes = codes + block * layout.n_block * layout.k;
  const float* block_scales = scales + block * layout.col_blocks() * layout.n_block;
  float* block_y = y + block * layout.n_block;
  if (careful) {
    block_rows<true>(layout, block_codes, block_scales, x, m, block_y, chunk);
  } else {
    block_rows<false>(layout, block_codes, block_scales, x, m, block_y, chunk);
  }
}

}  // namespace moed::kernels::detail
