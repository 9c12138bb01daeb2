// The row-tile kernels for AVX-512 VNNI (one 512-bit vector per tile, vpdpbusd); built with those
// flags, called only when the CPU has them (quant_tiles.cpp checks).
#define MOED_QTILE_512 1
#define MOED_QTILE_SUFFIX avx512
#include "quant_tiles_simd.inc"
