#pragma once

#include <compare>
#include <cstdint>

namespace moed::kernels::detail {

// A few rows of bf16 activations times a bf16 weight in oneDNN's blocked layout (BA16a<n>b2a:
// N blocks of n_block outputs; inside a block, for each pair of K elements in order, the pair of
// every output of the block), computed by moed with the arithmetic oneDNN's brgemm uses, so that
// the bits are the same and decode can leave oneDNN without its results moving. oneDNN's matmul
// costs a primitive call and a parallel region per weight; moed's rows also run inside a region
// of moed's own, where a decode step's experts are shared out to the threads
// (CpuMatmul::expert_ffns): on the Mixtral bench shapes two experts streamed at 65-71 GB/s in one
// region against 43-50 as four calls, each its own region.
//
// oneDNN 2.6's avx512_core_bf16 brgemm computes each output as a chain of vdpbf16ps over K in
// order (one pair of K elements per step), restarted from zero every K block, the blocks' sums
// added in order; the block is 512 elements where K <= 1024 and 1024 beyond (measured for every
// M, N and thread count tried). That is not part of oneDNN's interface, and other versions may
// split K otherwise (CpuMatmul keeps oneDNN off AMX, whose tiles round otherwise), so CpuMatmul
// checks each weight shape against oneDNN itself, on the compute thread, before moed computes it
// (bf16_rows_verdict).
std::int64_t onednn_bf16_k_block(std::int64_t k);

// Whether this CPU has vdpbf16ps (AVX512-BF16), which moed's rows need.
bool cpu_has_bf16_dot();

// A weight shape as oneDNN computes it: K, N, the layout's N block, and the OpenMP threads
// oneDNN splits the work over (its blocking may follow them).
struct Bf16RowsShape {
  std::int64_t k, n, n_block;
  int threads;
  auto operator<=>(const Bf16RowsShape&) const = default;
};
enum class Bf16RowsVerdict { unchecked, equal, differ };
// What the check found for this shape, process-wide; thread-safe.
Bf16RowsVerdict bf16_rows_verdict(const Bf16RowsShape& shape);
void record_bf16_rows_verdict(const Bf16RowsShape& shape, bool equal);

// y[i * n + c] = dot(weight row c, x row i) for i in [0, m), x bf16 [m, k] row-major, from a
// [k, n] bf16 weight packed in N blocks of n_block (k a multiple of 32, n of n_block); N blocks
// spread over the OpenMP threads. Only where cpu_has_bf16_dot().
void bf16_rows(std::int64_t k, std::int64_t n, std::int64_t n_block, const void* weights,
               const std::uint16_t* x, std::int64_t m, float* y);

// One N block of bf16_rows, built with AVX512-BF16 and run only where the CPU has it.
void bf16_rows_block_avx512(std::int64_t k, std::int64_t n, std::int64_t n_block,
                            const std::uint16_t* weights, std::int64_t n_block_index,
                            const std::uint16_t* x, std::int64_t m, float* y);

}  // namespace moed::kernels::detail
