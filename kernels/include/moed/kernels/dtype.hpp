#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace moed::kernels {

// Element types a weight tensor may have in a checkpoint and in a packed block: plain floats, or
// ggml's block-quantized formats (GGUF files), which stay in their blocks from the file to the
// kernels (quant.hpp has their layouts).
enum class DType : std::uint8_t {
  f32,
  bf16,
  f16,
  q8_0,
  q4_0,
  q4_1,
  q5_0,
  q5_1,
  q4_k,
  q5_k,
  q6_k,
  q3_k,
  iq4_nl,
  q2_k,
  iq4_xs,
  iq3_s
};

bool is_quantized(DType dtype);
// Bytes of one element; throws std::invalid_argument for a quantized type (elements come in
// blocks: use row_bytes).
std::size_t dtype_size(DType dtype);
// Bytes of a row of `cols` elements; throws std::invalid_argument naming the type when `cols` is
// not a whole number of its blocks.
std::size_t row_bytes(DType dtype, std::int64_t cols);
std::string_view dtype_name(DType dtype);
// Parses a safetensors dtype name ("F32", "BF16", "F16"); nullopt for any other.
std::optional<DType> dtype_from_safetensors(std::string_view name);

inline float bf16_to_f32(std::uint16_t bits) {
  std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
  float value;
  __builtin_memcpy(&value, &wide, sizeof value);
  return value;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline std::uint16_t f32_to_bf16(float value) {
  std::uint32_t bits;
  __builtin_memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

float f16_to_f32(std::uint16_t bits);

// dst[i] = float(src[i]) for n elements of the given dtype (little-endian, any alignment); a
// quantized type is dequantized, n a whole number of its blocks.
void convert_to_f32(const void* src, DType dtype, float* dst, std::size_t n);
void convert_f32_to_bf16(const float* src, std::uint16_t* dst, std::size_t n);

}  // namespace moed::kernels
