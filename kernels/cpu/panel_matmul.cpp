#include "moed/kernels/panel_matmul.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "stolen_ranges.hpp"

namespace moed::kernels {
namespace {

// Rows of x that share one pass over a panel's rows: six rows' sums and a panel row fit the
// sixteen AVX2 registers (a quarter of the panel at a time) and the 32 of AVX-512 (all of it).
constexpr std::int64_t kRowBlock = 6;
// Bytes of a panel's rows that the blocks of x's rows take in turn: within L1 (32-48 KB on the
// x86 cores moed runs on) beside the rows of x they meet.
constexpr std::size_t kDepthBytes = 16 * 1024;
// Rows of x whose running sums a thread holds at a time (63 KiB of them).
constexpr std::int64_t kSumsRows = 42 * kRowBlock;

std::int64_t panel_count(std::int64_t rows) {
  return (rows + kPanelWidth - 1) / kPanelWidth;
}

float widen(const std::byte* panel, DType dtype, std::int64_t index) {
  if (dtype == DType::f32) return reinterpret_cast<const float*>(panel)[index];
  return bf16_to_f32(reinterpret_cast<const std::uint16_t*>(panel)[index]);
}

void panel_block_generic(DType dtype, const std::byte* panel, std::int64_t depth, const float* x,
                         std::int64_t x_stride, std::int64_t rows_of_x, float* acc) {
  for (std::int64_t k = 0; k < depth; ++k)
    for (std::int64_t r = 0; r < rows_of_x; ++r) {
      const float xv = x[r * x_stride + k];
      for (std::int64_t j = 0; j < kPanelWidth; ++j)
        acc[r * kPanelWidth + j] =
            std::fma(xv, widen(panel, dtype, k * kPanelWidth + j), acc[r * kPanelWidth + j]);
    }
}

// Row r of the matrix becomes lane r % kPanelWidth of panel r / kPanelWidth; the lanes past the
// last row are zero. Columns [first_column, cols) of one panel (`rows` are the panel's own),
// transposed a square of kPanelWidth inputs at a time, so that the lines written stay in L1
// while the rows are read across them.
template <typename Element>
void pack_panel_scalar(std::span<const std::byte* const> rows, std::int64_t first_column,
                       std::int64_t cols, Element* panel) {
  const auto width = static_cast<std::int64_t>(rows.size());
  for (std::int64_t k0 = first_column; k0 < cols; k0 += kPanelWidth) {
    const std::int64_t depth = std::min(kPanelWidth, cols - k0);
    for (std::int64_t j = 0; j < width; ++j) {
      const Element* row = reinterpret_cast<const Element*>(rows[static_cast<std::size_t>(j)]) + k0;
      Element* lane = panel + k0 * kPanelWidth + j;
      for (std::int64_t k = 0; k < depth; ++k) lane[k * kPanelWidth] = row[k];
    }
  }
  for (std::int64_t k = first_column; width < kPanelWidth && k < cols; ++k)
    std::fill(panel + k * kPanelWidth + width, panel + (k + 1) * kPanelWidth, Element{});
}

// Columns of a whole panel that go through register transposes on `path`, from the first: 16 at
// a time on AVX-512, 8 of bf16 on AVX2 (for f32, AVX2's 8x8 transposes writing half lines ran no
// faster than the element-by-element loop).
std::int64_t columns_in_registers(PanelPath path, DType dtype, std::int64_t cols) {
  if (dtype == DType::f8_e4m3 && path == PanelPath::avx512)
    return __builtin_cpu_supports("avx512bw") ? cols / 64 * 64 : 0;
  if (dtype == DType::f8_e4m3) return path == PanelPath::avx2 ? cols / 32 * 32 : 0;
  if (path == PanelPath::avx512) return cols / 16 * 16;
  if (path == PanelPath::avx2 && dtype == DType::bf16) return cols / 8 * 8;
  return 0;
}

void require_panel_path(PanelPath path, const char* caller) {
  if (path > best_panel_path())
    throw std::invalid_argument(std::string(caller) + ": this CPU cannot take the " +
                                panel_path_name(path) + " path");
}

void require_panel_dtype(DType dtype, const char* caller) {
  if (!panel_dtype_supported(dtype))
    throw std::invalid_argument(std::string(caller) + ": no panels for dtype " +
                                std::string(dtype_name(dtype)));
}

}  // namespace

bool panel_dtype_supported(DType dtype) {
  return dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f8_e4m3;
}

std::size_t panel_scale_count(std::int64_t rows, std::int64_t cols, std::int64_t block_cols) {
  return static_cast<std::size_t>(panel_count(rows) * ((cols + block_cols - 1) / block_cols) *
                                  kPanelWidth);
}

bool panel_fast_scale(float scale) {
  // 256 times the scale is then exact and finite, and so is every product with a code.
  return std::fabs(scale) <= std::ldexp(1.0f, 100);
}

std::size_t panel_bytes(DType dtype, std::int64_t rows, std::int64_t cols) {
  require_panel_dtype(dtype, "panel_bytes");
  return static_cast<std::size_t>(panel_count(rows) * kPanelWidth * cols) * dtype_size(dtype);
}

void pack_panels_rows(std::span<const std::byte* const> rows, DType dtype, std::int64_t cols,
                      std::byte* out, PanelPath path) {
  require_panel_dtype(dtype, "pack_panels_rows");
  require_panel_path(path, "pack_panels_rows");
  const auto count = static_cast<std::int64_t>(rows.size());
  const std::size_t one_panel = static_cast<std::size_t>(kPanelWidth * cols) * dtype_size(dtype);
  // Panels over OpenMP's threads, as pack_row_tiles spreads tiles: a streamed expert has compute
  // waiting on its packing.
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < panel_count(count); ++p) {
    std::byte* panel = out + static_cast<std::size_t>(p) * one_panel;
    const auto panel_rows =
        rows.subspan(static_cast<std::size_t>(p * kPanelWidth),
                     static_cast<std::size_t>(std::min(kPanelWidth, count - p * kPanelWidth)));
    const std::int64_t transposed = panel_rows.size() == static_cast<std::size_t>(kPanelWidth)
                                        ? columns_in_registers(path, dtype, cols)
                                        : 0;
    if (transposed > 0 && dtype == DType::f8_e4m3 && path == PanelPath::avx512)
      detail::pack_panel_f8_avx512(panel_rows.data(), transposed, panel);
    else if (transposed > 0 && dtype == DType::f8_e4m3)
      detail::pack_panel_f8_avx2(panel_rows.data(), transposed, panel);
    else if (transposed > 0 && path == PanelPath::avx512)
      detail::pack_panel_avx512(dtype, panel_rows.data(), transposed, panel);
    else if (transposed > 0)
      detail::pack_panel_bf16_avx2(panel_rows.data(), transposed, panel);
    if (dtype == DType::f32) {
      pack_panel_scalar(panel_rows, transposed, cols, reinterpret_cast<float*>(panel));
    } else if (dtype == DType::f8_e4m3) {
      pack_panel_scalar(panel_rows, transposed, cols, reinterpret_cast<std::uint8_t*>(panel));
    } else {
      pack_panel_scalar(panel_rows, transposed, cols, reinterpret_cast<std::uint16_t*>(panel));
    }
  }
}

void pack_panels(const void* matrix, DType dtype, std::int64_t rows, std::int64_t cols,
                 std::byte* out) {
  require_panel_dtype(dtype, "pack_panels");
  const std::size_t row_bytes = static_cast<std::size_t>(cols) * dtype_size(dtype);
  std::vector<const std::byte*> starts(static_cast<std::size_t>(rows));
  for (std::size_t r = 0; r < starts.size(); ++r)
    starts[r] = static_cast<const std::byte*>(matrix) + r * row_bytes;
  pack_panels_rows(starts, dtype, cols, out);
}

void pack_panels_transposed(const void* transposed, DType dtype, std::int64_t rows,
                            std::int64_t cols, std::byte* out) {
  require_panel_dtype(dtype, "pack_panels_transposed");
  const std::size_t element = dtype_size(dtype);
  const std::size_t panel_row = static_cast<std::size_t>(kPanelWidth) * element;
  const auto* in = static_cast<const std::byte*>(transposed);
#pragma omp parallel for schedule(static)
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
  static const PanelPath best = [] {
    PanelPath most = __builtin_cpu_supports("avx512f") ? PanelPath::avx512
                     : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                         ? PanelPath::avx2
                         : PanelPath::generic;
    if (const char* cap = std::getenv(kMaxPanelIsaVariable)) {
      if (const auto named = panel_path_named(cap))
        most = std::min(most, *named);
      else
        std::fprintf(stderr, "moed: %s=%s names no path (%s); ignored\n", kMaxPanelIsaVariable, cap,
                     panel_path_names().c_str());
    }
    return most;
  }();
  return best;
}

std::optional<PanelPath> panel_path_named(std::string_view name) {
  for (const PanelPath path : kPanelPaths)
    if (name == panel_path_name(path)) return path;
  return std::nullopt;
}

std::string panel_path_names() {
  std::string names;
  for (const PanelPath path : kPanelPaths)
    names += (names.empty() ? "" : ", ") + std::string(panel_path_name(path));
  return names;
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

namespace detail {

void panels_on_this_thread(DType dtype, const std::byte* panels, std::int64_t rows,
                           std::int64_t cols, const float* x, std::int64_t m, float* y,
                           PanelPath path, std::uint32_t first, std::uint32_t last,
                           const PanelScales* scales) {
  const std::size_t matrix_bytes = panel_bytes(dtype, rows, cols);
  const std::size_t panel_row = static_cast<std::size_t>(kPanelWidth) * dtype_size(dtype);
  const std::size_t one_panel = panel_row * static_cast<std::size_t>(cols);
  const std::int64_t per_matrix = panel_count(rows);
  // The panel's rows taken kDepthBytes at a time, over every block of x's rows, so that the
  // weights one block reads are still in L1 for the next, rather than read again from L2 for
  // each block. The running sums go through memory between runs unchanged, so each output is
  // still one chain in input order.
  const auto depth_step = static_cast<std::int64_t>(kDepthBytes / panel_row);
  // At most kSumsRows rows' sums at a time, so that a long prompt does not leave each thread a
  // large scratch; the panel is read again for each further chunk of rows.
  thread_local std::vector<float> sums;
  thread_local std::vector<std::uint16_t> widened;  // an FP8 panel's rows as bf16
  for (std::int64_t unit = first; unit < last; ++unit) {
    const std::int64_t b = unit / per_matrix;
    const std::int64_t p = unit % per_matrix;
    const std::byte* panel = panels + static_cast<std::size_t>(b) * matrix_bytes +
                             static_cast<std::size_t>(p) * one_panel;
    const std::int64_t width = std::min(kPanelWidth, rows - p * kPanelWidth);
    for (std::int64_t i0 = 0; i0 < m; i0 += kSumsRows) {
      const std::int64_t chunk = std::min(kSumsRows, m - i0);
      sums.assign(static_cast<std::size_t>(chunk * kPanelWidth), 0.0f);
      for (std::int64_t k0 = 0; k0 < cols; k0 += depth_step) {
        const std::int64_t depth = std::min(depth_step, cols - k0);
        const std::byte* rows_k0 = panel + static_cast<std::size_t>(k0) * panel_row;
        // With several blocks of rows, the first block to reach a run waits on memory for it
        // while the later ones find it in L1: the next run is asked for in software, a share of
        // it in each block's turn ([1024, 2816], 64 rows, two threads, alternated: AVX-512 f32
        // 1.9-2.1 to 1.6 ms, bf16 1.9-2.1 to 1.7; AVX2 f32 2.8-3.1 to 2.2; f32 bench prefill
        // under the AVX2 caps 334-361 to 353-376 tokens/s). A single block streams, and the
        // hardware prefetchers keep up with it. The next run is this panel's (the first again
        // for the next chunk of rows); the next panel is another range's, taken by whichever
        // thread gets to it.
        const std::byte* next = nullptr;
        std::size_t next_bytes = 0;
        if (chunk > kRowBlock && (k0 + depth < cols || i0 + kSumsRows < m)) {
          const std::int64_t next_k0 = k0 + depth < cols ? k0 + depth : 0;
          next = panel + static_cast<std::size_t>(next_k0) * panel_row;
          next_bytes = static_cast<std::size_t>(std::min(depth_step, cols - next_k0)) * panel_row;
        }
        // An FP8 panel's scales from row k0 on.
        const PanelBlockScales block_scales =
            scales == nullptr
                ? PanelBlockScales{}
                : PanelBlockScales{
                      scales->table +
                          (b * per_matrix + p) * panel_scale_count(1, cols, scales->block_cols),
                      scales->block_cols, k0, scales->careful};
        if (scales != nullptr && chunk > kRowBlock) {
          widened.resize(static_cast<std::size_t>(depth * kPanelWidth));
          if (path == PanelPath::avx512) {
            widen_f8_panel_avx512(rows_k0, depth, block_scales, widened.data());
          } else {
            widen_f8_panel_avx2(rows_k0, depth, block_scales, widened.data());
          }
        }
        const std::int64_t blocks = (chunk + kRowBlock - 1) / kRowBlock;
        const std::size_t lines_per_block =
            (next_bytes / 64 + static_cast<std::size_t>(blocks) - 1) /
            static_cast<std::size_t>(blocks);
        std::size_t asked = 0;
        for (std::int64_t i = 0; i < chunk; i += kRowBlock) {
          const std::int64_t block = std::min(kRowBlock, chunk - i);
          for (const std::size_t end = std::min(next_bytes, asked + 64 * lines_per_block);
               asked < end; asked += 64)
            __builtin_prefetch(next + asked, 0, 2);
          const float* xb = x + (b * m + i0 + i) * cols + k0;
          float* acc = sums.data() + i * kPanelWidth;
          if (scales != nullptr && chunk <= kRowBlock) {
            if (path == PanelPath::avx512) {
              f8_panel_block_avx512(rows_k0, depth, xb, cols, block, acc, block_scales);
            } else {
              f8_panel_block_avx2(rows_k0, depth, xb, cols, block, acc, block_scales);
            }
            continue;
          }
          // Many blocks of rows take an FP8 panel's rows widened once, as a bf16 panel's.
          const DType block_dtype = scales != nullptr ? DType::bf16 : dtype;
          const std::byte* block_rows =
              scales != nullptr ? reinterpret_cast<const std::byte*>(widened.data()) : rows_k0;
          switch (path) {
            case PanelPath::avx512:
              panel_block_avx512(block_dtype, block_rows, depth, xb, cols, block, acc);
              break;
            case PanelPath::avx2:
              panel_block_avx2(block_dtype, block_rows, depth, xb, cols, block, acc);
              break;
            default:
              panel_block_generic(block_dtype, block_rows, depth, xb, cols, block, acc);
          }
        }
      }
      for (std::int64_t i = 0; i < chunk; ++i)
        std::memcpy(y + (b * m + i0 + i) * rows + p * kPanelWidth, sums.data() + i * kPanelWidth,
                    static_cast<std::size_t>(width) * sizeof(float));
    }
  }
}

}  // namespace detail

std::uint32_t panel_units(std::int64_t batch, std::int64_t rows) {
  return static_cast<std::uint32_t>(batch * panel_count(rows));
}

void panel_matmul(DType dtype, const std::byte* panels, std::int64_t batch, std::int64_t rows,
                  std::int64_t cols, const float* x, std::int64_t m, float* y, PanelPath path,
                  const PanelScales* scales) {
  require_panel_path(path, "panel_matmul");
  require_panel_dtype(dtype, "panel_matmul");
  if ((dtype == DType::f8_e4m3) != (scales != nullptr) ||
      (scales != nullptr && (path == PanelPath::generic || scales->block_cols <= 0)))
    throw std::invalid_argument(
        "panel_matmul: f8_e4m3 panels need their scales and the AVX2 or AVX-512 path, other "
        "dtypes no scales");
  // On moed's Team for a decode step's few rows, as the quantized products run, so that its
  // spinning workers and libgomp's do not take turns on the same cores.
  detail::over_stolen_ranges(panel_units(batch, rows), m, 1, 1,
                             [&](std::uint32_t first, std::uint32_t last) {
                               detail::panels_on_this_thread(dtype, panels, rows, cols, x, m, y,
                                                             path, first, last, scales);
                             });
}

}  // namespace moed::kernels
