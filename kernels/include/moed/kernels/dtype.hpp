#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace moed::kernels {

// Element types a weight tensor may have in a checkpoint and in a packed block: plain floats,
// ggml's block-quantized formats (GGUF files), which stay in their blocks from the file to the
// kernels (quant.hpp has their layouts), or 8-bit floats with block scales beside them
// (fine-grained FP8 safetensors: f8_e4m3 and BlockScales).
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
  iq3_s,
  f8_e4m3,
  iq3_xxs,
  iq1_s,
  iq1_m,
  iq2_xxs,
  iq2_xs,
  iq2_s
};

// One of ggml's block formats (not f8_e4m3, whose scales lie apart from its elements).
bool is_quantized(DType dtype);
// Bytes of one element; throws std::invalid_argument for a quantized type (elements come in
// blocks: use row_bytes).
std::size_t dtype_size(DType dtype);
// Bytes of a row of `cols` elements; throws std::invalid_argument naming the type when `cols` is
// not a whole number of its blocks.
std::size_t row_bytes(DType dtype, std::int64_t cols);
std::string_view dtype_name(DType dtype);
// Parses a safetensors dtype name ("F32", "BF16", "F16", "F8_E4M3"); nullopt for any other.
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

// OCP FP8 E4M3 as torch.float8_e4m3fn stores it: sign, 4 exponent bits (bias 7), 3 mantissa
// bits, subnormals, no infinities, 0x7f and 0xff NaN.
float f8_e4m3_to_f32(std::uint8_t bits);

// The multipliers of a weight stored in f8_e4m3, as fine-grained FP8 checkpoints (DeepSeek-V3,
// Qwen3's FP8 releases: quantization_config.weight_block_size) keep them in a companion tensor
// `<name>_scale_inv`: one per block of block_rows x block_cols elements, in a row-major grid of
// [ceil(rows / block_rows), ceil(cols / block_cols)]; edge blocks are partial. `data` is the
// grid of the whole tensor; first_row is where, in that tensor, the rows described start (a
// part may be a slice of its tensor's rows).
struct BlockScales {
  const void* data = nullptr;
  DType dtype = DType::f32;  // f32, bf16 or f16
  std::int64_t block_rows = 0;
  std::int64_t block_cols = 0;
  std::int64_t first_row = 0;
};

// An FP8 weight's values as moed computes it, rows of `cols` elements from scales.first_row on:
// each f8(src) times its block's scale in f32, rounded to bf16 (nearest even; NaN codes as bf16's
// quiet NaN), as DeepSeek's fp8_cast_bf16 writes them; AVX-512 where the CPU has it, the same bits
// either way. Throws std::invalid_argument when the scales are missing or of a type it does not
// read (with rows 0, a check alone).
void f8_e4m3_to_bf16(const void* src, const BlockScales& scales, std::int64_t rows,
                     std::int64_t cols, std::uint16_t* dst);
// The same values widened to f32, where a weight is read as floats (a router, an embedding row).
void dequantize_f8_e4m3(const void* src, const BlockScales& scales, std::int64_t rows,
                        std::int64_t cols, float* dst);

// dst[i] = float(src[i]) for n elements of the given dtype (little-endian, any alignment); a
// quantized type is dequantized, n a whole number of its blocks. Not for f8_e4m3, whose values
// need their block scales (dequantize_f8_e4m3): throws std::invalid_argument.
void convert_to_f32(const void* src, DType dtype, float* dst, std::size_t n);
void convert_f32_to_bf16(const float* src, std::uint16_t* dst, std::size_t n);

}  // namespace moed::kernels
