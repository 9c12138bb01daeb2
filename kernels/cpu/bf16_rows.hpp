#pragma once

#include <cstdint>

#include "blocked_pack.hpp"

namespace moed::kernels::detail {

// A few rows of bf16 activations times a bf16 weight in oneDNN's blocked layout (BA16a64b2a),
// computed by moed with the arithmetic oneDNN's brgemm uses, so that the bits are the same and
// decode can leave oneDNN without its results moving. oneDNN's matmul costs a primitive call and
// a parallel region per weight; moed's rows also run inside a region of moed's own, where a
// decode step's experts go whole to the threads (CpuMatmul::expert_ffns): on the Mixtral bench
// shapes two experts streamed at 65-71 GB/s so, against 43-50 as four oneDNN calls.
//
// oneDNN 2.6's avx512_core_bf16 brgemm computes each output as a chain of vdpbf16ps over K in
// order (one pair of K elements per step), restarted from zero every K block, the blocks' sums
// added in order; the block is 512 elements where K <= 1024 and 1024 beyond (measured for every
// M, N and thread count; it is not part of oneDNN's interface). Each K is therefore checked once
// per process against oneDNN itself (bf16_rows_match_onednn) before moed computes it.
std::int64_t onednn_bf16_k_block(std::int64_t k);

// Whether this CPU has vdpbf16ps and, for weights of `k` inputs, moed's rows give oneDNN's bits:
// measured on a probe weight the first time each k is asked, then remembered. Thread-safe.
bool bf16_rows_match_onednn(std::int64_t k);

// y[i * layout.rows + n] = dot(weight row n, x row i) for i in [0, m), x bf16 [m, K] row-major;
// N blocks spread over the OpenMP threads. `weights` is the packed weight (64-byte aligned).
// Only where bf16_rows_match_onednn(K).
void bf16_rows(const BlockedLayout& layout, const void* weights, const std::uint16_t* x,
               std::int64_t m, float* y);

// One N block of bf16_rows, built with AVX512-BF16 and run only where the CPU has it.
void bf16_rows_block_avx512(const BlockedLayout& layout, const std::uint16_t* weights,
                            std::int64_t n_block_index, const std::uint16_t* x, std::int64_t m,
                            float* y);

}  // namespace moed::kernels::detail
