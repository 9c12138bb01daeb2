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

// Row r of the matrix becomes lane r % kPanelWidth of panel r / kPanelWidth; the lanes past the
// last row are zero. Transposed a square of kPanelWidth inputs at a time, so that the lines
// written stay in L1 while the rows are read across them.
template <typename Element>
void pack_typed(const Element* in, std::int64_t rows, std::int64_t cols, Element* out) {
  for (std::int64_t p = 0; p < panel_count(rows); ++p) {
    Element* panel = out + p * kPanelWidth * cols;
    const std::int64_t width = std::min(kPanelWidth, rows - p * kPanelWidth);
    for (std::int64_t k0 = 0; k0 < cols; k0 += kPanelWidth) {
      const std::int64_t depth = std::min(kPanelWidth, cols - k0);
      for (std::int64_t j = 0; j < width; ++j) {
        const Element* row = in + (p * kPanelWidth + j) * cols + k0;
        Element* lane = panel + k0 * kPanelWidth + j;
        for (std::int64_t k = 0; k < depth; ++k) lane[k * kPanelWidth] = row[k];
      }
    }
    for (std::int64_t k = 0; width < kPanelWidth && k < cols; ++k)
      std::fill(panel + k * kPanelWidth + width, panel + (k + 1) * kPanelWidth, Element{});
  }
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
  if (!panel_dtype_supported(dtype))
    throw std::invalid_argument("pack_panels: no panels for dtype " +
                                std::string(dtype_name(dtype)));
  if (dtype == DType::f32) {
    pack_typed(static_cast<const float*>(matrix), rows, cols, reinterpret_cast<float*>(out));
  } else {
    pack_typed(static_cast<const std::uint16_t*>(matrix), rows, cols,
               reinterpret_cast<std::uint16_t*>(out));
  }
}

void pack_panels_transposed(const void* transposed, DType dtype, std::int64_t rows,
                            std::int64_t cols, std::byte* out) {
  if (!panel_dtype_supported(dtype))
    throw std::invalid_argument("pack_panels_transposed: no panels for dtype " +
                                std::string(dtype_name(dtype)));
  const std::size_t element = dtype_size(dtype);
  const std::size_t panel_row = static_cast<std::size_t>(kPanelWidth) * element;
  const auto* in = static_cast<const std::byte*>(transposed);
  for (std::int64_t p = 0; p < panel_count(rows); ++p) {
    std::byte* panel = out + static_cast<std::size_t>(p * cols) * panel_row;
    const auto width = static_cast<std::size_t>(std::min(kPanelWidth, rows - p * kPanelWidth));
    for (std::int64_t k = 0; k < cols; ++k) {
      std::byte* lane = panel + static_cast<std::size_t>(k) * panel_row;
      std::memcpy(lane, in + static_cast<std::size_t>(k * rows + p * kPanelWidth) * element,
                  width * element);
      std::memset(lane + width * element, 0, panel_row - width * element);
    }
  }
}

PanelPath best_panel_path() {
  static const PanelPath best = __builtin_cpu_supports("avx512f") ? PanelPath::avx512
                                : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                                    ? PanelPath::avx2
                                    : PanelPath::generic;
  return best;
}

const char* panel_path_name(PanelPath path) {
  switch (path) {
    case PanelPath::avx512:
      return "avx512";
    case PanelPath::avx2:
      return "avx2";
    default:
      return "generic";
  }
}

void panel_matmul(DType dtype, const std::byte* panels, std::int64_t batch, std::int64_t rows,
                  std::int64_t cols, const float* x, std::int64_t m, float* y, PanelPath path) {
  if (path > best_panel_path())
    throw std::invalid_argument(std::string("panel_matmul: this CPU cannot take the ") +
                                panel_path_name(path) + " path");
  const std::size_t matrix_bytes = panel_bytes(dtype, rows, cols);
  const std::size_t one_panel = static_cast<std::size_t>(kPanelWidth * cols) * dtype_size(dtype);
  const std::int64_t per_matrix = panel_count(rows);
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
      switch (path) {
        case PanelPath::avx512:
          detail::panel_block_avx512(dtype, panel, cols, xb, block, yb, rows, width);
          break;
        case PanelPath::avx2:
          detail::panel_block_avx2(dtype, panel, cols, xb, block, yb, rows, width);
          break;
        default:
          panel_block_generic(dtype, panel, cols, xb, block, yb, rows, width);
      }
    }
  }
}

}  // namespace moed::kernels
