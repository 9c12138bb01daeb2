#pragma once

// Dot products of ggml-quantized weight rows with activations quantized per block to int8, as
// ggml computes them: Q8_0 blocks (with their integer sums, and for q4_1 / q5_1 Q8_1's fp16
// sum) against the 32-element formats, Q8_K blocks (with 16-element sums) against the K-quants.
// Each block's products are summed in integers; the float part follows one fixed order (block b
// adds into accumulator b % 8, the eight summed pairwise at the end; for Q8_0 weights, the integer
// sum of elements 4j..4j+3 of every block adds into accumulator j, which spares the SIMD paths a
// horizontal sum per block), so the scalar, AVX2 and AVX-512 VNNI paths give the same float bit for
// bit. These row-by-row kernels follow ggml's own block order; moed computes with row tiles
// (quant_tiles.hpp), which the tests check against them.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moed/kernels/quant.hpp"

namespace moed::kernels {

// One activation row, quantized for every weight format that can meet it.
struct QuantizedActivations {
  std::int64_t n = 0;
  std::vector<BlockQ8_0> q8_0;          // n / 32 blocks, fp16 scale as ggml's q8_0
  std::vector<std::int32_t> q8_0_sums;  // sum of each block's quants (q4_0 / q5_0 offsets)
  // Per block, in the form the row-tile kernels broadcast straight from memory: the scale as a
  // float, and -128 times the quants' sum (negative: where a dot with q8_0 weights stored + 128
  // starts, rather than an amount subtracted).
  std::vector<float> q8_0_scales;
  std::vector<std::int32_t> q8_0_offset;
  // What q4_1 / q5_1 mins multiply: ggml's Q8_1 s, the block's unrounded scale times its quants'
  // sum, rounded to fp16 as ggml stores it.
  std::vector<float> q8_1_sums;
  std::vector<BlockQ8_K> q8_k;  // n / 256 blocks when n is a multiple of 256
  // Per Q8_K block, for the row-tile kernels to broadcast from memory: the sum of each 32 quants
  // (8 a block: what q4_K / q5_K mins multiply) and 32 times the sum of each 16 (16 a block:
  // q6_K's offset of 32).
  std::vector<std::int32_t> q8_k_sums32;
  std::vector<std::int32_t> q8_k_offsets16;
};

enum class QuantIsa { scalar, avx2, avx512_vnni };
inline constexpr QuantIsa kQuantIsas[] = {QuantIsa::scalar, QuantIsa::avx2, QuantIsa::avx512_vnni};
std::string_view quant_isa_name(QuantIsa isa);
// The path quant_isa_name calls `name`, or none.
std::optional<QuantIsa> quant_isa_named(std::string_view name);
// Every path's name, worst first, for messages: "scalar, avx2, avx512_vnni".
std::string quant_isa_names();
// The environment variable that caps best_quant_isa(): a path's name, to run (and measure) on
// this CPU the quantized kernels that a CPU without the better paths runs (only those: the
// attention, f32 and bf16 kernels keep their own CPU checks).
inline constexpr const char* kMaxQuantIsaVariable = "MOED_MAX_QUANT_ISA";
// The best path this CPU runs (AVX-512 VNNI needs avx512f/bw/vl/vnni; AVX2 needs avx2/fma/f16c),
// at most the one kMaxQuantIsaVariable names. Read once; a value that names no path is ignored
// with a warning (the daemon refuses it at start).
QuantIsa best_quant_isa();
// The path that runs when `isa` is asked for: `isa`, or the best below it this CPU has.
QuantIsa usable_quant_isa(QuantIsa isa);

// Quantizes x[0..n) (n a multiple of 32) as ggml's x86 builds do: each value times 127 / max|x|,
// rounded to nearest even, never -128; the Q8_0 scale is max|x| / 127 in fp16, the Q8_K one
// 1 / (127 / max|x|). Every ISA's build gives the same blocks.
void quantize_activations(const float* x, std::int64_t n, QuantizedActivations& out,
                          QuantIsa isa = best_quant_isa());
// Formats vec_dot handles: q8_0, q4_0, q4_1, q5_0, q5_1, q2_K, q4_K, q5_K, q6_K, iq4_xs (q2_K
// and iq4_xs on the scalar path whatever the ISA asked).
bool quant_dot_supported(GgmlType type);

// The dot product of one weight row of n elements (in `type`'s blocks) with the activations.
// Throws std::invalid_argument naming the type when unsupported, or when the activations lack
// the blocks the type needs; an ISA the CPU lacks falls back to the best it has.
float vec_dot(GgmlType type, const void* weight_row, const QuantizedActivations& x,
              QuantIsa isa = best_quant_isa());

// y[r] = dot(row r of a rows x cols weight matrix, x) for r in [0, rows): activations quantized
// once, rows spread over the OpenMP threads.
void quant_matvec(GgmlType type, const void* weights, std::int64_t rows, std::int64_t cols,
                  const float* x, float* y, QuantIsa isa = best_quant_isa());

// Quantizes the m rows of x [m, cols] into out[0..m), rows spread over the OpenMP threads.
void quantize_rows(const float* x, std::int64_t m, std::int64_t cols,
                   std::vector<QuantizedActivations>& out);

}  // namespace moed::kernels
