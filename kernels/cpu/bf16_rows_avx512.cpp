// Built with AVX512-BF16; called only where the CPU has it (cpu_has_bf16_dot).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "bf16_rows.hpp"

namespace moed::kernels::detail {
namespace {

constexpr int kRowsPerPass = 4;
constexpr std::int64_t kLanes = 16;
// The block's lines are asked for this many bytes ahead, into L2: a 5632 x 1024 mat-vec from
// memory on two threads went 23.5 -> 28.4 GB/s (a plain read: 28.6), 1024 x 2816 23.0 -> 27.3;
// 12 KiB ahead gave 27.5-27.9, 24 KiB 26.0-26.2. A prefetch past the weight does not fault (the
// address is formed as an integer, so no pointer leaves the weight).
constexpr std::int64_t kPrefetchDistance = 6 * 1024;

// Columns [first, first + 16 * kVectors) of one N block for `rows` rows of x. Unit u of the block
// holds, for each of its n_block columns, the pair of K elements (2u, 2u + 1).
template <int kVectors>
void columns(const std::uint16_t* block, std::int64_t n_block, std::int64_t first, std::int64_t k,
             std::int64_t k_block, const std::uint16_t* x, int rows, float* y,
             std::int64_t y_stride) {
  __m512 total[kRowsPerPass][kVectors];
  for (std::int64_t start = 0; start < k; start += k_block) {
    __m512 acc[kRowsPerPass][kVectors];
    for (auto& row : acc)
      for (auto& v : row) v = _mm512_setzero_ps();
    const std::int64_t end = std::min(k, start + k_block);
    for (std::int64_t unit = start / 2; unit < end / 2; ++unit) {
      const std::uint16_t* line = block + (unit * n_block + first) * 2;
      __m512bh w[kVectors];
      for (int q = 0; q < kVectors; ++q) {
        w[q] = (__m512bh)_mm512_loadu_si512(line + q * kLanes * 2);
        _mm_prefetch(
            reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(line + q * kLanes * 2) +
                                          kPrefetchDistance),
            _MM_HINT_T1);
      }
      for (int r = 0; r < rows; ++r) {
        std::int32_t pair;
        std::memcpy(&pair, x + r * k + unit * 2, sizeof(pair));
        // Not _mm512_set1_epi32: clang 16 recurses without end folding that broadcast into
        // vdpbf16ps.
        const __m512bh xv = (__m512bh)_mm512_broadcastd_epi32(_mm_cvtsi32_si128(pair));
        for (int q = 0; q < kVectors; ++q) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], w[q], xv);
      }
    }
    for (int r = 0; r < rows; ++r)
      for (int q = 0; q < kVectors; ++q)
        total[r][q] = start == 0 ? acc[r][q] : _mm512_add_ps(total[r][q], acc[r][q]);
  }
  for (int r = 0; r < rows; ++r)
    for (int q = 0; q < kVectors; ++q) _mm512_storeu_ps(y + r * y_stride + q * kLanes, total[r][q]);
}

}  // namespace

void bf16_rows_block_avx512(std::int64_t k, std::int64_t n, std::int64_t n_block,
                            const std::uint16_t* weights, std::int64_t n_block_index,
                            const std::uint16_t* x, std::int64_t m, float* y) {
  const std::int64_t k_block = onednn_bf16_k_block(k);
  const std::uint16_t* block = weights + n_block_index * n_block * k;
  for (std::int64_t i = 0; i < m; i += kRowsPerPass) {
    const int rows = static_cast<int>(std::min<std::int64_t>(kRowsPerPass, m - i));
    for (std::int64_t first = 0; first < n_block; first += 4 * kLanes) {
      float* out = y + i * n + n_block_index * n_block + first;
      const std::uint16_t* xi = x + i * k;
      switch ((n_block - first) / kLanes) {
        case 1:
          columns<1>(block, n_block, first, k, k_block, xi, rows, out, n);
          break;
        case 2:
          columns<2>(block, n_block, first, k, k_block, xi, rows, out, n);
          break;
        case 3:
          columns<3>(block, n_block, first, k, k_block, xi, rows, out, n);
          break;
        default:
          columns<4>(block, n_block, first, k, k_block, xi, rows, out, n);
      }
    }
  }
}

}  // namespace moed::kernels::detail
