#include "moed/kernels/dtype.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "f8_widen.hpp"
#include "moed/kernels/quant.hpp"

namespace moed::kernels {

bool is_quantized(DType dtype) {
  return dtype != DType::f32 && dtype != DType::bf16 && dtype != DType::f16 &&
         dtype != DType::f8_e4m3;
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return 4;
    case DType::bf16:
    case DType::f16:
      return 2;
    case DType::f8_e4m3:
      return 1;
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
    case DType::f8_e4m3:
      return "f8_e4m3";
    default:
      return ggml_type_name(ggml_type_of(dtype));
  }
}

std::optional<DType> dtype_from_safetensors(std::string_view name) {
  if (name == "F32") return DType::f32;
  if (name == "BF16") return DType::bf16;
  if (name == "F16") return DType::f16;
  if (name == "F8_E4M3") return DType::f8_e4m3;
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
    case DType::f8_e4m3:
      throw std::invalid_argument(
          "convert_to_f32: f8_e4m3 values need their block scales (dequantize_f8_e4m3)");
    default:
      dequantize_row(ggml_type_of(dtype), src, dst, static_cast<std::int64_t>(n));
      return;
  }
}

namespace {

// Every code's value: a table, since the arithmetic route builds an f32 subnormal for exponent
// 0, whose multiply takes a microcode assist.
const std::array<float, 256>& f8_e4m3_values() {
  static const std::array<float, 256> values = [] {
    std::array<float, 256> table{};
    for (int code = 0; code < 256; ++code) {
      const int exponent = (code >> 3) & 0xf, mantissa = code & 7;
      const float magnitude = exponent == 0
                                  ? std::ldexp(static_cast<float>(mantissa), -9)
                                  : std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);
      table[static_cast<std::size_t>(code)] = (code & 0x7f) == 0x7f
                                                  ? std::numeric_limits<float>::quiet_NaN()
                                                  : (code & 0x80 ? -magnitude : magnitude);
    }
    return table;
  }();
  return values;
}

float scale_at(const BlockScales& scales, std::size_t index) {
  switch (scales.dtype) {
    case DType::f32: {
      float value;
      std::memcpy(&value, static_cast<const std::byte*>(scales.data) + 4 * index, 4);
      return value;
    }
    case DType::bf16:
    case DType::f16: {
      std::uint16_t bits;
      std::memcpy(&bits, static_cast<const std::byte*>(scales.data) + 2 * index, 2);
      return scales.dtype == DType::bf16 ? bf16_to_f32(bits) : f16_to_f32(bits);
    }
    default:  // check_scales refused it
      return std::numeric_limits<float>::quiet_NaN();
  }
}

void check_scales(const BlockScales& scales) {
  if (scales.data == nullptr || scales.block_rows <= 0 || scales.block_cols <= 0 ||
      scales.first_row < 0)
    throw std::invalid_argument("an f8_e4m3 weight without its block scales");
  if (scales.dtype != DType::f32 && scales.dtype != DType::bf16 && scales.dtype != DType::f16)
    throw std::invalid_argument("block scales of type " + std::string(dtype_name(scales.dtype)) +
                                " (f32, bf16 or f16 are read)");
}

}  // namespace

namespace detail {

void f8_e4m3_to_bf16_scalar(const std::uint8_t* in, std::int64_t n, const float* scales,
                            std::int64_t block_cols, std::uint16_t* out) {
  for (std::int64_t i = 0; i < n; ++i)
    out[i] = f32_to_bf16(f8_e4m3_to_f32(in[i]) * scales[i / block_cols]);
}

}  // namespace detail

void f8_e4m3_to_bf16(const void* src, const BlockScales& scales, std::int64_t rows,
                     std::int64_t cols, std::uint16_t* dst) {
  check_scales(scales);
  static const bool avx512 = __builtin_cpu_supports("avx512f") &&
                             __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");
  auto* widen = avx512 ? detail::f8_e4m3_to_bf16_avx512 : detail::f8_e4m3_to_bf16_scalar;
  const std::int64_t grid_cols = (cols + scales.block_cols - 1) / scales.block_cols;
  const auto* bytes = static_cast<const std::uint8_t*>(src);
  // A row's scales in f32, a stretch of blocks at a time: no allocation (this runs inside
  // parallel regions) and one call per stretch rather than per block.
  constexpr std::int64_t kStretch = 64;
  float stretch[kStretch];
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t grid_row = (scales.first_row + r) / scales.block_rows;
    for (std::int64_t first = 0; first < grid_cols; first += kStretch) {
      const std::int64_t blocks = std::min(kStretch, grid_cols - first);
      for (std::int64_t b = 0; b < blocks; ++b)
        stretch[b] = scale_at(scales, static_cast<std::size_t>(grid_row * grid_cols + first + b));
      const std::int64_t begin = first * scales.block_cols;
      const std::int64_t end = std::min(cols, (first + blocks) * scales.block_cols);
      widen(bytes + r * cols + begin, end - begin, stretch, scales.block_cols,
            dst + r * cols + begin);
    }
  }
}

float f8_e4m3_to_f32(std::uint8_t bits) {
  return f8_e4m3_values()[bits];
}

void dequantize_f8_e4m3(const void* src, const BlockScales& scales, std::int64_t rows,
                        std::int64_t cols, float* dst) {
  // Element by element, as f8_e4m3_to_bf16_scalar rounds: an embedding row or a router, where a
  // scratch row to widen from would cost an allocation per call.
  check_scales(scales);
  const std::int64_t grid_cols = (cols + scales.block_cols - 1) / scales.block_cols;
  const auto* bytes = static_cast<const std::uint8_t*>(src);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t grid_row = (scales.first_row + r) / scales.block_rows;
    for (std::int64_t block = 0; block < grid_cols; ++block) {
      const float scale = scale_at(scales, static_cast<std::size_t>(grid_row * grid_cols + block));
      const std::int64_t end = std::min(cols, (block + 1) * scales.block_cols);
      for (std::int64_t c = block * scales.block_cols; c < end; ++c)
        dst[r * cols + c] = bf16_to_f32(f32_to_bf16(f8_e4m3_to_f32(bytes[r * cols + c]) * scale));
    }
  }
}

void convert_f32_to_bf16(const float* src, std::uint16_t* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

}  // namespace moed::kernels
