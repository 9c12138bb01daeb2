#pragma once

// What the SIMD translation units (quant_dot_avx2.cpp, quant_dot_avx512.cpp, each built for its
// ISA) share with quant_dot.cpp. Both sides follow the order quant_dot.hpp states, so the float
// results match the scalar path bit for bit; the files build with -ffp-contract=off so no
// multiply and add fuse in one place and not the other.

#include <cstddef>
#include <cstdint>

#include "moed/kernels/quant.hpp"
#include "moed/kernels/quant_dot.hpp"

namespace moed::kernels::qdot {

// A whole row of a 32-element format (q8_0, q4_0, q4_1, q5_0, q5_1) against Q8_0 activations.
float dot32_avx2(GgmlType type, const std::byte* weights, const BlockQ8_0* x,
                 const std::int32_t* x_sums, std::int64_t blocks);
float dot32_avx512(GgmlType type, const std::byte* weights, const BlockQ8_0* x,
                   const std::int32_t* x_sums, std::int64_t blocks);

// A run of super-blocks of a K-quant row (q4_K, q5_K, q6_K) against Q8_K activations: per
// super-block the integer sums (sum over sub-blocks of scale * (quants . activations), and of
// min * activation sum; q6_K's -32 offset folded in), then the float term of quant_dot.cpp's
// finish_k into accumulator b % 8, reduced by reduce8.
float dotk_avx2(GgmlType type, const std::byte* weights, const BlockQ8_K* x, std::int64_t blocks);
float dotk_avx512(GgmlType type, const std::byte* weights, const BlockQ8_K* x, std::int64_t blocks);

// quantize_activations built for each ISA (n whole blocks of 32, checked by the caller).
void quantize_avx2(const float* x, std::int64_t n, QuantizedActivations& out);
void quantize_avx512(const float* x, std::int64_t n, QuantizedActivations& out);

// The fixed final reduction of the eight accumulators (internal linkage: each ISA's file has
// its own copy, never one built for another ISA).
static inline float reduce8(const float* acc) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace moed::kernels::qdot
