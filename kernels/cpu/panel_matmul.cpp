#include "moed/kernels/panel_matmul.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace moed::kernels {
namespace {

constexpr std::int64_t kRowBlock = 4;  // rows of x that share one pass over a panel

std::int64_t panel_count(std::int64_t rows) {
  return (rows + kPanelWidth - 1) / kPanelWidth;
}

float widen(const std::byte* panel, DType dtype, std::int64_t index) {
  if (dtype == DType::f32) return reinterpret_cast<const float*>(panel)[index];
  return bf16_to_f32(reinterpret_cast<const std::uint16_t*>(panel)[index]);
}

void panel_block_generic(DType dtype, const std::byte* panel, std::int64_t cols, const float* x,
                         std::int64_t rows_of_x, float* y, std::int64_t y_stride,
                         std::int64_t width) {
  float acc[kRowBlock][kPanelWidth] = {};
  for (std::int64_t k = 0; k < cols; ++k)
    for (std::int64_t r = 0; r < rows_of_x; ++r) {
      const float xv = x[r * cols + k];
      for (std::int64_t j = 0; j < kPanelWidth; ++j)
        acc[r][j] = std::fma(xv, widen(panel, dtype, k * kPanelWidth + j), acc[r][j]);
    }
  for (std::int64_t r = 0; r < rows_of_x; ++r)
    std::memcpy(y + r * y_stride, acc[r], static_cast<std::size_t>(width) * sizeof(float));
}

}  // namespace

bool panel_dtype_supported(DType dtype) {
  return dtype == DType::f32 || dtype == DType::bf16;
}

std::size_t panel_bytes(DType dtype, std::int64_t rows, std::int64_t cols) {
  if (!panel_dtype_supported(dtype))
    throw std::invalid_argument("panel_bytes: no panels for dtype " +
                                std::string(dtype_name(dtype)));
  return static_cast<std::size_t>(panel_count(rows) * kPanelWidth * cols) * dtype_size(dtype);
}

void pack_panels(const void* matrix, DType dtype, std::int64_t rows, std::int64_t cols,
                 std::byte* out) {
  const std::size_t element = dtype_size(dtype);
  std::memset(out, 0, panel_bytes(dtype, rows, cols));
  const auto* in = static_cast<const std::byte*>(matrix);
  for (std::int64_t row = 0; row < rows; ++row) {
    std::byte* panel =
        out + static_cast<std::size_t>(row / kPanelWidth * kPanelWidth * cols) * element;
    const std::int64_t j = row % kPanelWidth;
    for (std::int64_t k = 0; k < cols; ++k)
      std::memcpy(panel + static_cast<std::size_t>(k * kPanelWidth + j) * element,
                  in + static_cast<std::size_t>(row * cols + k) * element, element);
  }
}

PanelPath best_panel_path() {
  static const PanelPath best =
      __builtin_cpu_supports("avx512f") ? PanelPath::avx512 : PanelPath::generic;
  return best;
}

const char* panel_path_name(PanelPath path) {
  return path == PanelPath::avx512 ? "avx512" : "generic";
}

void panel_matmul(DType dtype, const std::byte* panels, std::int64_t batch, std::int64_t rows,
                  std::int64_t cols, const float* x, std::int64_t m, float* y, PanelPath path) {
  if (path == PanelPath::avx512 && best_panel_path() != PanelPath::avx512)
    throw std::invalid_argument("panel_matmul: this CPU has no AVX-512F");
  const std::size_t matrix_bytes = panel_bytes(dtype, rows, cols);
  const std::size_t one_panel = static_cast<std::size_t>(kPanelWidth * cols) * dtype_size(dtype);
  const std::int64_t per_matrix = panel_count(rows);
  const bool avx512 = path == PanelPath::avx512;
#pragma omp parallel for schedule(static)
  for (std::int64_t task = 0; task < batch * per_matrix; ++task) {
    const std::int64_t b = task / per_matrix;
    const std::int64_t p = task % per_matrix;
    const std::byte* panel = panels + static_cast<std::size_t>(b) * matrix_bytes +
                             static_cast<std::size_t>(p) * one_panel;
    const std::int64_t width = std::min(kPanelWidth, rows - p * kPanelWidth);
    for (std::int64_t i = 0; i < m; i += kRowBlock) {
      const std::int64_t block = std::min(kRowBlock, m - i);
      const float* xb = x + (b * m + i) * cols;
      float* yb = y + (b * m + i) * rows + p * kPanelWidth;
      if (avx512) {
        detail::panel_block_avx512(dtype, panel, cols, xb, block, yb, rows, width);
      } else {
        panel_block_generic(dtype, panel, cols, xb, block, yb, rows, width);
      }
    }
  }
}

}  // namespace moed::kernels
