#pragma once

#include <cstddef>
#include <cstdint>

#include "moed/kernels/quant.hpp"
#include "moed/kernels/quant_dot.hpp"
#include "stolen_ranges.hpp"

namespace moed::kernels::detail {

// Throws std::invalid_argument, naming the row, unless each of x's m rows is `cols` wide and
// quantized as row tiles of `type` need (Q8_0 blocks and sums, or Q8_K blocks).
void check_row_tile_activations(GgmlType type, std::int64_t cols, const QuantizedActivations* x,
                                std::int64_t m);

// row_tile_matmul over tile groups [first, last) only, on the calling thread; x already checked.
void row_tiles_on_this_thread(GgmlType type, const std::byte* tiles, std::int64_t rows,
                              std::int64_t cols, const QuantizedActivations* x, std::int64_t m,
                              float* y, std::int64_t y_stride, QuantIsa isa, std::int64_t first,
                              std::int64_t last);

// stored_rows_matmul over the rows of groups [first, last) (64 rows a group, as row tiles), on
// the calling thread; x already checked.
void stored_rows_on_this_thread(GgmlType type, const std::byte* stored, std::int64_t rows,
                                std::int64_t cols, const QuantizedActivations* x, std::int64_t m,
                                float* y, std::int64_t y_stride, QuantIsa isa, std::int64_t first,
                                std::int64_t last);

// Runs body(first, last) over tile groups [0, groups) of one product of m rows in one region
// (run_team). Each thread streams one contiguous run, a group (64 rows) a take (a
// compare-and-swap on a line no other thread touches until the runs meet), then takes single
// groups from the ends of the others' runs. Handing out single tiles from one counter (dynamic)
// interleaved the threads' reads and cost a third of the decode rate.
template <typename Body>
void over_row_groups(std::uint32_t groups, std::int64_t m, const Body& body) {
  constexpr std::uint32_t kOwnGroups = 1;
  constexpr std::uint32_t kStolenGroups = 1;
  over_stolen_ranges(groups, m, kOwnGroups, kStolenGroups, body);
}

}  // namespace moed::kernels::detail
