#include "moed/kernels/dtype.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

#include "moed/kernels/quant.hpp"

namespace moed::kernels {

bool is_quantized(DType dtype) {
  return dtype != DType::f32 && dtype != DType::bf16 && dtype != DType::f16;
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return 4;
    case DType::bf16:
    case DType::f16:
      return 2;
    default:
      throw std::invalid_argument(std::string(dtype_name(dtype)) +
                                  " comes in blocks and has no element size");
  }
}

std::size_t row_bytes(DType dtype, std::int64_t cols) {
  if (cols < 0) throw std::invalid_argument("row_bytes: negative column count");
  if (!is_quantized(dtype)) return static_cast<std::size_t>(cols) * dtype_size(dtype);
  return ggml_row_bytes(ggml_type_of(dtype), static_cast<std::uint64_t>(cols));
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "f32";
    case DType::bf16:
      return "bf16";
    case DType::f16:
      return "f16";
    default:
      return ggml_type_name(ggml_type_of(dtype));
  }
}

std::optional<DType> dtype_from_safetensors(std::string_view name) {
  if (name == "F32") return DType::f32;
  if (name == "BF16") return DType::bf16;
  if (name == "F16") return DType::f16;
  return std::nullopt;
}

float f16_to_f32(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  std::uint32_t exponent = (bits >> 10) & 0x1fu;
  std::uint32_t mantissa = bits & 0x3ffu;
  std::uint32_t out;
  if (exponent == 0x1f) {
    out = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    out = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    out = sign;
  } else {  // subnormal half: normalise into a float
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    out = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float value;
  std::memcpy(&value, &out, sizeof value);
  return value;
}

void convert_to_f32(const void* src, DType dtype, float* dst, std::size_t n) {
  const auto* bytes = static_cast<const unsigned char*>(src);
  switch (dtype) {
    case DType::f32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::bf16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t bits;
        std::memcpy(&bits, bytes + 2 * i, 2);
        dst[i] = bf16_to_f32(bits);
      }
      return;
    case DType::f16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t bits;
        std::memcpy(&bits, bytes + 2 * i, 2);
        dst[i] = f16_to_f32(bits);
      }
      return;
    default:
      dequantize_row(ggml_type_of(dtype), src, dst, static_cast<std::int64_t>(n));
      return;
  }
}

void convert_f32_to_bf16(const float* src, std::uint16_t* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

}  // namespace moed::kernels
