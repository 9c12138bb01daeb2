#pragma once

#include <cstddef>
#include <cstdint>

#include "moed/kernels/quant.hpp"
#include "moed/kernels/quant_dot.hpp"

namespace moed::kernels::detail {

// Throws std::invalid_argument, naming the row, unless each of x's m rows is `cols` wide and
// quantized as row tiles of `type` need (Q8_0 blocks and sums, or Q8_K blocks).
void check_row_tile_activations(GgmlType type, std::int64_t cols, const QuantizedActivations* x,
                                std::int64_t m);

// row_tile_matmul over tiles [first, last) only, on the calling thread; x already checked.
void row_tiles_on_this_thread(GgmlType type, const std::byte* tiles, std::int64_t rows,
                              std::int64_t cols, const QuantizedActivations* x, std::int64_t m,
                              float* y, std::int64_t y_stride, QuantIsa isa, std::int64_t first,
                              std::int64_t last);

}  // namespace moed::kernels::detail
