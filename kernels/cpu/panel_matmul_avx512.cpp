// Built with AVX-512F; called only where the CPU has it (panel_matmul checks).
#include <immintrin.h>

#include "moed/kernels/panel_matmul.hpp"
#include "widen_avx512.hpp"

namespace moed::kernels::detail {
namespace {

constexpr int kVectors = kPanelWidth / 16;

template <DType dtype>
__m512 load_widened(const std::byte* panel, std::int64_t index) {
  if constexpr (dtype == DType::f32)
    return widen16(reinterpret_cast<const float*>(panel) + index);
  else
    return widen16(reinterpret_cast<const std::uint16_t*>(panel) + index);
}

// The unroll pragmas let GCC keep the sums in registers; without them it stored every sum to the
// stack at each step.
template <DType dtype, int kRows>
void block(const std::byte* panel, std::int64_t depth, const float* x, std::int64_t x_stride,
           float* sums) {
  __m512 acc[kRows][kVectors];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < kVectors; ++q) acc[r][q] = _mm512_loadu_ps(sums + r * kPanelWidth + q * 16);
  for (std::int64_t k = 0; k < depth; ++k) {
    __m512 w[kVectors];
#pragma GCC unroll 8
    for (int q = 0; q < kVectors; ++q) w[q] = load_widened<dtype>(panel, k * kPanelWidth + q * 16);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * x_stride + k]);
#pragma GCC unroll 8
      for (int q = 0; q < kVectors; ++q) acc[r][q] = _mm512_fmadd_ps(xv, w[q], acc[r][q]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < kVectors; ++q) _mm512_storeu_ps(sums + r * kPanelWidth + q * 16, acc[r][q]);
}

template <DType dtype>
void dispatch(const std::byte* panel, std::int64_t depth, const float* x, std::int64_t x_stride,
              std::int64_t rows_of_x, float* sums) {
  switch (rows_of_x) {
    case 1:
      return block<dtype, 1>(panel, depth, x, x_stride, sums);
    case 2:
      return block<dtype, 2>(panel, depth, x, x_stride, sums);
    case 3:
      return block<dtype, 3>(panel, depth, x, x_stride, sums);
    case 4:
      return block<dtype, 4>(panel, depth, x, x_stride, sums);
    case 5:
      return block<dtype, 5>(panel, depth, x, x_stride, sums);
    default:
      return block<dtype, 6>(panel, depth, x, x_stride, sums);
  }
}

}  // namespace

void panel_block_avx512(DType dtype, const std::byte* panel, std::int64_t depth, const float* x,
                        std::int64_t x_stride, std::int64_t rows_of_x, float* acc) {
  if (dtype == DType::f32) {
    dispatch<DType::f32>(panel, depth, x, x_stride, rows_of_x, acc);
  } else {
    dispatch<DType::bf16>(panel, depth, x, x_stride, rows_of_x, acc);
  }
}

}  // namespace moed::kernels::detail
