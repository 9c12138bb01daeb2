#pragma once

#include <cstdint>

namespace moed::kernels::detail {

// Whether this CPU runs attend_heads_avx512 (AVX-512 F, BW and VL).
bool cpu_has_avx512_attention();

// `heads` consecutive query heads of one query row, all reading the same KV head, over its first
// `visible` positions: softmax(scale * q.k) weighting the values. q and out hold the heads one
// after another (head_dim apart); scores has room for min(heads, 8) * visible floats. The heads
// run up to 8 at a time, each key and value read once for them, and the rows ahead are
// prefetched, which a single head's scalar lane sums could not keep fed from memory (8 heads of
// a 640-position bf16 cache, cold: 149 us against 63). head_dim must be a multiple of 16. A
// head's result does not depend on how many heads share a pass: each sums its own lanes in the
// same order (GCC's _mm512_reduce_add_ps is a fixed tree). The bits differ from the portable
// per-head loop's (another summation order and exp), so they depend on whether the CPU has
// AVX-512, never on batching or threads.
void attend_heads_avx512(const float* q, const float* keys, const float* values,
                         std::int64_t visible, std::int64_t head_dim, int heads, float scale,
                         float* scores, float* out);
void attend_heads_avx512(const float* q, const std::uint16_t* keys, const std::uint16_t* values,
                         std::int64_t visible, std::int64_t head_dim, int heads, float scale,
                         float* scores, float* out);

}  // namespace moed::kernels::detail
