#pragma once

// What the SIMD translation units (quant_dot_avx2.cpp, quant_dot_avx512.cpp, each built for its
// ISA) share with quant_dot.cpp. Both sides follow the order quant_dot.hpp states, so the float
// results match the scalar path bit for bit; the files build with -ffp-contract=off so no
// multiply and add fuse in one place and not the other.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "moed/kernels/quant.hpp"
#include "moed/kernels/quant_dot.hpp"

namespace moed::kernels::qdot {

// A whole row of a 32-element format (q8_0, q4_0, q4_1, q5_0, q5_1) against Q8_0 activations.
float dot32_avx2(GgmlType type, const std::byte* weights, const BlockQ8_0* x,
                 const std::int32_t* x_sums, const float* x_q8_1_sums, std::int64_t blocks);
float dot32_avx512(GgmlType type, const std::byte* weights, const BlockQ8_0* x,
                   const std::int32_t* x_sums, const float* x_q8_1_sums, std::int64_t blocks);

// A run of super-blocks of a K-quant row (q4_K, q5_K, q6_K) against Q8_K activations: per
// super-block the integer sums (sum over sub-blocks of scale * (quants . activations), and of
// min * activation sum; q6_K's -32 offset folded in), then the float term of quant_dot.cpp's
// finish_k into accumulator b % 8, reduced by reduce8.
float dotk_avx2(GgmlType type, const std::byte* weights, const BlockQ8_K* x, std::int64_t blocks);
float dotk_avx512(GgmlType type, const std::byte* weights, const BlockQ8_K* x, std::int64_t blocks);

// quantize_activations built for each ISA (n whole blocks of 32, checked by the caller).
void quantize_avx2(const float* x, std::int64_t n, QuantizedActivations& out);
void quantize_avx512(const float* x, std::int64_t n, QuantizedActivations& out);

// float -> IEEE half, round to nearest even (the activation scale is stored as ggml's q8_0 does;
// internal linkage like reduce8).
static inline std::uint16_t f32_to_f16(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);   // NaN
  if (magnitude >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow
  if (magnitude < 0x38800000u) {  // a subnormal half, in units of 2^-24 (or zero)
    if (magnitude < 0x33000000u) return static_cast<std::uint16_t>(sign);  // below 2^-25
    const std::uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(magnitude >> 23);  // 14..24
    std::uint32_t result = mantissa >> shift;
    const std::uint32_t rest = mantissa & ((1u << shift) - 1);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (result & 1u))) ++result;
    return static_cast<std::uint16_t>(sign | result);
  }
  std::uint32_t result = ((magnitude >> 13) - (112u << 10));
  const std::uint32_t rest = magnitude & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (result & 1u))) ++result;
  return static_cast<std::uint16_t>(sign | result);
}

// A block's scale from its largest magnitude (NaNs skipped): NaN when the block holds a NaN, so
// the dot product comes out NaN as an f32 one would, else amax / 127.
static inline float block_scale(float amax, bool has_nan) {
  return has_nan ? std::numeric_limits<float>::quiet_NaN() : amax / 127.0f;
}

// What maps a block onto -127..127: 127 / amax, computed directly rather than as 1 / scale, as
// ggml's x86 quantize_row_q8_0 / q8_1 do (and quantize_row_q8_K_ref, up to a sign it applies to
// quants and scale alike), so the same activations give the same quants.
// Zero for a zero, NaN or infinite amax, and for one so small (below about 4e-37) that the
// multiplier overflows; such blocks quantize to zeros.
static inline float block_inverse(float amax, bool has_nan) {
  if (has_nan || !(amax > 0)) return 0.0f;
  const float inverse = 127.0f / amax;
  return std::isfinite(inverse) ? inverse : 0.0f;
}

// A Q8_K block's scale: 1 / multiplier, as ggml's quantize_row_q8_K stores it (an ulp off
// amax / 127 at times). Where the multiplier is zero the block's quants are zeros, and the scale
// is block_scale's: NaN for a NaN, amax / 127 otherwise (0, infinite, or too small to invert).
static inline float super_block_scale(float amax, bool has_nan, float inverse) {
  return inverse > 0 ? 1.0f / inverse : block_scale(amax, has_nan);
}

// ggml's Q8_1 s: the unrounded scale times the quants' sum, rounded to fp16 as block_q8_1
// stores it; what the q4_1 / q5_1 mins multiply.
static inline float q8_1_sum(float d, std::int32_t sum) {
  return f16_to_f32(f32_to_f16(d * static_cast<float>(sum)));
}

// Sizes the per-block fields of `out` for `blocks` Q8_0 blocks.
static inline void resize_q8_0_fields(QuantizedActivations& out, std::int64_t blocks) {
  const auto size = static_cast<std::size_t>(blocks);
  out.q8_0.resize(size);
  out.q8_0_sums.resize(size);
  out.q8_1_sums.resize(size);
  out.q8_0_scales.resize(size);
  out.q8_0_offset.resize(size);
}

// Block b's sums and scales, from its unrounded scale d (the block's fp16 d already stored) and
// its quants' sum.
static inline void set_q8_0_fields(QuantizedActivations& out, std::int64_t b, float d,
                                   std::int32_t sum) {
  const auto i = static_cast<std::size_t>(b);
  out.q8_0_sums[i] = sum;
  out.q8_1_sums[i] = q8_1_sum(d, sum);
  out.q8_0_scales[i] = f16_to_f32(out.q8_0[i].d);
  out.q8_0_offset[i] = -128 * sum;
}

// Sizes the Q8_K blocks of `out` and their per-block fields for `blocks` blocks.
static inline void resize_q8_k_fields(QuantizedActivations& out, std::int64_t blocks) {
  const auto size = static_cast<std::size_t>(blocks);
  out.q8_k.resize(size);
  out.q8_k_sums32.resize(size * (kQK / 32));
  out.q8_k_offsets16.resize(size * (kQK / 16));
}

// Q8_K block b's per-block fields, from its bsums (already stored).
static inline void set_q8_k_fields(QuantizedActivations& out, std::int64_t b) {
  const std::int16_t* bsums = out.q8_k[static_cast<std::size_t>(b)].bsums;
  const auto first32 = static_cast<std::size_t>(b * (kQK / 32));
  const auto first16 = static_cast<std::size_t>(b * (kQK / 16));
  for (int j = 0; j < kQK / 32; ++j) out.q8_k_sums32[first32 + j] = bsums[2 * j] + bsums[2 * j + 1];
  for (int j = 0; j < kQK / 16; ++j) out.q8_k_offsets16[first16 + j] = 32 * bsums[j];
}

// The fixed final reduction of the eight accumulators (internal linkage: each ISA's file has
// its own copy, never one built for another ISA).
static inline float reduce8(const float* acc) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace moed::kernels::qdot
