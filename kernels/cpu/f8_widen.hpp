#pragma once

#include <cstdint>

namespace moed::kernels::detail {

// out[i] = bf16(f8_e4m3(in[i]) * scales[i / block_cols]) for i < n, the product in f32 and
// rounded to nearest even, NaN codes as bf16's quiet NaN: a stretch of an FP8 row, one scale per
// block of block_cols elements. The AVX-512 (F, BW, VL) build is called only where the CPU has
// it; both give the same bits.
void f8_e4m3_to_bf16_scalar(const std::uint8_t* in, std::int64_t n, const float* scales,
                            std::int64_t block_cols, std::uint16_t* out);
void f8_e4m3_to_bf16_avx512(const std::uint8_t* in, std::int64_t n, const float* scales,
                            std::int64_t block_cols, std::uint16_t* out);

}  // namespace moed::kernels::detail
