// rewrite_blocks' Q3_K path built with AVX2; called only where the CPU has it (quant_tiles.cpp
// checks).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "moed/kernels/quant.hpp"
#include "quant_tiles_internal.hpp"

namespace moed::kernels::qtile {
#define MOED_REWRITE_Q3_K rewrite_q3_k_avx2
#include "rewrite_blocks.inc"
#undef MOED_REWRITE_Q3_K
}  // namespace moed::kernels::qtile
