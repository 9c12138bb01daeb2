// The quantized dot products for AVX2 (+FMA, F16C); built with those flags, called only when
// the CPU has them (quant_dot.cpp checks).
#define MOED_QDOT_VNNI 0
#define MOED_QDOT_SUFFIX avx2
#include "quant_dot_simd.inc"
