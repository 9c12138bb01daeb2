// Built with AVX-512 F/BW/VL; called only where the CPU has them (cpu_has_avx512_attention).
#include "attention_avx512.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "moed/kernels/cpu_ops.hpp"
#include "widen_avx512.hpp"

namespace moed::kernels::detail {
namespace {

constexpr std::int64_t kLanes = 16;
// Key and value rows are asked for this many bytes ahead (16 positions of a 128-wide bf16
// head): 12, 16 and 32 positions ran alike. The address is formed as an integer, so a prefetch
// past the cache's end neither faults nor forms an out-of-range pointer.
constexpr std::int64_t kPrefetchBytes = 4096;
// The score pass also brings a group's values into L2 while they fit there beside the keys'
// stream; past that they would be evicted before the value pass and read twice.
constexpr std::int64_t kValuesKeptInL2 = 1024 * 1024;
// The value pass goes through the positions in chunks of about this many bytes of values (at
// least one row), which stay in L1, beside the next chunk's prefetched rows, while every pass
// of slices over the chunk reads them.
constexpr std::int64_t kValueChunkBytes = 16 * 1024;

template <typename Element, int kHeads>
void attend(const float* q, const Element* keys, const Element* values, std::int64_t visible,
            std::int64_t head_dim, float scale, float* scores, float* out) {
  const std::int64_t vectors = head_dim / kLanes;
  const std::int64_t row_bytes = head_dim * static_cast<std::int64_t>(sizeof(Element));
  const std::int64_t ahead = (kPrefetchBytes + row_bytes - 1) / row_bytes * row_bytes;
  const auto key_address = reinterpret_cast<std::uintptr_t>(keys);
  const auto value_address = reinterpret_cast<std::uintptr_t>(values);
  // The values are wanted only after every score; where they fit, they are brought into L2
  // beside the keys so that the value pass does not wait on memory. (MLA's cache passes one
  // array as both: the score pass's own reads bring it.)
  const bool values_in_l2 = visible * row_bytes <= kValuesKeptInL2;
  const bool prefetch_values = values != keys && values_in_l2;

  for (std::int64_t t = 0; t < visible; ++t) {
    const auto next = static_cast<std::uintptr_t>(t * row_bytes + ahead);
    for (std::uintptr_t b = 0; b < static_cast<std::uintptr_t>(row_bytes); b += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(key_address + next + b), _MM_HINT_T0);
      if (prefetch_values)
        _mm_prefetch(reinterpret_cast<const char*>(value_address + next + b), _MM_HINT_T1);
    }
    const Element* key = keys + t * head_dim;
    __m512 dot[kHeads];
    for (auto& d : dot) d = _mm512_setzero_ps();
    for (std::int64_t v = 0; v < vectors; ++v) {
      const __m512 k = widen16(key + v * kLanes);
      for (int h = 0; h < kHeads; ++h)
        dot[h] = _mm512_fmadd_ps(_mm512_loadu_ps(q + h * head_dim + v * kLanes), k, dot[h]);
    }
    for (int h = 0; h < kHeads; ++h) scores[h * visible + t] = _mm512_reduce_add_ps(dot[h]) * scale;
  }

  // A NaN score makes the head's whole output NaN, as in the portable loop (exp_and_sum alone
  // would give it weight 0 and hide it).
  float total[kHeads];
  for (int h = 0; h < kHeads; ++h) {
    float* s = scores + h * visible;
    float max_score = -INFINITY;
    bool nan = false;
    for (std::int64_t t = 0; t < visible; ++t) {
      max_score = std::max(max_score, s[t]);
      nan |= std::isnan(s[t]);
    }
    total[h] = nan ? NAN : static_cast<float>(exp_and_sum(s, visible, max_score, 1.0f, s));
  }

  // The weighted sum of the values: as many 16-wide slices of every head as 16 registers hold are
  // summed per pass over the positions (a 128-wide head pair in one pass). Values beyond L2 go
  // a chunk of positions at a time, every pass over a chunk before the next chunk, the sums
  // waiting in `out` between chunks; so where the slices take several passes (four query heads
  // or more per KV head, MLA's wide rows), each value is read from memory once and the later
  // passes find it in L1. Every sum still adds the positions in order: the chunks do not change
  // a bit. Each sum is divided by its head's total as the last chunk stores it.
  constexpr int kSlices = std::max(1, 16 / kHeads);
  const std::int64_t chunk =
      values_in_l2 ? visible : std::max<std::int64_t>(1, kValueChunkBytes / row_bytes);
  for (std::int64_t begin = 0; begin < visible; begin += chunk) {
    const std::int64_t end = std::min(visible, begin + chunk);
    for (std::int64_t first = 0; first < vectors; first += kSlices) {
      const int slices = static_cast<int>(std::min<std::int64_t>(kSlices, vectors - first));
      __m512 acc[kHeads][kSlices];
      for (int h = 0; h < kHeads; ++h)
        for (int s = 0; s < kSlices; ++s)
          acc[h][s] = begin == 0 || s >= slices
                          ? _mm512_setzero_ps()
                          : _mm512_loadu_ps(out + h * head_dim + (first + s) * kLanes);
      for (std::int64_t t = begin; t < end; ++t) {
        if (first == 0 && !values_in_l2) {
          // Row t of the next chunk, so that the chunk is in L1 when its passes start.
          const auto next_row =
              value_address + static_cast<std::uintptr_t>((t + chunk) * row_bytes);
          for (std::uintptr_t b = 0; b < static_cast<std::uintptr_t>(row_bytes); b += 64)
            _mm_prefetch(reinterpret_cast<const char*>(next_row + b), _MM_HINT_T0);
        }
        const Element* value = values + t * head_dim + first * kLanes;
        __m512 weight[kHeads];
        for (int h = 0; h < kHeads; ++h) weight[h] = _mm512_set1_ps(scores[h * visible + t]);
        for (int s = 0; s < kSlices; ++s) {
          if (s >= slices) break;
          const __m512 x = widen16(value + s * kLanes);
          for (int h = 0; h < kHeads; ++h) acc[h][s] = _mm512_fmadd_ps(weight[h], x, acc[h][s]);
        }
      }
      const bool last = end == visible;
      for (int h = 0; h < kHeads; ++h) {
        const __m512 divisor = _mm512_set1_ps(total[h]);
        for (int s = 0; s < slices; ++s)
          _mm512_storeu_ps(out + h * head_dim + (first + s) * kLanes,
                           last ? _mm512_div_ps(acc[h][s], divisor) : acc[h][s]);
      }
    }
  }
}

template <typename Element>
void attend_some(const float* q, const Element* keys, const Element* values, std::int64_t visible,
                 std::int64_t head_dim, int heads, float scale, float* scores, float* out) {
  while (heads > 0) {
    const int take = heads >= 8 ? 8 : heads >= 4 ? 4 : heads >= 2 ? 2 : 1;
    switch (take) {
      case 8:
        attend<Element, 8>(q, keys, values, visible, head_dim, scale, scores, out);
        break;
      case 4:
        attend<Element, 4>(q, keys, values, visible, head_dim, scale, scores, out);
        break;
      case 2:
        attend<Element, 2>(q, keys, values, visible, head_dim, scale, scores, out);
        break;
      default:
        attend<Element, 1>(q, keys, values, visible, head_dim, scale, scores, out);
        break;
    }
    q += take * head_dim;
    out += take * head_dim;
    heads -= take;
  }
}

}  // namespace

void attend_heads_avx512(const float* q, const float* keys, const float* values,
                         std::int64_t visible, std::int64_t head_dim, int heads, float scale,
                         float* scores, float* out) {
  attend_some(q, keys, values, visible, head_dim, heads, scale, scores, out);
}

void attend_heads_avx512(const float* q, const std::uint16_t* keys, const std::uint16_t* values,
                         std::int64_t visible, std::int64_t head_dim, int heads, float scale,
                         float* scores, float* out) {
  attend_some(q, keys, values, visible, head_dim, heads, scale, scores, out);
}

}  // namespace moed::kernels::detail
