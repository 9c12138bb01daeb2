// The row-tile kernels for AVX2 (16 lanes as two 256-bit halves); built with AVX2 flags, called
// only when the CPU has them (quant_tiles.cpp checks).
#define MOED_QTILE_512 0
#define MOED_QTILE_SUFFIX avx2
#include "quant_tiles_simd.inc"
