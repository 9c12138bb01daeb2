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

template <DType dtype, int kRows>
void block(const std::byte* panel, std::int64_t cols, const float* x, float* y,
           std::int64_t y_stride, std::int64_t width) {
  __m512 acc[kRows][kVectors];
  for (auto& row : acc)
    for (auto& v : row) v = _mm512_setzero_ps();
  for (std::int64_t k = 0; k < cols; ++k) {
    __m512 w[kVectors];
    for (int q = 0; q < kVectors; ++q) w[q] = load_widened<dtype>(panel, k * kPanelWidth + q * 16);
    for (int r = 0; r < kRows; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * cols + k]);
      for (int q = 0; q < kVectors; ++q) acc[r][q] = _mm512_fmadd_ps(xv, w[q], acc[r][q]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int q = 0; q < kVectors; ++q) {
      const std::int64_t left = width - q * 16;
      if (left <= 0) break;
      const __mmask16 mask = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
      _mm512_mask_storeu_ps(y + r * y_stride + q * 16, mask, acc[r][q]);
    }
}

template <DType dtype>
void dispatch(const std::byte* panel, std::int64_t cols, const float* x, std::int64_t rows_of_x,
              float* y, std::int64_t y_stride, std::int64_t width) {
  switch (rows_of_x) {
    case 1:
      return block<dtype, 1>(panel, cols, x, y, y_stride, width);
    case 2:
      return block<dtype, 2>(panel, cols, x, y, y_stride, width);
    case 3:
      return block<dtype, 3>(panel, cols, x, y, y_stride, width);
    default:
      return block<dtype, 4>(panel, cols, x, y, y_stride, width);
  }
}

}  // namespace

void panel_block_avx512(DType dtype, const std::byte* panel, std::int64_t cols, const float* x,
                        std::int64_t rows_of_x, float* y, std::int64_t y_stride,
                        std::int64_t width) {
  if (dtype == DType::f32) {
    dispatch<DType::f32>(panel, cols, x, rows_of_x, y, y_stride, width);
  } else {
    dispatch<DType::bf16>(panel, cols, x, rows_of_x, y, y_stride, width);
  }
}

}  // namespace moed::kernels::detail
