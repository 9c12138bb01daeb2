#pragma once

#include <cstdint>

#include "moed/kernels/dtype.hpp"

namespace moed::kernels::detail {

// Runs run.template operator()<dtype, kRows>() for the panel kernels' compile-time variants: the
// weights' dtype (f32 or bf16) and the rows of x in the block (1 to 6; more are taken as 6).
template <typename Run>
void with_panel_block_variant(DType dtype, std::int64_t rows_of_x, const Run& run) {
  const auto rows = [&]<DType kDtype>() {
    switch (rows_of_x) {
      case 1:
        return run.template operator()<kDtype, 1>();
      case 2:
        return run.template operator()<kDtype, 2>();
      case 3:
        return run.template operator()<kDtype, 3>();
      case 4:
        return run.template operator()<kDtype, 4>();
      case 5:
        return run.template operator()<kDtype, 5>();
      default:
        return run.template operator()<kDtype, 6>();
    }
  };
  if (dtype == DType::f32) {
    rows.template operator()<DType::f32>();
  } else {
    rows.template operator()<DType::bf16>();
  }
}

}  // namespace moed::kernels::detail
