#include "f8_rows.hpp"

#include <algorithm>
#include <cmath>

#include "bf16_rows.hpp"

namespace moed::kernels::detail {

std::size_t f8_rows_chunk_elements(const F8RowsLayout& layout) {
  return static_cast<std::size_t>(std::min(layout.k, onednn_bf16_k_block(layout.k)) *
                                  layout.n_block);
}

bool f8_rows_fast_scale(float scale) {
  // A nonzero code is at least 2^-9 and at most 448 (< 2^9) in magnitude: a scale in
  // [2^-117, 2^100] keeps the product (and 256 times the scale) normal and finite.
  const float magnitude = std::fabs(scale);
  return magnitude == 0.0f ||
         (magnitude >= std::ldexp(1.0f, -117) && magnitude <= std::ldexp(1.0f, 100));
}

}  // namespace moed::kernels::detail
