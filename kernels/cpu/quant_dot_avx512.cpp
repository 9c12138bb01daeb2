// The quantized dot products for AVX-512 VNNI (vpdpbusd on 256-bit vectors, AVX512VL); built
// with those flags, called only when the CPU has them (quant_dot.cpp checks).
#define MOED_QDOT_VNNI 1
#define MOED_QDOT_SUFFIX avx512
#include "quant_dot_simd.inc"
