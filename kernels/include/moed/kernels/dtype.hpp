#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace moed::kernels {

// Element types a weight tensor may have in a checkpoint and in a packed block.
enum class DType : std::uint8_t { f32, bf16, f16 };

std::size_t dtype_size(DType dtype);
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

// dst[i] = float(src[i]) for n elements of the given dtype (little-endian, any alignment).
void convert_to_f32(const void* src, DType dtype, float* dst, std::size_t n);
void convert_f32_to_bf16(const float* src, std::uint16_t* dst, std::size_t n);

}  // namespace moed::kernels
