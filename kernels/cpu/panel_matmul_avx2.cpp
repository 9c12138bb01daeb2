// Built with AVX2 and FMA; called only where the CPU has them (panel_matmul checks).
#include <immintrin.h>

#include <cstring>

#include "moed/kernels/panel_matmul.hpp"

namespace moed::kernels::detail {
namespace {

constexpr int kVectors = kPanelWidth / 8;

template <DType dtype>
__m256 load_widened(const std::byte* panel, std::int64_t index) {
  if constexpr (dtype == DType::f32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(panel) + index);
  } else {
    const __m128i bits =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(panel + index * sizeof(std::uint16_t)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
}

// Sixteen registers hold one row's eight accumulators beside the weights, so rows go one at a
// time; each output is the same multiply-add chain as on the other paths.
template <DType dtype>
void row(const std::byte* panel, std::int64_t cols, const float* x, float* y, std::int64_t width) {
  __m256 acc[kVectors];
  for (auto& v : acc) v = _mm256_setzero_ps();
  for (std::int64_t k = 0; k < cols; ++k) {
    const __m256 xv = _mm256_set1_ps(x[k]);
    for (int q = 0; q < kVectors; ++q)
      acc[q] = _mm256_fmadd_ps(xv, load_widened<dtype>(panel, k * kPanelWidth + q * 8), acc[q]);
  }
  alignas(32) float out[kPanelWidth];
  for (int q = 0; q < kVectors; ++q) _mm256_store_ps(out + q * 8, acc[q]);
  std::memcpy(y, out, static_cast<std::size_t>(width) * sizeof(float));
}

}  // namespace

void panel_block_avx2(DType dtype, const std::byte* panel, std::int64_t cols, const float* x,
                      std::int64_t rows_of_x, float* y, std::int64_t y_stride, std::int64_t width) {
  for (std::int64_t r = 0; r < rows_of_x; ++r) {
    if (dtype == DType::f32) {
      row<DType::f32>(panel, cols, x + r * cols, y + r * y_stride, width);
    } else {
      row<DType::bf16>(panel, cols, x + r * cols, y + r * y_stride, width);
    }
  }
}

}  // namespace moed::kernels::detail
